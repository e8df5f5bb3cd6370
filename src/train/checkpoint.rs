//! Checkpoint directories: model and EMA TorchScript files, optimizer
//! moments, and `state.json` (epoch, loader position, schedule step, best
//! mAP, adaptive γ−, grad-scaler state, history) plus the resolved config.
//! A directory is written under a temporary name and renamed into place,
//! so the previous good checkpoint survives a crash at any point.

use super::amp::GradScalerState;
use super::config::TrainConfig;
use super::Adam;
use crate::loss::AdaptiveAsymmetry;
use crate::model::{ModelEma, Network};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use crate::model::{EMA_FILE, MODEL_FILE};
pub const OPTIMIZER_FILE: &str = "optimizer.ot";
pub const STATE_FILE: &str = "state.json";
pub const CONFIG_FILE: &str = "config.yaml";

/// One finished epoch, for the end-of-run table and resumed histories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub map: Option<f64>,
    pub map_ema: Option<f64>,
    pub cf1: f64,
    pub of1: f64,
    pub delta_p: Option<f64>,
    pub gamma_neg: f64,
    pub seconds: f64,
    /// Training throughput over the epoch's steps (validation and checkpoints excluded).
    #[serde(default)]
    pub images_per_second: f64,
    /// Share of those steps' time spent waiting for the loader: near 0 means the model, not the data, sets the pace.
    #[serde(default)]
    pub data_wait_fraction: f64,
}

/// Where training stands; everything needed besides the tensors.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TrainState {
    /// The epoch to run next (0-based).
    pub epoch: usize,
    /// The batch of `epoch` to run next (non-zero after an interruption).
    pub batch_in_epoch: usize,
    /// Optimizer steps taken: the schedule's position.
    pub optimizer_step: usize,
    /// Sum and count of the losses of `epoch` so far (for an exact mean after resume).
    pub epoch_loss_sum: f64,
    pub epoch_loss_count: usize,
    pub best_map: Option<f64>,
    pub best_epoch: Option<usize>,
    pub adaptive: Option<AdaptiveAsymmetry>,
    pub grad_scaler: Option<GradScalerState>,
    pub history: Vec<EpochRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write checkpoint {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("cannot read checkpoint {path}: {message}")]
    Read { path: PathBuf, message: String },
}

/// The tensors and state of a run, borrowed for writing.
pub struct CheckpointParts<'a> {
    pub network: &'a Network,
    pub ema: &'a ModelEma,
    pub optimizer: &'a Adam,
    pub state: &'a TrainState,
    pub config: &'a TrainConfig,
}

pub fn write_checkpoint(dir: &Path, parts: &CheckpointParts) -> Result<(), CheckpointError> {
    let error = |message: String| CheckpointError::Write { path: dir.to_path_buf(), message };
    let tmp = sibling(dir, "tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| error(e.to_string()))?;
    parts.network.save(&tmp.join(MODEL_FILE)).map_err(|e| error(e.to_string()))?;
    parts.ema.save(&tmp.join(EMA_FILE)).map_err(|e| error(e.to_string()))?;
    parts.optimizer.save(&tmp.join(OPTIMIZER_FILE)).map_err(|e| error(e.to_string()))?;
    let state = serde_json::to_string_pretty(parts.state).map_err(|e| error(e.to_string()))?;
    std::fs::write(tmp.join(STATE_FILE), state).map_err(|e| error(e.to_string()))?;
    std::fs::write(tmp.join(CONFIG_FILE), parts.config.to_yaml()).map_err(|e| error(e.to_string()))?;
    let old = sibling(dir, "old");
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| error(e.to_string()))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| error(e.to_string()))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Reads `state.json` and `config.yaml` of a checkpoint directory.
pub fn read_checkpoint(dir: &Path) -> Result<(TrainState, TrainConfig), CheckpointError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| CheckpointError::Read { path, message: e.to_string() })
    };
    let error = |name: &str, message: String| CheckpointError::Read { path: dir.join(name), message };
    let state = serde_json::from_str(&read(STATE_FILE)?).map_err(|e| error(STATE_FILE, e.to_string()))?;
    let config = TrainConfig::from_yaml(&read(CONFIG_FILE)?, &dir.join(CONFIG_FILE).display().to_string(), &[])
        .map_err(|e| error(CONFIG_FILE, e.to_string()))?;
    Ok((state, config))
}

/// `--resume` accepts a checkpoint directory or a run directory (its `checkpoints/last`).
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf, CheckpointError> {
    for candidate in [path.to_path_buf(), path.join("checkpoints").join("last"), sibling(path, "old")] {
        if candidate.join(STATE_FILE).is_file() {
            return Ok(candidate);
        }
    }
    Err(CheckpointError::Read {
        path: path.to_path_buf(),
        message: format!("no {STATE_FILE} here or in checkpoints/last"),
    })
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_from_before_the_speed_figures_still_load() {
        let old = r#"{"epoch": 3, "train_loss": 1.5, "map": 40.0, "map_ema": null, "cf1": 1.0,
                      "of1": 2.0, "delta_p": 0.1, "gamma_neg": 4.0, "seconds": 12.0}"#;
        let record: EpochRecord = serde_json::from_str(old).unwrap();
        assert_eq!((record.epoch, record.images_per_second, record.data_wait_fraction), (3, 0.0, 0.0));
    }
}
