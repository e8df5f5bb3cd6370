//! `asl train` end to end on a small synthetic set: exact resume, a NaN
//! that stops the run without losing the checkpoint, Ctrl-C, and the
//! TensorBoard events read back by TensorBoard itself.

mod common;

use asl::data::{DataConfig, Split};
use asl::train::{prepare, Observer, Outcome, RunOptions, TrainConfig, TrainEvent};
use common::python::run_python;
use common::training::{epoch_line, state, text, Fixture};
use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn resumed_run_matches_an_unstopped_run_exactly() {
    let f = Fixture::new();
    let schedule = ["--set", "train.epochs=2", "--set", "schedule.scheduled_epochs=3"];
    let full = f.run("full", &schedule);
    assert!(full.status.success(), "{}", text(&full));

    let first = f.run("split", &["--set", "train.epochs=1", "--set", "schedule.scheduled_epochs=3"]);
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(state(&f.runs().join("split")).epoch, 1);
    let resumed = f.run("split", &["--resume", f.runs().join("split").to_str().unwrap(), "--set", "train.epochs=2"]);
    assert!(resumed.status.success(), "{}", text(&resumed));

    assert_eq!(epoch_line(&first, 1), epoch_line(&full, 1));
    assert_eq!(epoch_line(&resumed, 2), epoch_line(&full, 2), "epoch 2 after resume must print the same figures");
    let (a, b) = (state(&f.runs().join("full")), state(&f.runs().join("split")));
    assert_eq!(a.history[1].train_loss.to_bits(), b.history[1].train_loss.to_bits());
    assert_eq!(a.history[1].map, b.history[1].map);
    assert!(f.runs().join("full/checkpoints/best/model.pt").is_file());

    // The event file, read back by TensorBoard's own reader.
    let events = f.runs().join("full/tensorboard");
    let script = format!(
        "from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
         acc = EventAccumulator('{}'); acc.Reload(); tags = acc.Tags()['scalars']\n\
         for t in ['asl/delta_p', 'asl/gamma_neg', 'asl/p_t_pos', 'train/loss', 'val/mAP', 'val/mAP_ema', 'val/CF1', 'speed/data_wait_fraction']:\n\
         \x20   values = [e.value for e in acc.Scalars(t)]\n\
         \x20   assert values and all(v == v for v in values), t\n\
         print(len(acc.Scalars('asl/delta_p')), acc.Scalars('asl/gamma_neg')[0].value, sorted(acc.Tags()['histograms']))",
        events.display()
    );
    let report = run_python(&["-c", &script]);
    assert!(report.contains("4.0") && report.contains("val/p_positive"), "{report}");
}

#[test]
fn nan_loss_stops_with_the_step_named_and_keeps_the_last_checkpoint() {
    let f = Fixture::new();
    let first = f.run("nan", &["--set", "train.epochs=1"]);
    assert!(first.status.success(), "{}", text(&first));
    let before = std::fs::read(f.runs().join("nan/checkpoints/last/model.pt")).unwrap();
    let run = f.runs().join("nan");
    let blown =
        f.run("nan", &["--resume", run.to_str().unwrap(), "--set", "train.epochs=2", "--set", "schedule.max_lr=1e30"]);
    assert!(!blown.status.success());
    let message = text(&blown);
    assert!(message.contains("error: the loss became") && message.contains("by epoch 2, batch"), "{message}");
    assert!(message.contains("The last good checkpoint is kept at"), "{message}");
    assert_eq!(std::fs::read(run.join("checkpoints/last/model.pt")).unwrap(), before);
    assert_eq!(state(&run).epoch, 1);
}

#[test]
fn ctrl_c_writes_a_checkpoint_mid_epoch_and_exits_to_be_continued() {
    let f = Fixture::new();
    // 96 images in batches of 16: 6 steps an epoch. Ctrl-C at step 8, two batches into epoch 2.
    let output = f
        .command("interrupted", &["--set", "train.epochs=10", "--set", "schedule.scheduled_epochs=10"])
        .env("ASL_FAULT", "SIGINT@step=8")
        .output()
        .unwrap();
    // EX_TEMPFAIL: stopped on request with its checkpoint written, to be continued.
    assert_eq!(output.status.code(), Some(75), "{}", text(&output));
    assert!(text(&output).contains("Continue with: asl train --resume"), "{}", text(&output));
    let saved = state(&f.runs().join("interrupted"));
    assert_eq!((saved.optimizer_step, saved.epoch, saved.batch_in_epoch), (8, 1, 2), "{saved:?}");
}

