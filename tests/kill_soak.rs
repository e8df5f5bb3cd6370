//! kill -9 soak: a demo-sized run killed 20 times at random moments, each
//! time resumed from another working directory. Every resume must start,
//! and the run must end with the epochs, losses and mAPs of a run that was
//! never interrupted: checkpoints are written only at epoch ends, so a kill
//! costs at most the epoch in flight, which is then retrained exactly.

mod common;

use asl::data::sources::{write_synthetic, SynthConfig};
use common::python::export_model;
use common::training::state;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KILLS: usize = 20;
const EPOCHS: usize = 8;

fn train(dir: &Path, name: &str, cwd: &Path, resume: bool) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_asl"));
    command.current_dir(cwd).args(["train", "--no-progress"]);
    if resume {
        command.arg("--resume").arg(dir.join("runs").join(name));
    } else {
        command.arg("--config").arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/demo.yaml"));
        command.arg("--runs").arg(dir.join("runs"));
        for set in [
            format!("name={name}"),
            format!("model.path={}", dir.join("model/test_resnet.pt").display()),
            format!("data.path={}", dir.join("data").display()),
            format!("train.epochs={EPOCHS}"),
            format!("schedule.scheduled_epochs={EPOCHS}"),
            "data.threads=2".into(),
            "device=cpu".into(),
        ] {
            command.args(["--set", &set]);
        }
    }
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// Losses and mAPs of every finished epoch, bit for bit.
fn figures(run: &Path) -> Vec<(usize, u64, Option<u64>, Option<u64>)> {
    let history = state(run).history;
    history
        .iter()
        .map(|r| (r.epoch, r.train_loss.to_bits(), r.map.map(f64::to_bits), r.map_ema.map(f64::to_bits)))
        .collect()
}

#[test]
fn twenty_kill_9s_and_resumes_from_elsewhere_end_as_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    // The demo's data: 3,000 + 500 synthetic images at 64 px.
    let synth = SynthConfig { train_images: 3000, val_images: 500, ..SynthConfig::default() };
    write_synthetic(&dir.path().join("data"), &synth).unwrap();
    export_model("test_resnet", synth.classes, synth.image_size as usize, &dir.path().join("model/test_resnet.pt"));
    let home = Path::new(env!("CARGO_MANIFEST_DIR"));

    let whole = train(dir.path(), "whole", home, false).output().unwrap();
    assert!(whole.status.success(), "{}", String::from_utf8_lossy(&whole.stderr));

    let run = dir.path().join("runs/killed");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let mut child = train(dir.path(), "killed", home, false).spawn().unwrap();
    // The first kill waits for a checkpoint to resume from; later ones strike at random.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !run.join("checkpoints/last").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut kills, mut working_dirs, mut mid_write) = (0, Vec::new(), 0);
    while kills < KILLS {
        std::thread::sleep(Duration::from_millis(rng.random_range(0..2500)));
        if child.try_wait().unwrap().is_some() {
            break; // it finished before the next kill; its status is checked below
        }
        child.kill().unwrap(); // SIGKILL
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("error:"), "run {kills} failed before it was killed:\n{stderr}");
        kills += 1;
        // Left behind by a kill while a checkpoint was being written.
        mid_write += ["last.tmp", "last.old", "best.tmp", "best.old"]
            .iter()
            .any(|name| run.join("checkpoints").join(name).exists()) as usize;
        let elsewhere = tempfile::tempdir().unwrap();
        child = train(dir.path(), "killed", elsewhere.path(), true).spawn().unwrap();
        working_dirs.push(elsewhere);
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the last resume failed:\n{}", String::from_utf8_lossy(&output.stderr));
    println!("{kills} kills, {mid_write} of them while a checkpoint was being written");
    assert_eq!(kills, KILLS, "the run outpaced the kills");
    let (expected, got) = (figures(&dir.path().join("runs/whole")), figures(&run));
    assert_eq!(got.len(), EPOCHS);
    assert_eq!(got, expected, "the killed run's epochs differ from the uninterrupted run's");
}
