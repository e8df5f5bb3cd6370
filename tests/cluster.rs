//! Runs that survive a cluster, on CPU over Gloo: preemption by SIGTERM
//! and torchrun's elastic restart of a killed rank, both ending bit for bit
//! where an uninterrupted run ends; a rank that hangs alive, named within
//! the heartbeat timeout; one export per node; only buffers broadcast per
//! step under a frozen backbone; no stride warnings from the Reducer; and
//! checkpoints readable by the group under umask 022.

mod common;

use asl::model::Network;
use asl::train::{prepare, RunOptions, TrainConfig};
use common::distributed::{as_rank, free_port, run_ranks, wait_all};
use common::python::python;
use common::training::{state, text, Fixture};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tch::{Device, Tensor};

const LIMIT: Duration = Duration::from_secs(300);
const EPOCHS: usize = 3;

/// 384 training images in global batches of 16: 24 steps an epoch, long
/// enough for a signal to land in the middle of one.
struct Cluster {
    fixture: Fixture,
}

impl Cluster {
    fn new() -> Self {
        Self { fixture: Fixture::with_images(384, 32) }
    }

    fn runs(&self) -> PathBuf {
        self.fixture.runs()
    }

    fn dir(&self) -> &Path {
        self.fixture.dir.path()
    }

    /// `asl train` arguments for run `name`: always --auto-resume, so that one command line starts it,
    /// continues it after a preemption and is what torchrun restarts.
    fn train_args(&self, name: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> =
            ["train", "--config", "configs/demo.yaml", "--no-progress", "--auto-resume"].map(String::from).to_vec();
        args.extend(["--runs".into(), self.runs().display().to_string()]);
        let run =
            [format!("train.epochs={EPOCHS}"), format!("schedule.scheduled_epochs={EPOCHS}"), "data.threads=1".into()];
        let sets = self.fixture.sets(name).into_iter().chain(run).chain(extra.iter().map(|s| s.to_string()));
        for set in sets {
            args.extend(["--set".into(), set]);
        }
        args
    }

    /// torchrun with 2 workers on this machine, restarting them up to `restarts` times.
    fn torchrun(&self, name: &str, restarts: u32) -> Command {
        let mut command = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/torchrun"));
        command.current_dir(env!("CARGO_MANIFEST_DIR")).env("OMP_NUM_THREADS", "1");
        command.args(["--standalone", "--nproc-per-node=2", &format!("--max-restarts={restarts}"), "--no-python"]);
        command.arg(env!("CARGO_BIN_EXE_asl")).args(self.train_args(name, &[]));
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        command
    }

    /// Waits until run `name` has written its first checkpoint, then a little more, into the next epoch.
    fn wait_for_the_first_checkpoint(&self, name: &str) {
        let last = self.runs().join(name).join("checkpoints/last/state.json");
        let deadline = Instant::now() + LIMIT;
        while !last.exists() {
            assert!(Instant::now() < deadline, "no checkpoint in {LIMIT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    fn final_model(&self, name: &str) -> PathBuf {
        self.runs().join(name).join("checkpoints/last")
    }
}

fn finish(child: Child) -> Output {
    wait_all(vec![child], LIMIT).pop().unwrap()
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: sends a signal to a process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0, "kill({pid}, {signal})");
}

/// The worker of `torchrun` (a direct child) whose RANK is `rank`.
fn worker(torchrun: u32, rank: usize) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{torchrun}/task/{torchrun}/children")).unwrap();
    children
        .split_whitespace()
        .map(|pid| pid.parse::<u32>().unwrap())
        .find(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            environ.split(|&b| b == 0).any(|v| v == format!("RANK={rank}").as_bytes())
        })
        .unwrap_or_else(|| panic!("no worker of rank {rank} under torchrun {torchrun}: {children}"))
}

