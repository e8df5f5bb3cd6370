//! Pretrained weights named by `hf-hub:timm/<model>.<tag>`. Nothing here
//! reaches past this machine: each test writes the hub's on-disk cache
//! layout itself (tests/support/hub_cache.py) and points `HF_ENDPOINT` at a
//! closed port on 127.0.0.1.

mod common;

use asl::data::sources::{write_synthetic, SynthConfig};
use common::python::run_python;
use common::training::text;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// What the issue allows a run that cannot get its weights before it stops.
const OFFLINE_BOUND: Duration = Duration::from_secs(30);

struct Hub {
    dir: tempfile::TempDir,
    endpoint: String,
}

impl Hub {
    fn new() -> Self {
        // A port that was just free and is closed again: connections to it are refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self { dir: tempfile::tempdir().unwrap(), endpoint: format!("http://127.0.0.1:{port}") }
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("hf-cache")
    }

    /// Writes `timm/<tag>` into the cache; returns its snapshot file.
    fn add(&self, tag: &str, seed: u64) -> PathBuf {
        let cache = self.cache();
        let out = run_python(&["tests/support/hub_cache.py", cache.to_str().unwrap(), tag, &seed.to_string()]);
        let revision = out.split_whitespace().next().unwrap();
        cache.join(format!("models--timm--{tag}/snapshots/{revision}/model.safetensors"))
    }

    /// `asl` in this checkout, with the cache and the closed endpoint; `HF_HUB_OFFLINE` unset.
    fn asl(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_asl"));
        command.current_dir(env!("CARGO_MANIFEST_DIR")).env_remove("HF_HUB_OFFLINE");
        command.env("HF_HOME", self.dir.path().join("hf-home")).env("HF_HUB_CACHE", self.cache());
        command.env("HF_ENDPOINT", &self.endpoint);
        command
    }

    fn data(&self) -> PathBuf {
        let data = self.dir.path().join("data");
        if !data.exists() {
            let config =
                SynthConfig { train_images: 32, val_images: 16, image_size: 32, classes: 12, ..Default::default() };
            write_synthetic(&data, &config).unwrap();
        }
        data
    }

    /// `asl train` of configs/demo.yaml on a small synthetic set, starting from `weights`.
    fn train(&self, name: &str, weights: &str, extra: &[&str]) -> Command {
        let mut command = self.asl();
        command.args(["train", "--config", "configs/demo.yaml", "--no-progress", "--runs"]);
        command.arg(self.dir.path().join("runs"));
        let data = self.data();
        let sets = [
            format!("name={name}"),
            format!("model.weights={weights}"),
            format!("data.path={}", data.display()),
            "data.image_size=32".into(),
            "data.batch_size=8".into(),
            "device=cpu".into(),
            "train.epochs=1".into(),
            "schedule.scheduled_epochs=2".into(),
        ];
        for set in &sets {
            command.args(["--set", set]);
        }
        command.args(extra);
        command
    }
}

fn card(model: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(model.with_extension("json")).unwrap()).unwrap()
}

#[test]
fn a_cached_snapshot_trains_offline_and_a_resume_needs_no_hub() {
    let hub = Hub::new();
    let snapshot = hub.add("test_resnet.r160_in1k", 7);
    let output =
        hub.train("hub", "hf-hub:timm/test_resnet.r160_in1k", &[]).env("HF_HUB_OFFLINE", "1").output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let run = hub.dir.path().join("runs/hub");
    let init = run.join("init/test_resnet.pt");
    // The backbone is the snapshot's, bit for bit; the head is sized for the data's 12 classes; the card
    // names the revision and the file's hash.
    let check = run_python(&["tests/support/hub_check.py", init.to_str().unwrap(), snapshot.to_str().unwrap(), "12"]);
    assert!(check.starts_with("ok"), "{check}");
    let revision = snapshot.parent().unwrap().file_name().unwrap().to_str().unwrap();
    assert!(text(&output).contains(&format!("at revision {revision}")), "{}", text(&output));
    // The trained model still says where it started.
    let trained = run.join("checkpoints/last/model.pt");
    assert_eq!(card(&trained)["weights"], card(&init)["weights"]);
    let info = hub.asl().args(["info", "--model"]).arg(run.join("checkpoints/last")).output().unwrap();
    let info_text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success(), "{}", text(&info));
    assert!(
        info_text.contains(&format!("weights: hf-hub:timm/test_resnet.r160_in1k at revision {revision}")),
        "{info_text}"
    );
    let sha256 = card(&init)["weights"]["sha256"].as_str().unwrap().to_string();
    assert!(info_text.contains(&sha256), "{info_text}");

    // The exported model lives in the run: with the cache gone and the hub unreachable, resuming works.
    std::fs::remove_dir_all(hub.cache()).unwrap();
    let mut resume = hub.asl();
    let resumed = resume.args(["train", "--no-progress", "--resume"]).arg(&run).args(["--set", "train.epochs=2"]);
    let resumed = resumed.output().unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed));
}

