//! kill -9 soak: a run of the demo recipe killed 20 times, each time resumed from
//! another working directory. Every kill strikes at a point chosen by a
//! seeded draw (`ASL_FAULT`): after some optimizer step of the epoch in
//! flight, or inside a checkpoint's writing, after any of its parts (the
//! model, the EMA, the moments, the state, the config, the synced
//! directory, the first of the two renames, the published checkpoint).
//! Every resume must start, and the run must end with the epochs, losses
//! and mAPs of a run that was never interrupted: checkpoints are written
//! only at epoch ends, so a kill costs at most the epoch in flight, which
//! is then retrained exactly.

mod common;

use asl::data::sources::{write_synthetic, SynthConfig};
use asl::train::checkpoint::CheckpointPhase;
use common::python::export_model;
use common::training::state;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::{Command, Stdio};

const KILLS: usize = 20;
const EPOCHS: usize = 8;
/// 1,000 images in the demo's batches of 32.
const STEPS_PER_EPOCH: u64 = 32;

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

/// The next kill: after one of the next epoch's steps, or in the first checkpoint this process writes,
/// after one of its phases. Without a checkpoint yet there is nothing to rename, so that phase is not drawn.
fn draw_kill(rng: &mut impl Rng, has_checkpoint: bool) -> String {
    if rng.random_bool(0.5) {
        return format!("SIGKILL@step=+{}", rng.random_range(1..=STEPS_PER_EPOCH));
    }
    let phases: Vec<&str> = CheckpointPhase::NAMES.into_iter().filter(|p| has_checkpoint || *p != "renamed").collect();
    format!("SIGKILL@checkpoint=1:{}", phases[rng.random_range(0..phases.len())])
}

#[test]
fn twenty_kill_9s_at_chosen_points_and_resumes_from_elsewhere_end_as_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    // The demo's synthetic images at 64 px, a third as many.
    let synth = SynthConfig { train_images: 1000, val_images: 200, ..SynthConfig::default() };
    write_synthetic(&dir.path().join("data"), &synth).unwrap();
    export_model("test_resnet", synth.classes, synth.image_size as usize, &dir.path().join("model/test_resnet.pt"));
    let home = Path::new(env!("CARGO_MANIFEST_DIR"));

    let whole = train(dir.path(), "whole", home, false).output().unwrap();
    assert!(whole.status.success(), "{}", String::from_utf8_lossy(&whole.stderr));

    let run = dir.path().join("runs/killed");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let (mut mid_write, mut working_dirs) = (0, Vec::new());
    for kill in 0..KILLS {
        let has_checkpoint =
            run.join("checkpoints/last/state.json").exists() || run.join("checkpoints/last.old/state.json").exists();
        let fault = draw_kill(&mut rng, has_checkpoint);
        let elsewhere = tempfile::tempdir().unwrap();
        let output =
            train(dir.path(), "killed", elsewhere.path(), has_checkpoint).env("ASL_FAULT", &fault).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(output.status.signal(), Some(libc::SIGKILL), "life {kill} ({fault}) was not killed:\n{stderr}");
        assert!(!stderr.contains("error:"), "life {kill} ({fault}) failed before it was killed:\n{stderr}");
        // A kill while a checkpoint was being written (before it was published) leaves a part of it behind.
        let in_the_writing = fault.contains("checkpoint=") && !fault.ends_with("published");
        if in_the_writing {
            mid_write += 1;
            let left = ["last.tmp", "last.old"].iter().any(|name| run.join("checkpoints").join(name).exists());
            assert!(left, "life {kill} ({fault}) left no trace of its writing");
        }
        working_dirs.push(elsewhere);
    }
    let elsewhere = tempfile::tempdir().unwrap();
    let output = train(dir.path(), "killed", elsewhere.path(), true).output().unwrap();
    assert!(output.status.success(), "the last resume failed:\n{}", String::from_utf8_lossy(&output.stderr));
    println!("{KILLS} kills, {mid_write} of them while a checkpoint was being written");
    assert!(mid_write >= 5, "the draw should strike inside checkpoints: {mid_write}");
    let (expected, got) = (figures(&dir.path().join("runs/whole")), figures(&run));
    assert_eq!(got.len(), EPOCHS);
    assert_eq!(got, expected, "the killed run's epochs differ from the uninterrupted run's");
}
