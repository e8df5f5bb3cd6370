//! Data-parallel training on 2 processes over Gloo on localhost: the same
//! update as one process, ranks that agree bit for bit, shards that cover
//! the data, whole-split validation, side effects on rank 0 only, resume
//! across world sizes, a named lost rank, and a real torchrun launch.

mod common;

use asl::distributed::Launch;
use asl::model::Network;
use asl::train::{prepare, RunOptions, TrainConfig};
use common::distributed::{as_rank, free_port, run_ranks, wait_all};
use common::python::run_python;
use common::training::{state, text, validate_report, Fixture};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tch::{Device, Tensor};

const LIMIT: Duration = Duration::from_secs(240);

fn tensors(path: &Path) -> Vec<(String, Tensor)> {
    Network::load(path, Device::Cpu).unwrap().named_tensors().unwrap()
}

fn max_difference(a: &Path, b: &Path) -> f64 {
    tensors(a)
        .iter()
        .zip(tensors(b))
        .map(|((n, x), (m, y))| {
            assert_eq!(n, &m);
            (x - y).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

fn assert_all_succeeded(outputs: &[std::process::Output]) {
    for (rank, output) in outputs.iter().enumerate() {
        assert!(output.status.success(), "rank {rank}:\n{}", text(output));
    }
}

/// A classifier without BatchNorm (whose statistics would stay per rank),
/// with a card, so that one process and two must compute the same thing.
fn toy_model(dir: &Path) -> PathBuf {
    let path = dir.join("toy.pt");
    let script = format!(
        "import torch, json\n\
         class Toy(torch.nn.Module):\n\
         \x20   def __init__(self):\n\
         \x20       super().__init__()\n\
         \x20       self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)\n\
         \x20       self.fc = torch.nn.Linear(8, 12)\n\
         \x20   def forward_features(self, x):\n\
         \x20       return torch.relu(self.conv(x))\n\
         \x20   def forward(self, x):\n\
         \x20       return self.fc(self.forward_features(x).mean((2, 3)))\n\
         torch.manual_seed(0)\n\
         torch.jit.script(Toy()).save('{p}')\n\
         json.dump({{'model': 'toy', 'input_size': 32, 'num_features': 8, 'num_classes': 12,\n\
         \x20          'classifier': ['fc.weight', 'fc.bias'], 'mean': [0, 0, 0], 'std': [1, 1, 1]}},\n\
         \x20         open('{card}', 'w'))",
        p = path.display(),
        card = path.with_extension("json").display()
    );
    // TorchScript reads the class's source, so it has to live in a file.
    let file = dir.join("toy.py");
    std::fs::write(&file, script).unwrap();
    run_python(&[file.to_str().unwrap()]);
    path
}

#[test]
fn two_ranks_of_half_batches_step_as_one_rank_of_the_whole_batch() {
    let f = Fixture::new();
    let model = toy_model(f.dir.path());
    // 96 images in global batches of 16: the first 3 optimizer steps. Strong coupled weight decay
    // makes the gradients' scale matter to Adam: averaged instead of summed, they would differ.
    let sets = [
        "--set",
        "train.max_steps_per_epoch=3",
        "--set",
        "train.epochs=1",
        "--set",
        "schedule.scheduled_epochs=2",
        "--set",
        "optimizer.weight_decay=1.0",
        "--set",
        "data.augment.randaugment=null",
    ];
    let model_set = format!("model.path={}", model.display());
    let single = f.command("single", &sets).args(["--set", &model_set]).output().unwrap();
    assert!(single.status.success(), "{}", text(&single));
    let outputs = run_ranks(2, LIMIT, |_| {
        let mut c = f.command("split", &sets);
        c.args(["--set", &model_set]);
        c
    });
    assert_all_succeeded(&outputs);
    let (one, two) = (f.runs().join("single/checkpoints/last"), f.runs().join("split/checkpoints/last"));
    assert_eq!(state(&f.runs().join("single")).optimizer_step, 3);
    let difference = max_difference(&one.join("model.pt"), &two.join("model.pt"));
    assert!(difference < 1e-5, "parameters differ by {difference}");
    assert!(max_difference(&model, &one.join("model.pt")) > 1e-3, "training must have moved the weights");
}

/// Rank code for the agreement test: trains through the library, then saves
/// this rank's network, EMA, optimizer moments and γ− controller.
fn agreement_rank(out: &Path) {
    let launch = Launch::from_env().unwrap().unwrap();
    let sets: Vec<String> = std::env::var("ASL_AGREEMENT_SETS").unwrap().split('\n').map(String::from).collect();
    let config = TrainConfig::load(Path::new("configs/demo.yaml"), &sets).unwrap();
    let options = RunOptions { run_dir: out.join("run"), launch: Some(launch.clone()), ..RunOptions::default() };
    let mut trainer = prepare(config, options, &mut ()).unwrap();
    trainer.run(&mut ()).unwrap();
    let dir = out.join(format!("rank{}", launch.rank));
    std::fs::create_dir_all(&dir).unwrap();
    trainer.network().save(&dir.join("model.pt")).unwrap();
    trainer.ema().save(&dir.join("ema.pt")).unwrap();
    trainer.optimizer().save(&dir.join("optimizer.ot")).unwrap();
    std::fs::write(dir.join("state.json"), serde_json::to_string(&trainer.state().adaptive).unwrap()).unwrap();
}

#[test]
fn after_real_training_every_rank_holds_the_same_bits() {
    if let Ok(out) = std::env::var("ASL_AGREEMENT_OUT") {
        return agreement_rank(Path::new(&out));
    }
    let f = Fixture::new();
    let sets = f.library_sets(&["loss.adaptive={target_delta: 0.1, lambda: 0.05}", "train.amp=on"]);
    let out = f.dir.path().join("agreement");
    let outputs = run_ranks(2, LIMIT, |_| {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["after_real_training_every_rank_holds_the_same_bits", "--exact", "--nocapture"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("ASL_AGREEMENT_OUT", &out)
            .env("ASL_AGREEMENT_SETS", sets.join("\n"));
        c
    });
    assert_all_succeeded(&outputs);
    let (zero, one) = (out.join("rank0"), out.join("rank1"));
    for file in ["model.pt", "ema.pt"] {
        for ((name, a), (_, b)) in tensors(&zero.join(file)).iter().zip(tensors(&one.join(file))) {
            assert!(a.equal(&b), "{file}: {name} differs between the ranks");
        }
    }
    let moments = |dir: &Path| Tensor::load_multi(dir.join("optimizer.ot")).unwrap();
    for ((name, a), (_, b)) in moments(&zero).iter().zip(moments(&one)) {
        assert!(a.equal(&b), "optimizer {name} differs between the ranks");
    }
    let controller = |dir: &Path| std::fs::read_to_string(dir.join("state.json")).unwrap();
    assert_eq!(controller(&zero), controller(&one));
    assert!(controller(&zero).contains("gamma_neg"), "{}", controller(&zero));
}

#[test]
fn only_rank_0_writes_validation_is_whole_and_runs_resume_across_world_sizes() {
    let f = Fixture::new();
    let epochs = |n: usize| {
        ["--set".to_string(), format!("train.epochs={n}"), "--set".into(), "schedule.scheduled_epochs=3".into()]
    };
    let two = run_ranks(2, LIMIT, |_| {
        let mut c = f.command("two", &[]);
        c.args(epochs(1));
        c
    });
    assert_all_succeeded(&two);
    assert!(two[1].stdout.is_empty(), "rank 1 printed:\n{}", text(&two[1]));
    assert!(String::from_utf8_lossy(&two[0].stdout).contains("epoch   1"), "{}", text(&two[0]));
    let run = f.runs().join("two");
    let events = std::fs::read_dir(run.join("tensorboard")).unwrap().count();
    assert_eq!(events, 1, "one TensorBoard event file, rank 0's");

    // The sharded, gathered mAP is the whole split's: one process scoring the checkpoint agrees.
    let json = validate_report(&run.join("checkpoints/last"), &f.dir.path().join("data"), &["--batch-size", "7"]);
    let alone = json["average_precision"]["map"].as_f64().unwrap();
    let sharded = state(&run).history[0].map.unwrap();
    assert!((alone - sharded).abs() < 1e-4, "validation on 2 ranks {sharded} vs 1 rank {alone}");

    // 2 ranks → 1, and 1 rank → 2.
    let resumed =
        f.run("two", &[&["--resume", run.to_str().unwrap()][..], &epochs(2).each_ref().map(String::as_str)].concat());
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert_eq!(state(&run).epoch, 2);
    assert!(f.run("one", &epochs(1).each_ref().map(String::as_str)).status.success());
    let one = f.runs().join("one");
    let widened = run_ranks(2, LIMIT, |_| {
        let mut c = f.command("one", &["--resume", one.to_str().unwrap()]);
        c.args(epochs(2));
        c
    });
    assert_all_succeeded(&widened);
    assert_eq!(state(&one).epoch, 2);
    assert_eq!(state(&one).world_size, 2);
}

#[test]
fn a_killed_rank_is_named_and_the_run_resumes() {
    let f = Fixture::new();
    let port = free_port();
    // 6 steps an epoch: rank 1 dies at step 8, after the first checkpoint.
    let sets =
        ["--set", "train.epochs=50", "--set", "schedule.scheduled_epochs=50", "--set", "distributed.timeout_s=20"];
    let children: Vec<_> = (0..2)
        .map(|rank| {
            let mut c = f.command("killed", &sets);
            as_rank(&mut c, rank, 2, port);
            c.env("ASL_FAULT", "SIGKILL@step=8/rank=1");
            c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let mut children = children.into_iter();
    let (rank0, mut rank1) = (children.next().unwrap(), children.next().unwrap());
    let deadline = std::time::Instant::now() + LIMIT;
    while rank1.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "rank 1 was never killed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let killed_at = std::time::Instant::now();
    let outputs = wait_all(vec![rank0, rank1], Duration::from_secs(60));
    let message = text(&outputs[0]);
    assert!(!outputs[0].status.success(), "{message}");
    assert!(killed_at.elapsed() < Duration::from_secs(25), "rank 0 took {:?}", killed_at.elapsed());
    assert!(message.contains("rank 0: error:") && message.contains("lost rank 1"), "{message}");
    let run = f.runs().join("killed");
    let resumed = f.run("killed", &["--resume", run.to_str().unwrap(), "--set", "train.epochs=2"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
}

/// Rank code for the agreement test: steps 1 to 40 with no collective between them, so nothing but the
/// agreement keeps the hosts together; rank 0 asks to stop at step 10 and is late to its checks around it.
fn stop_agreement_rank(out: &Path) {
    let launch = Launch::from_env().unwrap().unwrap();
    let options = asl::distributed::GroupOptions {
        backend: asl::distributed::Backend::Gloo,
        device: Device::Cpu,
        timeout: Duration::from_secs(60),
        heartbeat_timeout: Duration::from_secs(30),
        stall_timeout: Duration::from_secs(60),
        on_lost_rank: None,
        scope: "agreement".into(),
    };
    let group = asl::distributed::ProcessGroup::join(&launch, &options).unwrap();
    let mut stopped_after = None;
    for step in 1..=40u64 {
        if launch.rank == 0 && (8..=12).contains(&step) {
            std::thread::sleep(Duration::from_millis(300));
        }
        let requested = launch.rank == 0 && step >= 10;
        if group.agree_stop(step, requested).unwrap() {
            stopped_after = Some(step);
            break;
        }
    }
    std::fs::write(out.join(format!("rank{}", launch.rank)), format!("{stopped_after:?}")).unwrap();
}

#[test]
fn ranks_agree_on_the_stop_step_however_far_one_host_runs_ahead() {
    if let Ok(out) = std::env::var("ASL_STOP_OUT") {
        return stop_agreement_rank(Path::new(&out));
    }
    let dir = tempfile::tempdir().unwrap();
    let outputs = run_ranks(2, LIMIT, |_| {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["ranks_agree_on_the_stop_step_however_far_one_host_runs_ahead", "--exact", "--nocapture"]);
        c.env("ASL_STOP_OUT", dir.path());
        c
    });
    assert_all_succeeded(&outputs);
    for rank in 0..2 {
        let stopped = std::fs::read_to_string(dir.path().join(format!("rank{rank}"))).unwrap();
        assert_eq!(stopped, "Some(11)", "rank {rank}: a request at step 10 stops every rank after step 11");
    }
}

#[test]
fn torchrun_launches_the_demo_recipe_end_to_end() {
    let f = Fixture::new();
    let torchrun = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/torchrun");
    let mut command = Command::new(&torchrun);
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--standalone", "--nproc-per-node=2", "--no-python", env!("CARGO_BIN_EXE_asl"), "train"])
        .args(["--config", "configs/demo.yaml", "--no-progress", "--runs"])
        .arg(f.runs())
        .arg("--data")
        .arg(f.dir.path().join("data"))
        .args(["--set", "train.epochs=2", "--set", "device=cpu", "--set", "data.batch_size=16"]);
    let output = command.output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("2 processes") && stdout.contains("best mAP"), "{stdout}");
    assert_eq!(state(&f.runs().join("demo")).history.len(), 2);
}