/// tests/support/fake_hub.py serving `file` as `repo` at `revision`; killed on drop.
struct FakeHub {
    child: std::process::Child,
    endpoint: String,
}

impl FakeHub {
    fn serve(repo: &str, revision: &str, file: &Path, log: &Path) -> Self {
        Self::serve_at(repo, revision, file, log, None)
    }

    /// As `serve`, sending bodies at `bytes_per_second` when given.
    fn serve_at(repo: &str, revision: &str, file: &Path, log: &Path, bytes_per_second: Option<u64>) -> Self {
        use std::io::BufRead;
        let mut command = Command::new(common::python::python());
        if let Some(rate) = bytes_per_second {
            command.env("FAKE_HUB_BYTES_PER_SECOND", rate.to_string());
        }
        let mut child = command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["tests/support/fake_hub.py", repo, revision])
            .arg(file)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let mut port = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut port).unwrap();
        Self { child, endpoint: format!("http://127.0.0.1:{}", port.trim()) }
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `command` run on a pseudo-terminal (util-linux `script`), as a user's shell runs it; the output is
/// what the terminal shows.
fn on_a_terminal(command: &Command) -> Output {
    let mut line: Vec<String> =
        command.get_envs().filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, v?.to_str()?))).collect();
    line.insert(0, "env".into());
    line.push(command.get_program().to_str().unwrap().into());
    line.extend(command.get_args().map(|a| a.to_str().unwrap().to_string()));
    Command::new("script")
        .current_dir(command.get_current_dir().unwrap())
        .args(["-qec", &line.join(" "), "/dev/null"])
        .output()
        .unwrap()
}

#[test]
fn a_cache_miss_downloads_once_with_a_progress_bar_into_the_shared_cache() {
    let hub = Hub::new();
    let source = hub.add("test_resnet.r160_in1k", 3);
    let served = hub.dir.path().join("served/model.safetensors");
    std::fs::create_dir_all(served.parent().unwrap()).unwrap();
    std::fs::copy(&source, &served).unwrap();
    std::fs::remove_dir_all(hub.cache()).unwrap();
    let revision = "0123456789abcdef0123456789abcdef01234567";
    let log = hub.dir.path().join("hub.log");
    let server = FakeHub::serve("timm/test_resnet.r160_in1k", revision, &served, &log);
    let weights = "hf-hub:timm/test_resnet.r160_in1k";

    let first = hub.train("first", weights, &[]);
    // `Hub::train` passes --no-progress; a user's plain command shows the download's bar.
    let args: Vec<String> =
        first.get_args().filter(|a| *a != "--no-progress").map(|a| a.to_str().unwrap().into()).collect();
    let mut plain = hub.asl();
    plain.args(&args).env("HF_ENDPOINT", &server.endpoint);
    let output = on_a_terminal(&plain);
    let screen = text(&output);
    assert!(output.status.success(), "{screen}");
    assert!(screen.contains("model.safetensors: 100%"), "no progress bar on the terminal: {screen}");
    let cached =
        hub.cache().join(format!("models--timm--test_resnet.r160_in1k/snapshots/{revision}/model.safetensors"));
    assert_eq!(std::fs::read(&cached).unwrap(), std::fs::read(&served).unwrap());
    let init = hub.dir.path().join("runs/first/init/test_resnet.pt");
    assert_eq!(card(&init)["weights"]["revision"], revision);

    // A second run finds the file in the shared cache and downloads nothing; --no-progress draws no bar.
    let mut second = hub.train("second", weights, &[]);
    second.env("HF_ENDPOINT", &server.endpoint);
    let output = on_a_terminal(&second);
    assert!(output.status.success(), "{}", text(&output));
    assert!(!text(&output).contains("%|"), "{}", text(&output));
    let requests = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        requests.matches("\"GET /timm/test_resnet.r160_in1k/resolve/main/model.safetensors").count(),
        1,
        "{requests}"
    );
}

