//! The `asl` binary as a user runs it.

mod common;

use std::process::Command;

fn asl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_asl"))
}

#[test]
fn loss_curves_writes_csv_and_png_and_prints_p_star() {
    let out = tempfile::tempdir().unwrap();
    let output = asl().args(["loss-curves", "--points", "99", "--out"]).arg(out.path()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("p* = 0.9"), "{stdout}");
    for name in ["figure2_loss.csv", "figure3_gradient.csv", "figure2_loss.png", "figure3_gradient.png"] {
        let bytes = std::fs::read(out.path().join(name)).unwrap();
        assert!(bytes.len() > 100, "{name} is nearly empty");
        if name.ends_with(".png") {
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name} is not a PNG");
        }
    }
    let gradient = std::fs::read_to_string(out.path().join("figure3_gradient.csv")).unwrap();
    assert_eq!(gradient.lines().count(), 100);
}

#[test]
fn reproduce_needs_at_least_one_seed() {
    let out = tempfile::tempdir().unwrap();
    let output = asl().args(["reproduce", "--seeds", "0", "--out"]).arg(out.path()).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid value '0' for '--seeds <SEEDS>': expected a whole number of at least 1"),
        "{stderr}"
    );
}

#[test]
fn invalid_parameters_fail_with_the_parameter_named() {
    let out = tempfile::tempdir().unwrap();
    let output = asl().args(["loss-curves", "--clip", "1.5", "--out"]).arg(out.path()).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`clip` = 1.5"), "{stderr}");
}

#[test]
fn info_finds_the_venv_libtorch_without_ld_library_path() {
    let output = asl().arg("info").env_remove("LD_LIBRARY_PATH").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| {
        let prefix = format!("{name}: ");
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
            .to_string()
    };
    // The library the rpath resolved to is the pinned wheel's, and CUDA is
    // reported as that same torch sees it.
    let script = "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib', 'libtorch_cpu.so')); print(torch.cuda.is_available())";
    let python = common::python::run_python(&["-c", script]);
    let mut lines = python.lines();
    let expected = std::fs::canonicalize(lines.next().unwrap()).unwrap();
    assert_eq!(std::fs::canonicalize(field("libtorch")).unwrap(), expected);
    assert_eq!(field("CUDA available"), lines.next().unwrap().to_lowercase());
    assert!(field("libtorch threads").parse::<i32>().unwrap() >= 1);
}

#[test]
fn reproduce_writes_a_row_per_adaptive_target_and_figure_9() {
    let out = tempfile::tempdir().unwrap();
    let output = asl()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["reproduce", "--seeds", "1", "--epochs", "2", "--train-images", "96", "--test-images", "32"])
        .args(["--adaptive-targets", "0,0.2", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let table = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    for row in ["| ASL 4/0/0.05 |", "| adaptive ASL Δp→0 |", "| adaptive ASL Δp→0.2 |"] {
        assert!(table.contains(row), "{table}");
    }
    let figure = std::fs::read_to_string(out.path().join("figure9.csv")).unwrap();
    let header = figure.lines().next().unwrap();
    assert_eq!(header, "step,γ− (target 0),γ− (target 0.2),Δp (target 0),Δp (target 0.2)");
    // γ− starts at 4 and moves up for the higher target, down for the lower.
    let last: Vec<f64> = figure.lines().last().unwrap().split(',').map(|v| v.parse().unwrap()).collect();
    assert!(last[1] < 4.0 && last[2] > 4.0, "{last:?}");
    assert_eq!(&std::fs::read(out.path().join("figure9.png")).unwrap()[..4], b"\x89PNG");
}
