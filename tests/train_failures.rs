//! Runs that meet bad input or diverge: each ends with an error that names
//! the cause, or goes on and says what it left out, and never loses the
//! last good checkpoint.

mod common;

use common::python::run_python;
use common::training::{state, text, Fixture};

#[test]
fn unreadable_validation_images_are_reported_and_counted() {
    let f = Fixture::new();
    let val = f.dir.path().join("data/val");
    let mut images: Vec<_> = std::fs::read_dir(&val).unwrap().map(|e| e.unwrap().path()).collect();
    images.sort();
    std::fs::write(&images[0], b"not an image").unwrap();
    let output = f.run("skips", &["--set", "train.epochs=1"]);
    assert!(output.status.success(), "{}", text(&output));
    let message = text(&output);
    let line = format!("warning: skipped {} during validation", images[0].display());
    assert_eq!(message.matches(&line).count(), 1, "reported once, not again for the EMA:\n{message}");
    let record = &state(&f.runs().join("skips")).history[0];
    assert_eq!((record.skipped_val, record.skipped_train), (1, 0));
    let script = format!(
        "from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
         acc = EventAccumulator('{}'); acc.Reload()\n\
         print([e.value for e in acc.Scalars('data/skipped_val')])",
        f.runs().join("skips/tensorboard").display()
    );
    assert_eq!(run_python(&["-c", &script]).trim(), "[1.0]");
}

#[test]
fn a_schedule_whose_warm_up_is_one_step_is_refused_at_start() {
    let f = Fixture::new();
    let schedule =
        ["--set", "train.max_steps_per_epoch=1", "--set", "schedule.scheduled_epochs=5", "--set", "train.epochs=5"];
    let output = f.run("warmup", &schedule);
    assert!(!output.status.success());
    let message = text(&output);
    assert!(message.contains("config key `schedule.pct_start`: the warm-up must span more than one step"), "{message}");
    assert!(message.contains("0.2 × 5 = 1"), "{message}");
    assert!(!f.runs().join("warmup/checkpoints").exists());
}

#[test]
fn a_diverged_amp_run_skips_steps_then_stops_and_keeps_the_last_checkpoint() {
    let f = Fixture::new();
    let first = f.run("diverge", &["--set", "train.epochs=1", "--set", "train.amp=on"]);
    assert!(first.status.success(), "{}", text(&first));
    let run = f.runs().join("diverge");
    let before = std::fs::read(run.join("checkpoints/last/model.pt")).unwrap();
    let blown = f.run(
        "diverge",
        &[
            "--resume",
            run.to_str().unwrap(),
            "--set",
            "train.epochs=2",
            "--set",
            "schedule.max_lr=1e30",
            "--set",
            "train.grad_accumulation=2",
            "--set",
            "train.max_skipped_steps=2",
        ],
    );
    assert!(!blown.status.success());
    let message = text(&blown);
    assert!(
        message.contains("training diverged: the grad scaler skipped 2 optimizer steps in a row")
            && message.contains("epoch 2"),
        "{message}"
    );
    assert!(message.contains("The last good checkpoint is kept at"), "{message}");
    assert_eq!(std::fs::read(run.join("checkpoints/last/model.pt")).unwrap(), before);
    let script = format!(
        "from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
         acc = EventAccumulator('{}'); acc.Reload()\n\
         print(max(e.value for e in acc.Scalars('train/skipped_steps')))",
        run.join("tensorboard").display()
    );
    assert_eq!(run_python(&["-c", &script]).trim(), "2.0");
}