fn assert_fails_fast_naming_the_ways_out(hub: &Hub, command: &mut Command, why: &str) {
    let start = Instant::now();
    let output: Output = command.output().unwrap();
    let elapsed = start.elapsed();
    let message = text(&output);
    assert!(!output.status.success(), "{message}");
    assert!(elapsed < OFFLINE_BOUND, "took {elapsed:?}: {message}");
    for part in [
        "timm/test_resnet.r160_in1k is not in the Hugging Face cache",
        hub.cache().to_str().unwrap(),
        why,
        "connect once to fill the cache",
        "--set model.weights=/path/to/file",
    ] {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }
}

#[test]
fn an_empty_cache_without_network_stops_within_the_bound_naming_the_ways_out() {
    let hub = Hub::new();
    let weights = "hf-hub:timm/test_resnet.r160_in1k";
    let offline = &mut hub.train("offline", weights, &[]);
    assert_fails_fast_naming_the_ways_out(&hub, offline.env("HF_HUB_OFFLINE", "1"), "HF_HUB_OFFLINE is set");
    // No HF_HUB_OFFLINE: huggingface_hub alone would retry for about 25 s per file.
    let unreachable = format!("the hub at {} cannot be reached", hub.endpoint);
    assert_fails_fast_naming_the_ways_out(&hub, &mut hub.train("unreachable", weights, &[]), &unreachable);
    assert!(!hub.dir.path().join("runs/offline/checkpoints").exists());
}

#[test]
fn a_miil_tag_brings_its_own_input_statistics_to_the_card() {
    let hub = Hub::new();
    hub.add("tresnet_m.miil_in1k", 1);
    hub.add("test_efficientnet.r160_in1k", 1);
    let export = |model: &str, tag: &str, size: &str| {
        let out = hub.dir.path().join(format!("{model}.pt"));
        let weights = format!("hf-hub:timm/{tag}");
        let args = ["export", "--model", model, "--num-classes", "3", "--img-size", size, "--weights", &weights];
        let output = hub.asl().args(args).arg("--out").arg(&out).env("HF_HUB_OFFLINE", "1").output().unwrap();
        assert!(output.status.success(), "{}", text(&output));
        card(&out)
    };
    let miil = export("tresnet_m", "tresnet_m.miil_in1k", "64");
    let imagenet = export("test_efficientnet", "test_efficientnet.r160_in1k", "64");
    // MIIL trains on [0, 1] inputs, as the paper does; the other tag on ImageNet's statistics.
    assert_eq!(
        (miil["mean"].clone(), miil["std"].clone()),
        (serde_json::json!([0.0, 0.0, 0.0]), serde_json::json!([1.0, 1.0, 1.0]))
    );
    assert_eq!(imagenet["mean"], serde_json::json!([0.485, 0.456, 0.406]));
    assert_eq!(imagenet["std"], serde_json::json!([0.229, 0.224, 0.225]));
    assert_eq!(miil["weights"]["pretrained_input_size"], serde_json::json!([3, 224, 224]));
    assert_eq!(imagenet["weights"]["pretrained_input_size"], serde_json::json!([3, 160, 160]));
    assert_eq!(miil["weights"]["hub_id"], "timm/tresnet_m.miil_in1k");
}

#[test]
fn a_repo_outside_timm_brings_its_config_json() {
    let hub = Hub::new();
    let cache = hub.cache();
    let args = [cache.to_str().unwrap(), "someone/my-resnet", "4", "test_resnet", "0.25", "0.75", "96"];
    run_python(&[&["tests/support/hub_cache.py"][..], &args].concat());
    let export = |model: &str| {
        let out = hub.dir.path().join(format!("{model}.pt"));
        let args = ["export", "--model", model, "--num-classes", "3", "--img-size", "32", "--weights"];
        let mut command = hub.asl();
        command.args(args).arg("hf-hub:someone/my-resnet").arg("--out").arg(&out).env("HF_HUB_OFFLINE", "1");
        (command.output().unwrap(), out)
    };
    let (output, out) = export("test_resnet");
    assert!(output.status.success(), "{}", text(&output));
    let card = card(&out);
    assert_eq!(
        (card["mean"].clone(), card["std"].clone()),
        (serde_json::json!([0.25, 0.25, 0.25]), serde_json::json!([0.75, 0.75, 0.75]))
    );
    assert_eq!(card["weights"]["hub_id"], "someone/my-resnet");
    assert_eq!(card["weights"]["pretrained_input_size"], serde_json::json!([3, 96, 96]));
    // The repo's config names its architecture: another model is refused.
    let (output, _) = export("test_efficientnet");
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("hf-hub:someone/my-resnet holds test_resnet weights, not test_efficientnet"),
        "{}",
        text(&output)
    );
}