/// Writes `<split>.csv` beside the fixture's images: each image with one label, its first positive,
/// keeping only the images whose label is in `classes` when given. Returns the list and its labels.
fn single_label_list(
    f: &Fixture,
    split: Split,
    classes: Option<&BTreeSet<String>>,
) -> (std::path::PathBuf, BTreeSet<String>) {
    let root = f.dir.path().join("data");
    let data = DataConfig { path: Some(root.clone()), ..DataConfig::default() };
    let dataset = data.load_split(split).unwrap();
    let (mut csv, mut seen) = (String::from("path,labels\n"), BTreeSet::new());
    for i in 0..dataset.len() {
        let first = dataset.labels().positives(i).next().expect("every synthetic image shows a shape");
        let label = dataset.class_names[first as usize].replace(' ', "_");
        if classes.is_some_and(|c| !c.contains(&label)) {
            continue;
        }
        let path = dataset.path(i);
        csv += &format!("{},{label}\n", path.strip_prefix(&root).unwrap().display());
        seen.insert(label);
    }
    let list = root.join(format!("{split:?}.csv").to_lowercase());
    std::fs::write(&list, csv).unwrap();
    (list, seen)
}

#[test]
fn single_label_runs_report_top1_top5_and_macro_f1_and_keep_the_best_by_top1() {
    let f = Fixture::new();
    let (train, classes) = single_label_list(&f, Split::Train, None);
    let (val, _) = single_label_list(&f, Split::Val, Some(&classes));
    let sets = [
        "loss={kind: single_label}".to_string(),
        "data.source=list".into(),
        format!("data.path={}", train.display()),
        format!("data.val_path={}", val.display()),
        "train.epochs=3".into(),
        "schedule.scheduled_epochs=3".into(),
    ];
    let args: Vec<String> = sets.iter().flat_map(|s| ["--set".to_string(), s.clone()]).collect();
    let output = f.run("single-label", &args.iter().map(String::as_str).collect::<Vec<_>>());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", text(&output));
    let line = epoch_line(&output, 1);
    assert!(line.contains("top-1 ") && line.contains("top-1(EMA)") && line.contains("top-5 "), "{line}");
    assert!(line.contains("macro-F1") && !line.contains("mAP"), "{line}");
    assert!(stdout.contains("best top-1 "), "{stdout}");
    let run = f.runs().join("single-label");
    let saved = state(&run);
    let headline = |r: &asl::train::checkpoint::EpochRecord| r.headline().unwrap();
    // The first epoch to reach the highest top-1 is kept: a later tie is no improvement.
    let top = saved.history.iter().map(headline).fold(f64::NEG_INFINITY, f64::max);
    let best = saved.history.iter().find(|r| headline(r) == top).unwrap();
    assert_eq!((saved.best_epoch, saved.best_map), (Some(best.epoch), Some(headline(best))), "best by top-1");
    for record in &saved.history {
        let single = record.single_label.unwrap();
        assert!(single.top1 <= single.top5 && (0.0..=100.0).contains(&single.macro_f1), "{record:?}");
    }
    // TensorBoard has them, per epoch.
    let script = format!(
        "from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
         acc = EventAccumulator('{}'); acc.Reload()\n\
         print(' '.join(f'{{t}}={{len(acc.Scalars(t))}}' for t in ['val/top1', 'val/top1_ema', 'val/top5', 'val/macro_F1']))",
        run.join("tensorboard").display()
    );
    assert_eq!(run_python(&["-c", &script]).trim(), "val/top1=3 val/top1_ema=3 val/top5=3 val/macro_F1=3");
    // `asl validate` of the checkpoint reports them too, without being told the run was single-label.
    let validated = std::process::Command::new(env!("CARGO_BIN_EXE_asl"))
        .args(["validate", "--device", "cpu", "--model"])
        .arg(run.join("checkpoints/last"))
        .arg("--data")
        .arg(&val)
        .output()
        .unwrap();
    assert!(validated.status.success(), "{}", text(&validated));
    let report = String::from_utf8_lossy(&validated.stdout);
    let last = saved.history.last().unwrap().single_label.unwrap();
    assert!(
        report.contains(&format!("top-1 {:.2}  top-5 {:.2}  macro-F1 {:.2}", last.top1, last.top5, last.macro_f1)),
        "{report}"
    );
    assert!(report.contains("data: source list (the checkpoint's"), "{report}");
    // The validation list holds fewer classes than training saw: it is read in the model's class order,
    // and data whose classes are not the model's is refused, naming the first that differs.
    let elsewhere = std::process::Command::new(env!("CARGO_BIN_EXE_asl"))
        .args(["validate", "--device", "cpu", "--source", "coco", "--model"])
        .arg(run.join("checkpoints/last"))
        .arg("--data")
        .arg(f.dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!elsewhere.status.success());
    let first = classes.iter().next().unwrap();
    assert!(
        text(&elsewhere).contains(&format!("first differ at class 0 ({first:?} in the model, ")),
        "{}",
        text(&elsewhere)
    );
}

#[test]
fn an_existing_run_is_never_overwritten() {
    let f = Fixture::new();
    assert!(f.run("twice", &["--set", "train.epochs=1"]).status.success());
    let again = f.run("twice", &["--set", "train.epochs=1"]);
    assert!(!again.status.success());
    assert!(text(&again).contains("already holds checkpoints; continue it with --resume"), "{}", text(&again));
}

