//! A small synthetic training set and model, and `asl train` run on them.

use super::python::export_model;
use asl::data::sources::{write_synthetic, SynthConfig};
use asl::train::checkpoint::{read_checkpoint, TrainState};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub model: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with_images(96, 32)
    }

    /// Synthetic 32 px images of 12 classes, and test_resnet exported for them.
    pub fn with_images(train_images: usize, val_images: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = SynthConfig { train_images, val_images, image_size: 32, classes: 12, ..Default::default() };
        write_synthetic(&dir.path().join("data"), &config).unwrap();
        let model = dir.path().join("model/test_resnet.pt");
        export_model("test_resnet", 12, 32, &model);
        Self { dir, model }
    }

    pub fn runs(&self) -> PathBuf {
        self.dir.path().join("runs")
    }

    /// The overrides of configs/demo.yaml that train run `name` on this fixture.
    pub fn sets(&self, name: &str) -> Vec<String> {
        vec![
            format!("name={name}"),
            format!("model.path={}", self.model.display()),
            format!("data.path={}", self.dir.path().join("data").display()),
            "data.image_size=32".into(),
            "data.batch_size=16".into(),
            "device=cpu".into(),
            "train.log_every=1".into(),
        ]
    }

    pub fn command(&self, name: &str, extra: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_asl"));
        command.current_dir(env!("CARGO_MANIFEST_DIR")).args(["train", "--no-progress", "--runs"]).arg(self.runs());
        if !extra.contains(&"--resume") {
            command.args(["--config", "configs/demo.yaml"]);
            for s in &self.sets(name) {
                command.args(["--set", s]);
            }
        }
        command.args(extra);
        command
    }

    /// Overrides of configs/demo.yaml for a 2-epoch library run on the
    /// fixture, followed by `extra`.
    pub fn library_sets(&self, extra: &[&str]) -> Vec<String> {
        let mut sets = vec![
            format!("model.path={}", self.model.display()),
            format!("data.path={}", self.dir.path().join("data").display()),
            "data.image_size=32".into(),
            "data.batch_size=16".into(),
            "device=cpu".into(),
            "train.epochs=2".into(),
            "schedule.scheduled_epochs=2".into(),
        ];
        sets.extend(extra.iter().map(|s| s.to_string()));
        sets
    }

    pub fn run(&self, name: &str, extra: &[&str]) -> Output {
        self.command(name, extra).output().unwrap()
    }
}

pub fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

pub fn epoch_line(output: &Output, epoch: usize) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let prefix = format!("epoch {epoch:>3}  loss");
    let line =
        stdout.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no epoch {epoch} in:\n{stdout}"));
    // Drop the wall-clock figures (seconds, images/s, data wait) at the end.
    line.rsplit_once("  ").unwrap().0.to_string()
}

pub fn state(run: &Path) -> TrainState {
    read_checkpoint(&run.join("checkpoints/last")).unwrap().0
}

/// `asl validate --device cpu` of `checkpoint` on `data` with `extra` arguments; its JSON report.
pub fn validate_report(checkpoint: &Path, data: &Path, extra: &[&str]) -> serde_json::Value {
    let report = tempfile::NamedTempFile::new().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_asl"))
        .args(["validate", "--device", "cpu", "--model"])
        .arg(checkpoint)
        .arg("--data")
        .arg(data)
        .arg("--json")
        .arg(report.path())
        .args(extra)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_str(&std::fs::read_to_string(report.path()).unwrap()).unwrap()
}
