//! Resuming and keeping checkpoints: into the right run from any
//! directory, with moved data, never with a half-written or doubly written
//! checkpoint, and never by two processes at once.

mod common;

use asl::data::sources::{write_synthetic, SynthConfig};
use common::training::{state, text, Fixture};
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

#[test]
fn resume_from_another_directory_writes_into_the_resumed_run() {
    let f = Fixture::new();
    assert!(f.run("a", &["--set", "train.epochs=1", "--set", "schedule.scheduled_epochs=2"]).status.success());
    let elsewhere = tempfile::tempdir().unwrap();
    let run = f.runs().join("a");
    let resumed = f
        .command("a", &["--resume", run.to_str().unwrap(), "--set", "train.epochs=2"])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert_eq!(state(&run).epoch, 2, "the resumed run's own checkpoint moves on");
    assert!(!elsewhere.path().join("runs").exists(), "nothing is written beside the working directory");
}

#[test]
fn resume_follows_moved_data_and_refuses_another_config() {
    let f = Fixture::new();
    assert!(f.run("moved", &["--set", "train.epochs=1", "--set", "schedule.scheduled_epochs=2"]).status.success());
    let moved = f.dir.path().join("moved-data");
    std::fs::rename(f.dir.path().join("data"), &moved).unwrap();
    let run = f.runs().join("moved");
    let resume = ["--resume", run.to_str().unwrap(), "--set", "train.epochs=2"];
    let stale = f.run("moved", &resume);
    assert!(!stale.status.success() && text(&stale).contains("data"), "{}", text(&stale));
    let resumed = f.run("moved", &[&resume[..], &["--data", moved.to_str().unwrap()]].concat());
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert_eq!(state(&run).epoch, 2);

    let with_config = f.run("moved", &[&resume[..], &["--config", "configs/demo.yaml"]].concat());
    assert!(!with_config.status.success());
    assert!(text(&with_config).contains("cannot be combined with --resume"), "{}", text(&with_config));
}