fn assert_same_bits(a: &Path, b: &Path) {
    for file in ["model.pt", "ema.pt"] {
        let load = |dir: &Path| Network::load(&dir.join(file), Device::Cpu).unwrap().named_tensors().unwrap();
        for ((name, x), (_, y)) in load(a).iter().zip(load(b)) {
            assert!(x.equal(&y), "{file}: {name} differs between {} and {}", a.display(), b.display());
        }
    }
    let moments = |dir: &Path| Tensor::load_multi(dir.join("optimizer.ot")).unwrap();
    for ((name, x), (_, y)) in moments(a).iter().zip(moments(b)) {
        assert!(x.equal(&y), "optimizer {name} differs");
    }
}

#[test]
fn preempted_and_restarted_runs_end_bit_for_bit_where_an_uninterrupted_one_ends() {
    let c = Cluster::new();
    let reference = finish(c.torchrun("reference", 0).spawn().unwrap());
    assert!(reference.status.success(), "{}", text(&reference));
    assert_eq!(state(&c.runs().join("reference")).history.len(), EPOCHS);

    // SIGTERM to torchrun, as Slurm preempts a job: it passes the signal to the workers, which agree on a
    // step, checkpoint it and exit; the same command then continues the run.
    let child = c.torchrun("preempted", 0).spawn().unwrap();
    c.wait_for_the_first_checkpoint("preempted");
    signal(child.id(), libc::SIGTERM);
    let stopped = finish(child);
    assert!(text(&stopped).contains("stopped on request"), "{}", text(&stopped));
    let at_stop = state(&c.runs().join("preempted"));
    assert!(at_stop.epoch < EPOCHS, "the run finished before the signal: {at_stop:?}");
    eprintln!("preempted at epoch {} batch {}", at_stop.epoch + 1, at_stop.batch_in_epoch);
    let resumed = finish(c.torchrun("preempted", 0).spawn().unwrap());
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert_same_bits(&c.final_model("reference"), &c.final_model("preempted"));

    // Rank 1 killed outright: torchrun restarts both workers, which continue from the last checkpoint
    // (TORCHELASTIC_RESTART_COUNT > 0 resumes without any flag).
    let child = c.torchrun("elastic", 1).spawn().unwrap();
    c.wait_for_the_first_checkpoint("elastic");
    signal(worker(child.id(), 1), libc::SIGKILL);
    let restarted = finish(child);
    assert!(restarted.status.success(), "{}", text(&restarted));
    // torchrun's own account of the failure it restarted from.
    assert!(text(&restarted).contains("failed (exitcode: -9) local_rank: 1"), "{}", text(&restarted));
    assert_eq!(state(&c.runs().join("elastic")).history.len(), EPOCHS);
    assert_same_bits(&c.final_model("reference"), &c.final_model("elastic"));
}

