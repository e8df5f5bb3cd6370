//! Runs that survive a cluster, on CPU over Gloo, with the defaults users
//! run: only the fixture's size is set (no `data.threads` pin, but for the
//! one Slurm case that keeps it pinned beside the defaults). Every stop,
//! kill, stall and crash strikes at an optimizer step chosen with
//! `ASL_FAULT`, never after a sleep. Restarts by torchrun, preemptions by
//! SIGTERM (to the workers or to torchrun), SIGINT and SIGUSR1 and a Slurm
//! requeue all end bit for bit where an uninterrupted run ends; ranks
//! agree on the stop step when one is late; a rank that hangs, one that
//! stalls, a dead heartbeat and a lost store are each named; exports go
//! once per node whatever the placement; checkpoints honour the umask.

mod common;

use asl::model::Network;
use asl::train::{prepare, RunOptions, TrainConfig};
use common::distributed::{as_rank, as_slurm_task, free_port, run_ranks, wait_all, SlurmTask, Watched};
use common::python::python;
use common::training::{state, text, Fixture};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tch::{Device, Tensor};

const LIMIT: Duration = Duration::from_secs(300);
const EPOCHS: usize = 3;
/// 384 training images in global batches of 16: 24 steps an epoch, so step 30 is in the middle of epoch 2.
const STOP_AT: usize = 30;

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

    /// `asl train` arguments for run `name`, with --auto-resume, so that one command line starts it,
    /// continues it after a preemption and is what torchrun restarts.
    fn train_args(&self, name: &str, extra: &[&str]) -> Vec<String> {
        let mut args = self.args_without_auto_resume(name, extra);
        args.insert(1, "--auto-resume".into());
        args
    }

    fn args_without_auto_resume(&self, name: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> =
            ["train", "--config", "configs/demo.yaml", "--no-progress"].map(String::from).to_vec();
        args.extend(["--runs".into(), self.runs().display().to_string()]);
        let run = [format!("train.epochs={EPOCHS}"), format!("schedule.scheduled_epochs={EPOCHS}")];
        let sets = self.fixture.sets(name).into_iter().chain(run).chain(extra.iter().map(|s| s.to_string()));
        for set in sets {
            args.extend(["--set".into(), set]);
        }
        args
    }

    /// torchrun with 2 workers on this machine, restarting them up to `restarts` times, with `fault`.
    fn torchrun(&self, name: &str, restarts: u32, fault: Option<&str>) -> Command {
        let mut command = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/torchrun"));
        command.current_dir(env!("CARGO_MANIFEST_DIR")).env("OMP_NUM_THREADS", "1");
        command.args(["--standalone", "--nproc-per-node=2", &format!("--max-restarts={restarts}"), "--no-python"]);
        command.arg(env!("CARGO_BIN_EXE_asl")).args(self.train_args(name, &[]));
        if let Some(fault) = fault {
            command.env("ASL_FAULT", fault);
        }
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        command
    }

    /// Rank `rank` of 2, launched without torchrun (rank 0 hosts the store), with `fault` and `extra` sets.
    fn rank(&self, name: &str, rank: usize, port: u16, fault: &str, extra: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_asl"));
        command.current_dir(env!("CARGO_MANIFEST_DIR")).args(self.train_args(name, extra));
        as_rank(&mut command, rank, 2, port);
        command.env("ASL_FAULT", fault);
        command
    }

    fn last(&self, name: &str) -> PathBuf {
        self.runs().join(name).join("checkpoints/last")
    }
}

fn finish(child: Child) -> Output {
    wait_all(vec![child], LIMIT).pop().unwrap()
}