#[test]
fn a_mid_epoch_resume_refuses_a_new_batch_layout_or_new_data_naming_what_changed() {
    let f = Fixture::new();
    // 96 images in batches of 16: 6 steps an epoch. Ctrl-C at step 8 stops after it, two batches into epoch 2.
    let stopped = f
        .command("mid", &["--set", "train.epochs=3", "--set", "schedule.scheduled_epochs=3"])
        .env("ASL_FAULT", "SIGINT@step=8")
        .output()
        .unwrap();
    assert_eq!(stopped.status.code(), Some(75), "{}", text(&stopped));
    let run = f.runs().join("mid");
    let checkpoint = run.join("checkpoints/last");
    assert_eq!((state(&run).epoch, state(&run).batch_in_epoch), (1, 2));
    for key in ["data.batch_size=8", "train.grad_accumulation=2", "train.max_steps_per_epoch=3"] {
        let refused = f.run("mid", &["--resume", run.to_str().unwrap(), "--set", key]);
        let message = text(&refused);
        let name = key.split('=').next().unwrap();
        assert!(!refused.status.success() && message.contains(&format!("cannot change {name} from")), "{message}");
        assert!(message.contains(&format!("resuming checkpoint {}", checkpoint.display())), "{message}");
        assert!(message.contains("in the middle of epoch 2 (after batch 2)"), "{message}");
    }
    // The same images under another list, and fewer images: both would re-lay the rest of the epoch.
    let moved = f.dir.path().join("other-data");
    let fewer = SynthConfig { train_images: 90, val_images: 32, image_size: 32, classes: 12, ..Default::default() };
    write_synthetic(&moved, &fewer).unwrap();
    let refused = f.run("mid", &["--resume", run.to_str().unwrap(), "--data", moved.to_str().unwrap()]);
    let message = text(&refused);
    assert!(!refused.status.success(), "{message}");
    assert!(
        message.contains(&format!("the training data changed since checkpoint {}", checkpoint.display()))
            && message.contains("in the middle of epoch 2 (after batch 2): 96 samples there, 90 here"),
        "{message}"
    );
    let resumed = f.run("mid", &["--resume", run.to_str().unwrap()]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    // At the end of an epoch new data is only noted: the next epoch is laid out afresh.
    let again = f
        .run("mid", &["--resume", run.to_str().unwrap(), "--data", moved.to_str().unwrap(), "--set", "train.epochs=3"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("the training data changed since checkpoint"), "{}", text(&again));
}

#[test]
fn a_crash_between_the_two_renames_resumes_from_last_old() {
    let f = Fixture::new();
    assert!(f.run("crash", &["--set", "train.epochs=1", "--set", "schedule.scheduled_epochs=2"]).status.success());
    // What a kill between `last -> last.old` and `last.tmp -> last` leaves behind.
    let checkpoints = f.runs().join("crash/checkpoints");
    std::fs::rename(checkpoints.join("last"), checkpoints.join("last.old")).unwrap();
    std::fs::create_dir(checkpoints.join("last.tmp")).unwrap();
    std::fs::write(checkpoints.join("last.tmp/model.pt"), b"half").unwrap();
    let run = f.runs().join("crash");
    let resumed = f.run("crash", &["--resume", run.to_str().unwrap(), "--set", "train.epochs=2"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert_eq!(state(&run).epoch, 2);
    assert!(!checkpoints.join("last.old").exists() && !checkpoints.join("last.tmp").exists());
}

#[test]
fn a_second_trainer_on_a_running_run_is_refused_naming_the_first() {
    let f = Fixture::new();
    let mut first = f
        .command("busy", &["--set", "train.epochs=20", "--set", "schedule.scheduled_epochs=20"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let checkpoint = f.runs().join("busy/checkpoints/last");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !checkpoint.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let run = f.runs().join("busy");
    let second = f.run("busy", &["--resume", run.to_str().unwrap()]);
    first.kill().unwrap();
    first.wait().unwrap();
    let message = text(&second);
    assert!(!second.status.success(), "{message}");
    assert!(message.contains(&format!("is in use by process {}", first.id())), "{message}");
    // The lock dies with its process: the run resumes now.
    let resumed = f.run("busy", &["--resume", run.to_str().unwrap(), "--set", "train.epochs=2"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
}

#[test]
fn best_shares_the_files_of_last_instead_of_writing_them_again() {
    let f = Fixture::new();
    assert!(f.run("linked", &["--set", "train.epochs=1"]).status.success());
    let checkpoints = f.runs().join("linked/checkpoints");
    for file in ["model.pt", "ema.pt", "optimizer.ot", "state.json", "config.yaml"] {
        let last = std::fs::metadata(checkpoints.join("last").join(file)).unwrap();
        let best = std::fs::metadata(checkpoints.join("best").join(file)).unwrap();
        assert_eq!((last.dev(), last.ino()), (best.dev(), best.ino()), "{file} was written twice");
    }
}

#[test]
#[cfg_attr(not(asl_strace), ignore = "needs strace, not on PATH when this was built (.ci/run installs it)")]
fn checkpoint_files_and_directories_are_fsynced_around_the_renames() {
    let f = Fixture::new();
    let command = f.command("synced", &["--set", "train.epochs=1"]);
    let program = command.get_program().to_owned();
    let trace = f.dir.path().join("trace.txt");
    let mut traced = std::process::Command::new("strace");
    traced.args(["-f", "-y", "-qq", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2", "-o"]);
    traced.arg(&trace).arg(program).args(command.get_args()).current_dir(env!("CARGO_MANIFEST_DIR"));
    let output = traced.output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let calls = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    let position = |needle: &str| lines.iter().position(|l| l.contains(needle));
    // The swap of `last`: its temporary directory renamed into place.
    let publish = lines
        .iter()
        .position(|l| l.contains("rename") && l.contains("checkpoints/last.tmp\"") && l.contains("checkpoints/last\""))
        .unwrap_or_else(|| panic!("no rename of last.tmp to last in:\n{calls}"));
    for file in ["model.pt", "ema.pt", "optimizer.ot", "state.json", "config.yaml"] {
        // Under its own name, or under the temporary name it is written to before its own rename.
        let names = [format!("last.tmp/{file}>"), format!("last.tmp/.{file}.")];
        let synced = lines[..publish].iter().any(|l| l.contains("fsync(") && names.iter().any(|n| l.contains(n)));
        assert!(synced, "{file} is not fsynced before last.tmp is renamed:\n{calls}");
    }
    let tmp_dir_synced =
        lines[..publish].iter().any(|l| l.contains("fsync(") && l.ends_with("checkpoints/last.tmp>) = 0"));
    assert!(tmp_dir_synced, "last.tmp itself is not fsynced before its rename:\n{calls}");
    let parent_synced = lines[publish..].iter().any(|l| l.contains("fsync(") && l.contains("checkpoints>) = 0"));
    assert!(parent_synced, "the checkpoints directory is not fsynced after the rename:\n{calls}");
    assert!(position("best.tmp").is_some(), "best is published the same way");
}

#[test]
fn a_missing_or_garbage_checkpoint_and_an_unwritable_run_directory_are_named() {
    let f = Fixture::new();
    let nowhere = f.dir.path().join("no-such-run");
    let missing = f.run("x", &["--resume", nowhere.to_str().unwrap()]);
    let message = text(&missing);
    assert!(
        !missing.status.success() && message.contains("no-such-run") && message.contains("no state.json"),
        "{message}"
    );

    assert!(f.run("garbage", &["--set", "train.epochs=1"]).status.success());
    let state_file = f.runs().join("garbage/checkpoints/last/state.json");
    std::fs::write(&state_file, b"{\"epoch\": \"one\"").unwrap();
    let garbage = f.run("garbage", &["--resume", f.runs().join("garbage").to_str().unwrap()]);
    let message = text(&garbage);
    assert!(!garbage.status.success() && message.contains("last/state.json"), "{message}");

    // /proc takes no new directories, even from root.
    let data = format!("data.path={}", f.dir.path().join("data").display());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_asl"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["train", "--config", "configs/demo.yaml", "--runs", "/proc/asl-runs", "--set", "name=x", "--set", &data])
        .args(["--set", "device=cpu"])
        .output()
        .unwrap();
    let message = text(&output);
    assert!(!output.status.success() && message.contains("cannot write /proc/asl-runs/x"), "{message}");
}