#[test]
fn a_rank_that_hangs_alive_is_named_within_the_heartbeat_timeout() {
    let c = Cluster::new();
    let port = free_port();
    let heartbeat = Duration::from_secs(5);
    let extra = ["train.epochs=50", "schedule.scheduled_epochs=50", "distributed.heartbeat_timeout_s=5"];
    let children: Vec<Child> = (0..2)
        .map(|rank| {
            let mut command = Command::new(env!("CARGO_BIN_EXE_asl"));
            command.current_dir(env!("CARGO_MANIFEST_DIR")).args(c.train_args("hung", &extra));
            as_rank(&mut command, rank, 2, port);
            command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    c.wait_for_the_first_checkpoint("hung");
    // SIGSTOP: the process and its heartbeat stop, its sockets stay open, so no collective fails.
    signal(children[1].id(), libc::SIGSTOP);
    let stopped_at = Instant::now();
    let mut children = children.into_iter();
    let (rank0, rank1) = (children.next().unwrap(), children.next().unwrap());
    let rank1_pid = rank1.id();
    let output = finish(rank0);
    let elapsed = stopped_at.elapsed();
    signal(rank1_pid, libc::SIGKILL);
    drop(finish(rank1));
    let message = text(&output);
    assert!(!output.status.success(), "{message}");
    assert!(message.contains("rank 0: error: lost rank 1") && message.contains("heartbeat stopped"), "{message}");
    // The heartbeat timeout, plus its 250 ms polls and the last beat's age.
    assert!(elapsed < heartbeat + Duration::from_secs(2), "rank 0 took {elapsed:?}: {message}");
}

/// A python that logs its arguments before running the project's.
fn logging_python(dir: &Path) -> (PathBuf, PathBuf) {
    let (wrapper, log) = (dir.join("python"), dir.join("python.log"));
    let script = format!("#!/bin/sh\necho \"$@\" >> '{}'\nexec '{}' \"$@\"\n", log.display(), python().display());
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (wrapper, log)
}

#[test]
fn two_ranks_of_one_node_export_once_and_the_reducer_warns_of_no_strides() {
    let c = Cluster::new();
    let (wrapper, log) = logging_python(c.dir());
    // model.path null: the run exports model.timm itself.
    let extra = ["model.path=null", "train.epochs=1", "train.max_steps_per_epoch=3"];
    let outputs = run_ranks(2, LIMIT, |_| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_asl"));
        command.current_dir(env!("CARGO_MANIFEST_DIR")).args(c.train_args("once", &extra));
        command.env("ASL_PYTHON", &wrapper);
        command
    });
    for (rank, output) in outputs.iter().enumerate() {
        assert!(output.status.success(), "rank {rank}: {}", text(output));
        // 1x1 kernels held channels-last with the canonical strides: gradients land in their buckets as views.
        assert!(!text(output).to_lowercase().contains("grad strides do not match"), "rank {rank}: {}", text(output));
    }
    let exports = std::fs::read_to_string(&log).unwrap().lines().filter(|l| l.contains("export.py")).count();
    assert_eq!(exports, 1, "{}", std::fs::read_to_string(&log).unwrap());
}

#[test]
fn two_nodes_of_one_rank_each_export_on_each_and_train_together() {
    let c = Cluster::new();
    let (wrapper, log) = logging_python(c.dir());
    let extra = ["model.path=null", "train.epochs=1", "train.max_steps_per_epoch=3"];
    let port = free_port();
    // Each process is local rank 0 of a node of its own, as on two machines.
    let children: Vec<Child> = (0..2)
        .map(|rank| {
            let mut command = Command::new(env!("CARGO_BIN_EXE_asl"));
            command.current_dir(env!("CARGO_MANIFEST_DIR")).args(c.train_args("nodes", &extra));
            as_rank(&mut command, rank, 2, port);
            command.env("LOCAL_RANK", "0").env("LOCAL_WORLD_SIZE", "1").env("ASL_PYTHON", &wrapper);
            command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for (rank, output) in wait_all(children, LIMIT).iter().enumerate() {
        assert!(output.status.success(), "rank {rank}: {}", text(output));
    }
    let exports = std::fs::read_to_string(&log).unwrap().lines().filter(|l| l.contains("export.py")).count();
    assert_eq!(exports, 2, "one export per node");
    assert!(c.runs().join("nodes/init/test_resnet.pt").is_file(), "rank 0's node exports into the run");
    let scratch = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains(&format!("-{port}-0-node1")));
    assert!(!scratch, "the other node's scratch export is removed");
}

/// Rank code for the broadcast test: a frozen-backbone run through the library; writes what this rank
/// broadcast and what the network's buffers weigh.
fn frozen_rank(out: &Path) {
    let launch = asl::distributed::Launch::from_env().unwrap().unwrap();
    let sets: Vec<String> = std::env::var("ASL_FROZEN_SETS").unwrap().split('\n').map(String::from).collect();
    let config = TrainConfig::load(Path::new("configs/demo.yaml"), &sets).unwrap();
    let options = RunOptions { run_dir: out.join("run"), launch: Some(launch.clone()), ..RunOptions::default() };
    let mut trainer = prepare(config, options, &mut ()).unwrap();
    trainer.run(&mut ()).unwrap();
    let network = trainer.network();
    let bytes = |t: &Tensor| t.numel() as u64 * t.kind().elt_size_in_bytes() as u64;
    let tensors = network.named_tensors().unwrap();
    let everything: u64 = tensors.iter().map(|(_, t)| bytes(t)).sum();
    let state = &network.card().state_as_parameters;
    let buffers: u64 = tensors.iter().filter(|(n, _)| state.contains(n)).map(|(_, t)| bytes(t)).sum();
    let frozen: u64 = tensors.iter().filter(|(n, _)| network.is_frozen(n)).map(|(_, t)| bytes(t)).sum();
    let broadcast = trainer.broadcast_bytes().unwrap();
    let report = serde_json::json!({
        "start": broadcast.start,
        "per_batches": broadcast.batches,
        "everything": everything,
        "buffers": buffers,
        "frozen": frozen,
        "batches": trainer.state().optimizer_step,
    });
    std::fs::write(out.join(format!("rank{}.json", launch.rank)), report.to_string()).unwrap();
}

#[test]
fn a_frozen_backbone_is_broadcast_once_and_only_buffers_every_step() {
    if let Ok(out) = std::env::var("ASL_FROZEN_OUT") {
        return frozen_rank(Path::new(&out));
    }
    let c = Cluster::new();
    let sets = c.fixture.library_sets(&["model.freeze_backbone=true", "train.epochs=1", "train.max_steps_per_epoch=4"]);
    let out = c.dir().join("frozen");
    let outputs = run_ranks(2, LIMIT, |_| {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.args(["a_frozen_backbone_is_broadcast_once_and_only_buffers_every_step", "--exact", "--nocapture"]);
        command.current_dir(env!("CARGO_MANIFEST_DIR")).env("ASL_FROZEN_OUT", &out);
        command.env("ASL_FROZEN_SETS", sets.join("\n"));
        command
    });
    for (rank, output) in outputs.iter().enumerate() {
        assert!(output.status.success(), "rank {rank}: {}", text(output));
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("rank0.json")).unwrap()).unwrap();
    let field = |name: &str| report[name].as_u64().unwrap();
    assert!(field("frozen") > 0 && field("buffers") > 0, "{report}");
    assert_eq!(field("batches"), 4, "{report}");
    // Everything once at the start (rank 0's weights for all), then the BatchNorm statistics per batch.
    assert_eq!(field("start"), field("everything"), "{report}");
    assert_eq!(field("per_batches"), field("batches") * field("buffers"), "{report}");
}

#[test]
fn checkpoints_honour_the_umask_as_files_open_creates() {
    let c = Cluster::new();
    for (umask, mode) in [("022", 0o644), ("077", 0o600)] {
        let name = format!("umask{umask}");
        let args: Vec<String> = c.train_args(&name, &["train.epochs=1", "train.max_steps_per_epoch=2"]);
        let line = format!("umask {umask} && exec '{}' {}", env!("CARGO_BIN_EXE_asl"), shell_words(&args));
        let output = Command::new("sh").current_dir(env!("CARGO_MANIFEST_DIR")).args(["-c", &line]).output().unwrap();
        assert!(output.status.success(), "{}", text(&output));
        let last = c.runs().join(&name).join("checkpoints/last");
        for file in ["model.pt", "model.json", "ema.pt", "optimizer.ot", "state.json", "config.yaml"] {
            let found = std::fs::metadata(last.join(file)).unwrap().permissions().mode() & 0o777;
            assert_eq!(found, mode, "{file} under umask {umask}: {found:o}");
        }
    }
}

fn shell_words(args: &[String]) -> String {
    args.iter().map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect::<Vec<_>>().join(" ")
}

#[test]
fn auto_resume_refuses_another_config_naming_the_key() {
    let c = Cluster::new();
    let short = ["train.epochs=1", "train.max_steps_per_epoch=3"];
    let run = |extra: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_asl"));
        command.current_dir(env!("CARGO_MANIFEST_DIR")).args(c.train_args("auto", extra)).output().unwrap()
    };
    // No run yet: --auto-resume starts it.
    let first = run(&short);
    assert!(first.status.success(), "{}", text(&first));
    let refused = run(&[&short[..], &["loss.gamma_neg=2"]].concat());
    let message = text(&refused);
    assert!(!refused.status.success(), "{message}");
    assert!(message.contains("its config differs from this one at loss.gamma_neg (4.0 there, 2.0 here)"), "{message}");
    // The same config continues it (here: it is finished, so nothing is left to train).
    let again = run(&short);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(state(&c.runs().join("auto")).history.len(), 1);
}
