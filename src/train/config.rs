//! A training run's whole config: the sections of the modules it drives,
//! composed, with the `train` section of the loop itself. The defaults are
//! the paper's COCO recipe (TResNet-L at 448, ASL 4/0/0.05, Adam with L2
//! 1e-4, OneCycle to 2e-4, EMA 0.9997, 40 of 80 scheduled epochs). Recipes
//! in `configs/` state only what differs; `asl train --print-config` shows
//! every key, resolved and documented.

use super::optimizer::OptimizerConfig;
use super::schedule::OneCycleConfig;
use crate::config::{at_least_one, in_closed_unit, key_error, read_yaml, resolve, Result, Validate};
use crate::data::DataConfig;
use crate::distributed::DistributedConfig;
use crate::loss::LossConfig;
use crate::model::ModelConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Everything a run is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Run name: logs and checkpoints go to runs/<name>/.
    pub name: String,
    /// Seeds the model export, shuffling, augmentation and the per-batch RNG.
    pub seed: u64,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    pub device: String,
    /// The network.
    pub model: ModelConfig,
    /// The images and their labels.
    pub data: DataConfig,
    /// The loss.
    pub loss: LossConfig,
    /// Adam with L2 weight decay (the reference's), or AdamW.
    pub optimizer: OptimizerConfig,
    /// OneCycle learning rate and β1, stepped every optimizer step.
    pub schedule: OneCycleConfig,
    /// The training loop.
    pub train: LoopConfig,
    /// Several processes (used when launched by torchrun or srun).
    pub distributed: DistributedConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            name: "run".into(),
            seed: 0,
            device: "auto".into(),
            model: ModelConfig::default(),
            data: DataConfig::default(),
            loss: LossConfig::default(),
            optimizer: OptimizerConfig::default(),
            schedule: OneCycleConfig::default(),
            train: LoopConfig::default(),
            distributed: DistributedConfig::default(),
        }
    }
}

/// A speed-up that pays on a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Switch {
    /// On for CUDA devices, off on the CPU.
    Auto,
    /// Off everywhere.
    Off,
    /// On everywhere, the CPU included.
    On,
}

impl Switch {
    pub fn enabled(self, device: tch::Device) -> bool {
        match self {
            Switch::Auto => device.is_cuda(),
            Switch::On => true,
            Switch::Off => false,
        }
    }
}

/// The `train` section: epochs, accumulation, precision, EMA and logging.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LoopConfig {
    /// Epochs to run, at most schedule.scheduled_epochs (the reference stops after 40 of 80).
    pub epochs: usize,
    /// Batches per optimizer step.
    pub grad_accumulation: usize,
    /// auto: fp16 autocast and grad scaling on CUDA, fp32 on CPU. off: always fp32. on: grad scaling
    /// everywhere (CPU has no fp16 autocast, so there it is fp32 with a grad scaler).
    pub amp: Switch,
    /// Channels-last (NHWC) weights and inputs, the layout cuDNN's fastest convolutions want. oneDNN's
    /// CPU convolutions are faster in it too (fewer layout reorders), so the default is on. auto: on CUDA.
    pub channels_last: Switch,
    /// TF32 for cuDNN and float32 matrix products on CUDA (as timm): about 10 significant bits in their
    /// inner products, much faster on Ampere and later. No effect on CPU.
    pub tf32: bool,
    /// Stop with an error after this many optimizer steps in a row skipped by the grad scaler for
    /// non-finite gradients: the run has diverged.
    pub max_skipped_steps: usize,
    /// Model EMA decay per optimizer step (0.9997 in the reference; lower for short runs).
    pub ema_decay: f64,
    /// TensorBoard step scalars every this many optimizer steps.
    pub log_every: usize,
    /// Threshold of CP/CR/CF1/OP/OR/OF1 in validation.
    pub threshold: f64,
    /// Cap on optimizer steps per epoch, for smoke runs; null runs whole epochs.
    pub max_steps_per_epoch: Option<usize>,
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            epochs: 40,
            grad_accumulation: 1,
            amp: Switch::Auto,
            channels_last: Switch::On,
            tf32: true,
            max_skipped_steps: 50,
            ema_decay: 0.9997,
            log_every: 50,
            threshold: 0.8,
            max_steps_per_epoch: None,
        }
    }
}

impl TrainConfig {
    /// Reads the recipe at `path` and applies `overrides` (`key.path=value`,
    /// the value parsed as YAML) over the defaults.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        resolve(read_yaml(path)?, overrides)
    }

    /// As [`load`](Self::load), from YAML text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        resolve(crate::config::parse_yaml(text, origin)?, overrides)
    }

    /// Every key, resolved.
    pub fn to_yaml(&self) -> String {
        crate::config::to_yaml(self)
    }

    /// Every key, resolved, each with its documentation.
    pub fn to_annotated_yaml(&self) -> String {
        crate::config::annotated_yaml(self)
    }
}

impl Validate for TrainConfig {
    fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.data.validate()?;
        self.loss.validate()?;
        self.optimizer.validate()?;
        self.schedule.validate()?;
        self.train.validate()?;
        at_least_one("distributed.heartbeat_timeout_s", self.distributed.heartbeat_timeout_s as usize)?;
        if self.model.timm.starts_with("tresnet") && !self.data.image_size.is_multiple_of(32) {
            let message = format!("{} is not a multiple of 32, which TResNet needs", self.data.image_size);
            return Err(key_error("data.image_size", message));
        }
        if self.train.epochs > self.schedule.scheduled_epochs {
            let message =
                format!("{} exceeds schedule.scheduled_epochs = {}", self.train.epochs, self.schedule.scheduled_epochs);
            return Err(key_error("train.epochs", message));
        }
        Ok(())
    }
}

impl Validate for LoopConfig {
    fn validate(&self) -> Result<()> {
        at_least_one("train.epochs", self.epochs)?;
        at_least_one("train.grad_accumulation", self.grad_accumulation)?;
        at_least_one("train.log_every", self.log_every)?;
        at_least_one("train.max_skipped_steps", self.max_skipped_steps)?;
        in_closed_unit("train.ema_decay", self.ema_decay)?;
        in_closed_unit("train.threshold", self.threshold)
    }
}