#[test]
fn single_label_loss_refuses_multi_label_data() {
    let f = Fixture::new();
    let run = f.run("single", &["--set", "loss={kind: single_label}"]);
    assert!(!run.status.success());
    let message = text(&run);
    assert!(message.contains("single-label training needs exactly one positive per image;"), "{message}");
}

/// Counts the events of a run by kind.
#[derive(Default)]
struct Recorder {
    counts: std::collections::BTreeMap<&'static str, usize>,
    validated_images: usize,
    steps: Vec<usize>,
    checkpoints: Vec<String>,
}

impl Observer for Recorder {
    fn on_event(&mut self, event: &TrainEvent<'_>) {
        let kind = match event {
            TrainEvent::Notice(_) => "notice",
            TrainEvent::Warning(_) => "warning",
            TrainEvent::EpochStarted { .. } => "epoch started",
            TrainEvent::BatchTrained => "batch",
            TrainEvent::Step(log) => {
                self.steps.push(log.step);
                "step"
            }
            TrainEvent::ImageSkipped { .. } => "skipped",
            TrainEvent::ValidationStarted { .. } => "validation started",
            TrainEvent::ValidationProgress { images } => {
                self.validated_images += images;
                "validation progress"
            }
            TrainEvent::EpochFinished { .. } => "epoch finished",
            TrainEvent::CheckpointWritten { name, .. } => {
                self.checkpoints.push(name.to_string());
                "checkpoint"
            }
        };
        *self.counts.entry(kind).or_default() += 1;
    }
}

#[test]
fn the_library_reports_a_run_to_its_observer_and_runs_without_one() {
    let f = Fixture::new();
    let sets = f.library_sets(&["data.val_batch_size=16", "train.log_every=4"]);
    let config = TrainConfig::load(Path::new("configs/demo.yaml"), &sets).unwrap();
    let mut recorder = Recorder::default();
    let options = RunOptions { run_dir: f.runs().join("observed"), ..RunOptions::default() };
    let mut trainer = prepare(config.clone(), options, &mut recorder).unwrap();
    assert!(matches!(trainer.run(&mut recorder).unwrap(), Outcome::Finished { .. }));
    // 96 training images in batches of 16: 6 batches and steps per epoch; 32 validation images,
    // scored for the model and its EMA in 2 batches each.
    let counts = &recorder.counts;
    let count = |kind: &str| counts.get(kind).copied().unwrap_or(0);
    // The notices: the data, and the launch's plan.
    assert_eq!((count("notice"), count("epoch started"), count("batch")), (2, 2, 12), "{counts:?}");
    assert_eq!(recorder.steps, [4, 8, 12]);
    assert_eq!((count("validation started"), count("validation progress"), recorder.validated_images), (4, 8, 128));
    assert_eq!(count("epoch finished"), 2);
    assert_eq!(&recorder.checkpoints[..2], ["last", "best"], "{:?}", recorder.checkpoints);
    assert!(!f.runs().join("observed/tensorboard").exists(), "the library wrote TensorBoard files itself");

    let options = RunOptions { run_dir: f.runs().join("unobserved"), ..RunOptions::default() };
    let mut quiet = prepare(config, options, &mut ()).unwrap();
    quiet.run(&mut ()).unwrap();
    let figures = |run: &str| -> Vec<_> {
        state(&f.runs().join(run)).history.iter().map(|r| (r.train_loss.to_bits(), r.map, r.map_ema)).collect()
    };
    assert_eq!(figures("unobserved"), figures("observed"));
}

#[test]
fn a_training_step_reads_nothing_back_from_the_device() {
    let f = Fixture::new();
    let sets = |adaptive: bool| {
        let mut extra = vec!["train.log_every=1000", "train.amp=on", "optimizer.grad_clip_norm=5.0"];
        if adaptive {
            extra.push("loss.adaptive={target_delta: 0.1}");
        }
        f.library_sets(&extra)
    };
    for adaptive in [false, true] {
        let config = TrainConfig::load(Path::new("configs/demo.yaml"), &sets(adaptive)).unwrap();
        let name = if adaptive { "adaptive" } else { "fixed" };
        let options = RunOptions { run_dir: f.runs().join(name), ..RunOptions::default() };
        let mut trainer = prepare(config, options, &mut ()).unwrap();
        trainer.run(&mut ()).unwrap();
        // 96 images in batches of 16: 12 steps over 2 epochs, with AMP's scaler and clipping on.
        // Reads: one at each epoch's end and one for each checkpoint; adaptive γ− adds one per step.
        let steps = trainer.state().optimizer_step as u64;
        assert_eq!(steps, 12);
        let expected = 2 * 2 + if adaptive { steps } else { 0 };
        assert_eq!(trainer.host_reads(), expected, "adaptive: {adaptive}");
    }
}
