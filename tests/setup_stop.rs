//! A stop requested during set-up, before there is a step to stop after:
//! SIGTERM while the exporter runs or while the index is built ends the
//! run within 10 s with status 75 and leaves nothing behind (the hub
//! download's case is in `hub.rs`). Each signal is raised by a fault at
//! the phase's start (`ASL_FAULT`), not after a sleep.

mod common;

use common::distributed::Watched;
use common::training::Fixture;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path.display().to_string());
        }
    }
    found
}

/// Runs `asl train` on the fixture with `fault` (and `extra` sets); asserts that it stops within 10 s of
/// the fault, with status 75, naming `during`, and leaves no run directory.
fn assert_stops_cleanly(fault: &str, during: &str, extra: &[&str]) {
    let f = Fixture::new();
    let mut command = f.command("setup", extra);
    command.env("ASL_FAULT", fault);
    let child = Watched::spawn(&mut command);
    let struck = child.wait_for_line("fault injected on rank 0", LIMIT);
    let (status, output) = child.finish(LIMIT);
    assert!(struck.elapsed() < Duration::from_secs(10), "took {:?} after the signal: {output}", struck.elapsed());
    assert_eq!(status.code(), Some(75), "{output}");
    assert!(output.contains(&format!("stopped on request during set-up ({during})")), "{output}");
    assert!(!f.runs().join("setup").exists(), "left behind: {:?}", files(&f.runs()));
}

#[test]
fn sigterm_while_the_exporter_runs_stops_within_10_s_leaving_nothing() {
    // model.path null: the run exports model.timm itself, in a child python.
    assert_stops_cleanly("SIGTERM@setup=export", "the model export", &["--set", "model.path=null"]);
}

#[test]
fn sigusr1_while_the_index_is_built_stops_within_10_s_leaving_nothing() {
    assert_stops_cleanly("SIGUSR1@setup=index", "building the index of the data", &[]);
}