/// The process `pid` is stopped (SIGSTOP): its state in /proc is `T`.
fn wait_until_stopped(pid: u32) -> Instant {
    let deadline = Instant::now() + LIMIT;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('T')) {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "process {pid} never stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: sends a signal to a process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0, "kill({pid}, {signal})");
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

/// The run stopped on request after step `step`, in the middle of epoch 2, with a checkpoint.
fn assert_stopped_mid_epoch(c: &Cluster, name: &str, output: &Output, step: Option<usize>) {
    assert!(text(output).contains("stopped on request"), "{}", text(output));
    let at_stop = state(&c.runs().join(name));
    if let Some(step) = step {
        assert_eq!(at_stop.optimizer_step, step, "{name}: {at_stop:?}");
    }
    assert_eq!(at_stop.epoch, 1, "{name} stopped in epoch 2: {at_stop:?}");
    assert!(at_stop.batch_in_epoch > 0, "{name} stopped in the middle of the epoch: {at_stop:?}");
}

#[test]
fn every_restart_path_on_the_defaults_ends_bit_for_bit_where_an_uninterrupted_run_ends() {
    let c = Cluster::new();
    let reference = finish(c.torchrun("reference", 0, None).spawn().unwrap());
    assert!(reference.status.success(), "{}", text(&reference));
    assert_eq!(state(&c.runs().join("reference")).history.len(), EPOCHS);
    let plan = std::fs::read_to_string(c.runs().join("reference/plan.json")).unwrap();
    assert!(plan.contains("\"loader_threads\": 1"), "one CPU each of this machine's two: {plan}");
    let config = std::fs::read_to_string(c.last("reference").join("config.yaml")).unwrap();
    assert!(config.contains("threads: 0"), "the saved config is the user's: {config}");

    // SIGTERM and SIGINT to each worker at step 30 (torchrun passes a terminal's Ctrl-C and Slurm's
    // preemption on to every worker): all stop after step 31 with a checkpoint and exit 75; the same command
    // continues the run.
    for (name, signal) in [("preempted", "SIGTERM"), ("interrupted", "SIGINT")] {
        let stopped = finish(c.torchrun(name, 0, Some(&format!("{signal}@step={STOP_AT}"))).spawn().unwrap());
        assert_stopped_mid_epoch(&c, name, &stopped, Some(STOP_AT + 1));
        assert!(text(&stopped).contains("exitcode  : 75"), "{}", text(&stopped));
        let resumed = finish(c.torchrun(name, 0, None).spawn().unwrap());
        assert!(resumed.status.success(), "{name}: {}", text(&resumed));
        assert_same_bits(&c.last("reference"), &c.last(name));
    }

    // SIGTERM to torchrun itself, as Slurm preempts a job: it passes the signal on, the workers agree on a
    // step, checkpoint it and exit. The steps after the fault are slowed so that the signal lands in epoch 2
    // whatever torchrun's delay; which step it is depends on that delay, so it is not asserted.
    let fault = format!("SIGTERM:parent@step={STOP_AT}/rank=0;sleep:150@steps={}..48", STOP_AT + 1);
    let stopped = finish(c.torchrun("torchrun-preempted", 0, Some(&fault)).spawn().unwrap());
    assert_stopped_mid_epoch(&c, "torchrun-preempted", &stopped, None);
    let resumed = finish(c.torchrun("torchrun-preempted", 0, None).spawn().unwrap());
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert_same_bits(&c.last("reference"), &c.last("torchrun-preempted"));

    // Rank 1 killed outright at step 30: torchrun restarts both workers, which continue from the last
    // checkpoint (TORCHELASTIC_RESTART_COUNT > 0 resumes without any flag; the fault is not repeated).
    let restarted = finish(c.torchrun("elastic", 1, Some(&format!("SIGKILL@step={STOP_AT}/rank=1"))).spawn().unwrap());
    assert!(restarted.status.success(), "{}", text(&restarted));
    // torchrun's own account of the failure it restarted from.
    assert!(text(&restarted).contains("failed (exitcode: -9) local_rank: 1"), "{}", text(&restarted));
    assert_eq!(state(&c.runs().join("elastic")).history.len(), EPOCHS);
    assert_same_bits(&c.last("reference"), &c.last("elastic"));
}

#[test]
fn a_requeued_slurm_job_continues_bit_for_bit_without_auto_resume() {
    let c = Cluster::new();
    // Two tasks as srun starts them, the job script's `srun asl train --config ...` line with no
    // --auto-resume; this case pins data.threads, the rest of this file runs the default.
    let job = |name: &str, restarts: u32, fault: Option<&str>, port: u16| -> Vec<Child> {
        (0..2)
            .map(|rank| {
                let mut command = Command::new(env!("CARGO_BIN_EXE_asl"));
                command.current_dir(env!("CARGO_MANIFEST_DIR"));
                command.args(c.args_without_auto_resume(name, &["data.threads=1"]));
                let task = SlurmTask { rank, world: 2, node: 0, local: rank, per_node: 2, restarts };
                as_slurm_task(&mut command, task, port);
                if let Some(fault) = fault {
                    command.env("ASL_FAULT", fault);
                }
                command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
            })
            .collect()
    };
    for output in wait_all(job("reference", 0, None, free_port()), LIMIT) {
        assert!(output.status.success(), "{}", text(&output));
    }
    // `sbatch --signal=USR1@90` warns every task before the time limit: each checkpoints and exits 75, which
    // the job script answers with `scontrol requeue`.
    let fault = format!("SIGUSR1@step={STOP_AT}");
    for (rank, output) in wait_all(job("requeued", 0, Some(&fault), free_port()), LIMIT).iter().enumerate() {
        assert_eq!(output.status.code(), Some(75), "rank {rank}: {}", text(output));
    }
    assert_eq!(state(&c.runs().join("requeued")).optimizer_step, STOP_AT + 1);
    // The requeued job: SLURM_RESTART_COUNT=1, the same command line.
    for (rank, output) in wait_all(job("requeued", 1, None, free_port()), LIMIT).iter().enumerate() {
        assert!(output.status.success(), "rank {rank}: {}", text(output));
    }
    assert_eq!(state(&c.runs().join("requeued")).history.len(), EPOCHS);
    assert_same_bits(&c.last("reference"), &c.last("requeued"));
}

#[test]
fn ranks_agree_on_the_stop_step_when_one_is_late_to_its_check() {
    let c = Cluster::new();
    let port = free_port();
    // Rank 0 is asked to stop at step 30 and sleeps before each of its checks around it, so that rank 1 has
    // done its part of each step long before rank 0 makes its check (or its request).
    let fault = format!("SIGTERM@step={STOP_AT}/rank=0;sleep:400@steps=28..32/rank=0");
    let children: Vec<Child> = (0..2)
        .map(|rank| {
            let mut command = c.rank("skewed", rank, port, &fault, &[]);
            command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for (rank, output) in wait_all(children, LIMIT).iter().enumerate() {
        assert_eq!(output.status.code(), Some(75), "rank {rank}: {}", text(output));
    }
    let at_stop = state(&c.runs().join("skewed"));
    assert_eq!(at_stop.optimizer_step, STOP_AT + 1, "every rank stops after the step after the request");
}

/// Two ranks launched directly, rank 1 with `fault`; its Watched handle and rank 0's.
fn two_ranks(c: &Cluster, name: &str, fault: &str, extra: &[&str]) -> (Watched, Watched, u16) {
    let port = free_port();
    let extra: Vec<&str> = ["train.epochs=50", "schedule.scheduled_epochs=50"].iter().chain(extra).copied().collect();
    let rank0 = Watched::spawn(&mut c.rank(name, 0, port, fault, &extra));
    let rank1 = Watched::spawn(&mut c.rank(name, 1, port, fault, &extra));
    (rank0, rank1, port)
}

#[test]
fn a_rank_that_hangs_whole_is_named_within_the_heartbeat_timeout() {
    let c = Cluster::new();
    let (rank0, rank1, _) =
        two_ranks(&c, "hung", &format!("SIGSTOP@step={STOP_AT}/rank=1"), &["distributed.heartbeat_timeout_s=5"]);
    // SIGSTOP: the process and its heartbeat stop, its sockets stay open, so no collective fails.
    let stopped_at = wait_until_stopped(rank1.child.id());
    let (status, message) = rank0.finish(LIMIT);
    let elapsed = stopped_at.elapsed();
    signal(rank1.child.id(), libc::SIGKILL);
    drop(rank1.finish(LIMIT));
    assert!(!status.success(), "{message}");
    assert!(message.contains("rank 0: error: lost rank 1") && message.contains("heartbeat stopped"), "{message}");
    // The heartbeat timeout, plus its 250 ms polls and the last beat's age.
    assert!(elapsed < Duration::from_secs(5 + 2), "rank 0 took {elapsed:?}: {message}");
}

#[test]
fn a_rank_whose_training_stalls_is_named_with_its_step_within_the_stall_timeout() {
    let c = Cluster::new();
    let (rank0, rank1, _) =
        two_ranks(&c, "stalled", &format!("stall@step={STOP_AT}/rank=1"), &["distributed.stall_timeout_s=5"]);
    // The main loop of rank 1 stops at step 30; its heartbeat thread goes on beating.
    let stalled_at = rank1.wait_for_line("fault injected on rank 1: Stall", LIMIT);
    let (status, message) = rank0.finish(LIMIT);
    let elapsed = stalled_at.elapsed();
    signal(rank1.child.id(), libc::SIGKILL);
    drop(rank1.finish(LIMIT));
    assert!(!status.success(), "{message}");
    assert!(message.contains("rank 0: error: rank 1 stalled"), "{message}");
    assert!(message.contains(&format!("rank 1 at optimizer step {STOP_AT}")), "{message}");
    assert!(elapsed < Duration::from_secs(5 + 5), "rank 0 took {elapsed:?} after the stall: {message}");
}

#[test]
fn a_heartbeat_thread_that_dies_is_reported_by_its_rank_and_its_peer() {
    let c = Cluster::new();
    let (rank0, rank1, _) = two_ranks(
        &c,
        "no-beat",
        &format!("heartbeat-dies@step={STOP_AT}/rank=1"),
        &["distributed.heartbeat_timeout_s=5"],
    );
    let (status1, message1) = rank1.finish(LIMIT);
    let (status0, message0) = rank0.finish(LIMIT);
    assert!(!status1.success() && !status0.success(), "{message1}\n{message0}");
    assert!(message1.contains("rank 1: error: the heartbeat thread of rank 1 died (it was made to fail"), "{message1}");
    assert!(message0.contains("rank 0: error:") && message0.contains("lost rank 1"), "{message0}");
}

#[test]
fn losing_the_store_names_the_store_and_its_host() {
    let c = Cluster::new();
    // Without torchrun's agent, rank 0 hosts the store; killed, it takes the store with it.
    let (rank0, rank1, port) = two_ranks(&c, "no-store", &format!("SIGKILL@step={STOP_AT}/rank=0"), &[]);
    let (status0, _) = rank0.finish(LIMIT);
    assert_eq!(status0.code(), None, "rank 0 was killed");
    let (status1, message) = rank1.finish(LIMIT);
    assert!(!status1.success(), "{message}");
    let store = format!("rendezvous store at 127.0.0.1:{port}");
    assert!(message.contains(&store) && message.contains("rank 0, on 127.0.0.1"), "{message}");
}

/// A python that logs its arguments, its node and the mode of the export's directory before running the
/// project's.
fn logging_python(dir: &Path) -> (PathBuf, PathBuf) {
    let (wrapper, log) = (dir.join("python"), dir.join("python.log"));
    let script = format!(
        "#!/bin/sh\nlog='{}'\nout=''\nprev=''\nfor a in \"$@\"; do [ \"$prev\" = --out ] && out=\"$a\"; prev=\"$a\"; done\n\
         [ -n \"$out\" ] && echo \"export node=$GROUP_RANK$SLURM_NODEID out=$out mode=$(stat -c %a \"$(dirname \"$out\")\")\" >> \"$log\"\n\
         exec '{}' \"$@\"\n",
        log.display(),
        python().display()
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (wrapper, log)
}

/// The exports the wrapper logged: (node, output file, its directory's mode).
fn exports(log: &Path) -> Vec<(String, PathBuf, String)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .map(|l| {
            let field = |name: &str| l.split(' ').find_map(|f| f.strip_prefix(name)).unwrap().to_string();
            (field("node="), PathBuf::from(field("out=")), field("mode="))
        })
        .collect()
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
    let exports = exports(&log);
    assert_eq!(exports.len(), 1, "{exports:?}");
    assert_eq!(exports[0].1, c.runs().join("once/init/test_resnet.pt"));
}

#[test]
fn a_cyclic_placement_exports_once_per_node_into_private_scratch_and_trains() {
    let c = Cluster::new();
    let (wrapper, log) = logging_python(c.dir());
    let extra = ["model.path=null", "train.epochs=1", "train.max_steps_per_epoch=3"];
    let port = free_port();
    // srun --distribution=cyclic over 2 nodes of 2 tasks: ranks 0 and 2 on node 0, ranks 1 and 3 on
    // node 1. Numbering nodes by rank - local rank (as before) puts rank 3 on a node of its own.
    let children: Vec<Child> = (0..4)
        .map(|rank| {
            let mut command = Command::new(env!("CARGO_BIN_EXE_asl"));
            command.current_dir(env!("CARGO_MANIFEST_DIR")).args(c.train_args("cyclic", &extra));
            let task = SlurmTask { rank, world: 4, node: rank % 2, local: rank / 2, per_node: 2, restarts: 0 };
            as_slurm_task(&mut command, task, port);
            command.env("ASL_PYTHON", &wrapper).env("SLURM_TASKS_PER_NODE", "2(x2)");
            command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for (rank, output) in wait_all(children, LIMIT).iter().enumerate() {
        assert!(output.status.success(), "rank {rank}: {}", text(output));
    }
    let mut exports = exports(&log);
    exports.sort();
    assert_eq!(exports.len(), 2, "one export per node: {exports:?}");
    assert_eq!((exports[0].0.as_str(), &exports[0].1), ("0", &c.runs().join("cyclic/init/test_resnet.pt")));
    let (node, scratch, mode) = &exports[1];
    assert_eq!(node, "1");
    assert!(scratch.starts_with(std::env::temp_dir()), "{scratch:?}");
    assert_eq!(mode, "700", "the other node's scratch directory is private");
    assert!(!scratch.parent().unwrap().exists(), "the scratch export is removed once loaded");
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
        for file in ["model.pt", "model.json", "ema.pt", "optimizer.ot", "state.json", "config.yaml", "plan.json"] {
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