#[test]
fn a_checkpoint_that_runs_code_when_unpickled_is_refused_and_runs_nothing() {
    let hub = Hub::new();
    let dir = hub.dir.path();
    let (weights, marker) = (dir.join("evil.pth"), dir.join("pwned"));
    // A state dict whose unpickling writes a file: what a doctored model-zoo download can do.
    let script = format!(
        "import torch, timm\n\
         class Payload:\n    def __reduce__(self):\n        return (exec, ({:?},))\n\
         state = timm.create_model('test_resnet', num_classes=12).state_dict()\n\
         torch.save({{'model': state, 'payload': Payload()}}, {:?})",
        format!("open({:?}, 'w').write('ran')", marker.to_str().unwrap()),
        weights.to_str().unwrap()
    );
    run_python(&["-c", &script]);
    assert!(!marker.exists(), "saving must not run the payload");

    let exported = dir.join("out.pt");
    let args = ["export", "--model", "test_resnet", "--num-classes", "12", "--img-size", "32", "--weights"];
    let output = hub.asl().args(args).arg(&weights).arg("--out").arg(&exported).output().unwrap();
    let message = text(&output);
    assert!(!output.status.success(), "{message}");
    assert!(message.contains(&format!("{} needs full unpickling", weights.display())), "{message}");
    assert!(message.contains("--trust-pickle"), "{message}");
    let output = hub.train("evil", weights.to_str().unwrap(), &[]).output().unwrap();
    let message = text(&output);
    assert!(!output.status.success() && message.contains("model.trust_pickle"), "{message}");
    assert!(!marker.exists() && !exported.exists(), "the payload ran or a model was written");

    // The user's explicit opt-in is honoured, and only then does the file's code run.
    let trusted = hub.asl().args(args).arg(&weights).args(["--trust-pickle", "--out"]).arg(&exported).output().unwrap();
    assert!(trusted.status.success(), "{}", text(&trusted));
    assert!(marker.exists());
}

/// Files under `dir` whose names end with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_ending(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            found.push(path);
        }
    }
    found
}

#[test]
fn sigusr1_during_a_hub_download_ends_the_run_within_10_s_with_75_and_no_partial_file() {
    let hub = Hub::new();
    let source = hub.add("test_resnet.r160_in1k", 5);
    let served = hub.dir.path().join("served/model.safetensors");
    std::fs::create_dir_all(served.parent().unwrap()).unwrap();
    std::fs::copy(&source, &served).unwrap();
    std::fs::remove_dir_all(hub.cache()).unwrap();
    let log = hub.dir.path().join("hub.log");
    // 20 kB/s: the download of the 1.8 MB file would take a minute and a half.
    let revision = "89abcdef0123456789abcdef0123456789abcdef";
    let server = FakeHub::serve_at("timm/test_resnet.r160_in1k", revision, &served, &log, Some(20_000));
    let mut train = hub.train("stopped", "hf-hub:timm/test_resnet.r160_in1k", &[]);
    train.env("HF_ENDPOINT", &server.endpoint).stdout(std::process::Stdio::piped());
    let mut child = train.stderr(std::process::Stdio::piped()).spawn().unwrap();
    // The download is under way once its partial blob is in the cache.
    let deadline = Instant::now() + Duration::from_secs(120);
    while files_ending(&hub.cache(), ".incomplete").is_empty() {
        assert!(Instant::now() < deadline, "the download never started: {}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signals the run this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) }, 0);
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(signalled.elapsed() < Duration::from_secs(10), "still running 10 s after the signal");
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(75), "{}", text(&output));
    assert!(text(&output).contains("stopped on request during set-up (the model export)"), "{}", text(&output));
    assert_eq!(files_ending(&hub.cache(), ".incomplete"), Vec::<PathBuf>::new(), "the partial download is removed");
    assert!(!hub.dir.path().join("runs/stopped").exists(), "the new run's directory is removed");
}
