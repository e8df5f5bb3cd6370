//! The typed training configuration: one YAML file per recipe in
//! `configs/`, plus `--set key=value` overrides, checked once at start-up.
//! Every error names the key path at fault (`loss.gamma_neg`, …).

use crate::data::sources::{CrowdPolicy, DifficultPolicy};
use crate::data::transform::AugmentConfig;
use crate::loss::{AdaptiveAsymmetryConfig, Reduction, SingleLabelConfig};
use crate::train::OptimizerConfig;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path} is not valid YAML: {message}")]
    Yaml { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
    #[error("--set {0}: expected key=value")]
    Override(String),
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

fn key_error(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key { key: key.to_string(), message: message.into() }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Run name: logs and checkpoints go to `runs/<name>/`.
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    /// `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    pub model: ModelSection,
    pub data: DataSection,
    pub loss: LossSection,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleSection,
    pub train: TrainSection,
}

fn default_device() -> String {
    "auto".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A TorchScript file exported by models/export.py. When absent, `timm`
    /// is exported with random weights (or `weights`) before training.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// timm model name to export when `path` is absent.
    pub timm: String,
    /// Local pretrained weights for that export.
    #[serde(default)]
    pub weights: Option<PathBuf>,
    /// Parameter-name prefixes not to train.
    #[serde(default)]
    pub freeze: Vec<String>,
    /// Seed of the classifier re-initialisation when the class count changes.
    #[serde(default)]
    pub head_seed: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// COCO layout (also what `asl synth` writes).
    Coco,
    /// `VOCdevkit/VOC2007` layout.
    Voc,
    /// CSV/TSV list (`path,labels[,unknown]`).
    List,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub source: SourceKind,
    /// Dataset root (COCO, VOC) or list file; usually given as `--data`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// For lists: the validation list file.
    #[serde(default)]
    pub val_path: Option<PathBuf>,
    #[serde(default = "default_train_split")]
    pub train_split: String,
    #[serde(default = "default_val_split")]
    pub val_split: String,
    pub image_size: u32,
    pub batch_size: usize,
    /// Validation batch size; defaults to `batch_size`.
    #[serde(default)]
    pub val_batch_size: Option<usize>,
    #[serde(default)]
    pub threads: usize,
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    #[serde(default)]
    pub strict: bool,
    #[serde(default)]
    pub drop_last: bool,
    #[serde(default)]
    pub drop_unannotated: bool,
    #[serde(default)]
    pub crowd: CrowdPolicy,
    #[serde(default)]
    pub difficult: DifficultPolicy,
    #[serde(default = "default_separator")]
    pub label_separator: char,
    #[serde(default)]
    pub augment: AugmentConfig,
}

fn default_train_split() -> String {
    "train".into()
}
fn default_val_split() -> String {
    "val".into()
}
fn default_prefetch() -> usize {
    2
}
fn default_separator() -> char {
    ' '
}

/// Which member of the loss family trains the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LossSection {
    /// The multi-label ASL family (BCE, focal, AF, PS, ASL), optionally adaptive.
    Asymmetric(AsymmetricSection),
    /// `ASLSingleLabel` for single-label data: each image has exactly one positive.
    SingleLabel(SingleLabelConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsymmetricSection {
    pub gamma_neg: f64,
    pub gamma_pos: f64,
    pub clip: f64,
    #[serde(default = "default_eps")]
    pub eps: f64,
    #[serde(default = "default_true")]
    pub detach_focusing: bool,
    #[serde(default)]
    pub reduction: Reduction,
    /// γ− controller (paper §3.4); `null` keeps γ− fixed.
    #[serde(default)]
    pub adaptive: Option<AdaptiveAsymmetryConfig>,
    /// Weight of unknown labels (partial annotations), treated as negatives.
    #[serde(default = "default_unknown_weight")]
    pub unknown_weight: f64,
}

fn default_eps() -> f64 {
    1e-8
}
fn default_true() -> bool {
    true
}
fn default_unknown_weight() -> f64 {
    1.0
}

/// PyTorch's OneCycleLR (cosine), stepped every optimizer step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    pub max_lr: f64,
    #[serde(default = "default_pct_start")]
    pub pct_start: f64,
    #[serde(default = "default_div_factor")]
    pub div_factor: f64,
    #[serde(default = "default_final_div_factor")]
    pub final_div_factor: f64,
    #[serde(default = "default_beta1_min")]
    pub beta1_min: f64,
    #[serde(default = "default_beta1_max")]
    pub beta1_max: f64,
    /// Epochs the schedule spans; training may stop earlier (`train.epochs`).
    pub scheduled_epochs: usize,
}

fn default_pct_start() -> f64 {
    0.2
}
fn default_div_factor() -> f64 {
    25.0
}
fn default_final_div_factor() -> f64 {
    1e4
}
fn default_beta1_min() -> f64 {
    0.85
}
fn default_beta1_max() -> f64 {
    0.95
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmpMode {
    /// fp16 autocast and grad scaling on CUDA, off on CPU.
    Auto,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Epochs to run (the reference stops after 40 of 80 scheduled).
    pub epochs: usize,
    #[serde(default = "default_accumulation")]
    pub grad_accumulation: usize,
    #[serde(default = "default_amp")]
    pub amp: AmpMode,
    #[serde(default = "default_ema_decay")]
    pub ema_decay: f64,
    /// TensorBoard step scalars every this many optimizer steps.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Threshold of CP/CR/CF1/OP/OR/OF1 in validation.
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// Cap on steps per epoch, for smoke runs; `null` runs whole epochs.
    #[serde(default)]
    pub max_steps_per_epoch: Option<usize>,
}

fn default_accumulation() -> usize {
    1
}
fn default_amp() -> AmpMode {
    AmpMode::Auto
}
fn default_ema_decay() -> f64 {
    0.9997
}
fn default_log_every() -> usize {
    10
}
fn default_threshold() -> f32 {
    0.8
}

impl TrainConfig {
    /// Reads `path`, applies `overrides` (`key.path=value`, value parsed
    /// as YAML), deserializes and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::from_yaml(&text, &path.display().to_string(), overrides)
    }

    pub fn from_yaml(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let mut value: Value = serde_yaml::from_str(text)
            .map_err(|e| ConfigError::Yaml { path: origin.to_string(), message: e.to_string() })?;
        for assignment in overrides {
            apply_override(&mut value, assignment)?;
        }
        let config: Self = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            key_error(if key == "." { "(top level)" } else { &key }, e.inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a TrainConfig always serializes")
    }

    /// Checks values serde cannot: ranges and cross-field rules.
    pub fn validate(&self) -> Result<()> {
        let positive = |key: &str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(key_error(key, format!("must be > 0, got {v}")))
            }
        };
        let unit = |key: &str, v: f64| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(key_error(key, format!("must satisfy 0 <= value < 1, got {v}")))
            }
        };
        let d = &self.data;
        if d.image_size == 0 || (self.model.timm.starts_with("tresnet") && d.image_size % 32 != 0) {
            return Err(key_error(
                "data.image_size",
                format!("{} is not a multiple of 32, which TResNet needs", d.image_size),
            ));
        }
        for (key, v) in [
            ("data.batch_size", d.batch_size),
            ("train.epochs", self.train.epochs),
            ("train.grad_accumulation", self.train.grad_accumulation),
            ("train.log_every", self.train.log_every),
            ("schedule.scheduled_epochs", self.schedule.scheduled_epochs),
        ] {
            if v == 0 {
                return Err(key_error(key, "must be at least 1"));
            }
        }
        if self.train.epochs > self.schedule.scheduled_epochs {
            return Err(key_error(
                "train.epochs",
                format!("{} exceeds schedule.scheduled_epochs = {}", self.train.epochs, self.schedule.scheduled_epochs),
            ));
        }
        if let LossSection::Asymmetric(loss) = &self.loss {
            for (key, v) in [("loss.gamma_neg", loss.gamma_neg), ("loss.gamma_pos", loss.gamma_pos)] {
                if !(v >= 0.0 && v.is_finite()) {
                    return Err(key_error(key, format!("must be >= 0, got {v}")));
                }
            }
            unit("loss.clip", loss.clip)?;
            unit("loss.eps", loss.eps)?;
            if !(0.0..=1.0).contains(&loss.unknown_weight) {
                return Err(key_error(
                    "loss.unknown_weight",
                    format!("must lie in [0, 1], got {}", loss.unknown_weight),
                ));
            }
        }
        let s = &self.schedule;
        positive("schedule.max_lr", s.max_lr)?;
        positive("schedule.div_factor", s.div_factor)?;
        positive("schedule.final_div_factor", s.final_div_factor)?;
        if !(s.pct_start > 0.0 && s.pct_start < 1.0) {
            return Err(key_error("schedule.pct_start", format!("must lie in (0, 1), got {}", s.pct_start)));
        }
        unit("schedule.beta1_min", s.beta1_min)?;
        unit("schedule.beta1_max", s.beta1_max)?;
        unit("optimizer.beta2", self.optimizer.beta2)?;
        if self.optimizer.weight_decay.is_nan() || self.optimizer.weight_decay < 0.0 {
            return Err(key_error(
                "optimizer.weight_decay",
                format!("must be >= 0, got {}", self.optimizer.weight_decay),
            ));
        }
        if !(0.0..=1.0).contains(&self.train.ema_decay) {
            return Err(key_error("train.ema_decay", format!("must lie in [0, 1], got {}", self.train.ema_decay)));
        }
        if !(0.0..=1.0).contains(&self.train.threshold) {
            return Err(key_error("train.threshold", format!("must lie in [0, 1], got {}", self.train.threshold)));
        }
        Ok(())
    }
}

/// Sets `key.path` in `root` to `value` parsed as YAML.
fn apply_override(root: &mut Value, assignment: &str) -> Result<()> {
    let (key, raw) = assignment.split_once('=').ok_or_else(|| ConfigError::Override(assignment.to_string()))?;
    let parsed: Value = serde_yaml::from_str(raw).map_err(|e| key_error(key, format!("cannot parse `{raw}`: {e}")))?;
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let mapping = node.as_mapping_mut().ok_or_else(|| key_error(&parts[..i].join("."), "is not a mapping"))?;
        let entry = Value::String(part.to_string());
        if i + 1 == parts.len() {
            mapping.insert(entry, parsed);
            return Ok(());
        }
        node = mapping.entry(entry).or_insert_with(|| Value::Mapping(Default::default()));
    }
    Ok(())
}
