//! Checkpoint directories: model and EMA TorchScript files, optimizer
//! moments, and `state.json` (epoch, loader position, schedule step, best
//! mAP, adaptive γ−, grad-scaler state, history) plus the config and the
//! launch's plan.
//! A directory is written under a temporary name and renamed into place,
//! so the previous good checkpoint survives a crash at any point.

use super::amp::GradScalerState;
use super::config::TrainConfig;
use super::plan::{RunPlan, PLAN_FILE};
use super::Adam;
use crate::atomic::{sync_dir, sync_file, write_bytes_atomically};
use crate::data::stream::StreamPosition;
use crate::data::SplitFingerprint;
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
    /// Unreadable images left out of the epoch's training and of its validation.
    #[serde(default)]
    pub skipped_train: usize,
    #[serde(default)]
    pub skipped_val: usize,
    /// Optimizer steps the AMP grad scaler has skipped in the run so far.
    #[serde(default)]
    pub skipped_steps: usize,
    /// Single-label runs: the model's top-1, top-5 and macro-F1 (× 100), and the EMA's top-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_label: Option<SingleLabelRecord>,
}

/// A single-label epoch's metrics, × 100.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SingleLabelRecord {
    pub top1: f64,
    pub top5: f64,
    pub macro_f1: f64,
    pub top1_ema: Option<f64>,
}

impl EpochRecord {
    /// The score the best checkpoint is chosen by, the better of the model's
    /// and the EMA's: top-1 for a single-label run, else mAP.
    pub fn headline(&self) -> Option<f64> {
        match &self.single_label {
            Some(single) => Some(single.top1_ema.map_or(single.top1, |ema| ema.max(single.top1))),
            None => self.map.into_iter().chain(self.map_ema).reduce(f64::max),
        }
    }
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
    /// Unreadable training images of `epoch` so far.
    #[serde(default)]
    pub epoch_skipped: usize,
    /// Optimizer steps skipped by the grad scaler: in all, and in a row up to now.
    #[serde(default)]
    pub skipped_steps: usize,
    #[serde(default)]
    pub skipped_in_a_row: usize,
    /// Processes that trained: a run stopped mid-epoch resumes only with as many.
    #[serde(default)]
    pub world_size: usize,
    /// Training from shards, stopped mid-epoch: where each rank's readers
    /// and shuffle buffer stood, by rank.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stream: Vec<StreamPosition>,
    /// The training split the run read: a mid-epoch resume needs the same files or shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<SplitFingerprint>,
    /// The best epoch's score: its mAP, or its top-1 for a single-label run ([`EpochRecord::headline`]).
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

/// How far the writing of a checkpoint has got, told to the writer's
/// caller after each part: the liveness a long write shows its peers, and
/// the points where tests crash it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointPhase {
    /// The temporary directory exists, empty.
    Started,
    Model,
    Ema,
    Optimizer,
    State,
    Config,
    /// The temporary directory is complete and synced; nothing renamed yet.
    Synced,
    /// The previous checkpoint moved aside (`last.old`), the new one not yet in place.
    Renamed,
    /// The new checkpoint is in place and durable.
    Published,
}

impl CheckpointPhase {
    pub const NAMES: [&'static str; 9] =
        ["started", "model", "ema", "optimizer", "state", "config", "synced", "renamed", "published"];
    const ALL: [CheckpointPhase; 9] = [
        Self::Started,
        Self::Model,
        Self::Ema,
        Self::Optimizer,
        Self::State,
        Self::Config,
        Self::Synced,
        Self::Renamed,
        Self::Published,
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES.iter().position(|n| *n == name).map(|i| Self::ALL[i])
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|p| *p == self).expect("every phase is listed")]
    }
}

/// Writes a checkpoint into `dir` (`…/checkpoints/last`): every file into
/// `last.tmp`, each fsynced, then `last` is swapped for it by two renames,
/// each made durable. A crash at any point leaves either the new
/// checkpoint, the previous one at `last`, or (between the two renames)
/// the previous one at `last.old`, which [`resolve_checkpoint`] finds.
/// The caller holds the run's [`RunLock`](super::RunLock), so no other
/// process writes the same temporary directory.
pub fn write_checkpoint(
    dir: &Path,
    parts: &CheckpointParts,
    plan: &RunPlan,
    on_phase: &mut dyn FnMut(CheckpointPhase),
) -> Result<(), CheckpointError> {
    let error = |e: &dyn std::fmt::Display| CheckpointError::Write { path: dir.to_path_buf(), message: e.to_string() };
    let tmp = fresh_sibling(dir, "tmp").map_err(|e| error(&e))?;
    on_phase(CheckpointPhase::Started);
    parts.network.save(&tmp.join(MODEL_FILE)).map_err(|e| error(&e))?;
    on_phase(CheckpointPhase::Model);
    parts.ema.save(&tmp.join(EMA_FILE)).map_err(|e| error(&e))?;
    on_phase(CheckpointPhase::Ema);
    parts.optimizer.save(&tmp.join(OPTIMIZER_FILE)).map_err(|e| error(&e))?;
    sync_file(&tmp.join(OPTIMIZER_FILE)).map_err(|e| error(&e))?;
    on_phase(CheckpointPhase::Optimizer);
    let state = serde_json::to_string_pretty(parts.state).map_err(|e| error(&e))?;
    write_bytes_atomically(&tmp.join(STATE_FILE), state.as_bytes()).map_err(|e| error(&e))?;
    on_phase(CheckpointPhase::State);
    write_bytes_atomically(&tmp.join(CONFIG_FILE), parts.config.to_yaml().as_bytes()).map_err(|e| error(&e))?;
    write_bytes_atomically(&tmp.join(PLAN_FILE), plan.to_json().as_bytes()).map_err(|e| error(&e))?;
    on_phase(CheckpointPhase::Config);
    publish(&tmp, dir, on_phase).map_err(|e| error(&e))
}

/// Makes `to` (`…/checkpoints/best`) a durable copy of the checkpoint
/// `from`, by hard links where the file system has them: the files of a
/// checkpoint never change once written, so both names can share them and
/// the model is not written twice. Falls back to copying.
pub fn link_checkpoint(
    from: &Path,
    to: &Path,
    on_phase: &mut dyn FnMut(CheckpointPhase),
) -> Result<(), CheckpointError> {
    let error = |e: &dyn std::fmt::Display| CheckpointError::Write { path: to.to_path_buf(), message: e.to_string() };
    let tmp = fresh_sibling(to, "tmp").map_err(|e| error(&e))?;
    for entry in std::fs::read_dir(from).map_err(|e| error(&e))? {
        let source = entry.map_err(|e| error(&e))?.path();
        let target = tmp.join(source.file_name().unwrap_or_default());
        if std::fs::hard_link(&source, &target).is_err() {
            std::fs::copy(&source, &target).map_err(|e| error(&e))?;
            sync_file(&target).map_err(|e| error(&e))?;
        }
    }
    publish(&tmp, to, on_phase).map_err(|e| error(&e))
}

/// An empty `<dir>.<suffix>` beside `dir`, replacing a stale one.
fn fresh_sibling(dir: &Path, suffix: &str) -> std::io::Result<PathBuf> {
    let tmp = sibling(dir, suffix);
    remove_if_present(&tmp)?;
    std::fs::create_dir_all(&tmp)?;
    Ok(tmp)
}

/// Replaces `dir` by the complete directory `tmp`, durably.
fn publish(tmp: &Path, dir: &Path, on_phase: &mut dyn FnMut(CheckpointPhase)) -> std::io::Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    sync_dir(tmp)?;
    on_phase(CheckpointPhase::Synced);
    let old = sibling(dir, "old");
    remove_if_present(&old)?;
    if dir.exists() {
        std::fs::rename(dir, &old)?;
        on_phase(CheckpointPhase::Renamed);
    }
    std::fs::rename(tmp, dir)?;
    sync_dir(parent)?;
    remove_if_present(&old)?;
    sync_dir(parent)?;
    on_phase(CheckpointPhase::Published);
    Ok(())
}

fn remove_if_present(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
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

/// `--resume` accepts a run directory (its `checkpoints/last`) or a
/// checkpoint directory. After a crash between the two renames of
/// [`write_checkpoint`], the previous checkpoint is at `last.old`.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf, CheckpointError> {
    let last = path.join("checkpoints").join("last");
    let candidates = [path.to_path_buf(), sibling(&last, "old"), last, sibling(path, "old")];
    let found = [&candidates[0], &candidates[2], &candidates[1], &candidates[3]]
        .into_iter()
        .find(|c| c.join(STATE_FILE).is_file());
    found.cloned().ok_or_else(|| CheckpointError::Read {
        path: path.to_path_buf(),
        message: format!("no {STATE_FILE} here, in checkpoints/last or in checkpoints/last.old"),
    })
}

/// The run directory a checkpoint belongs to: `<run>/checkpoints/<name>`.
pub fn run_dir_of(checkpoint: &Path) -> Result<PathBuf, CheckpointError> {
    let checkpoint = std::path::absolute(checkpoint)
        .map_err(|e| CheckpointError::Read { path: checkpoint.to_path_buf(), message: e.to_string() })?;
    let parent = checkpoint.parent().filter(|p| p.file_name().is_some_and(|n| n == "checkpoints"));
    parent.and_then(Path::parent).map(Path::to_path_buf).ok_or_else(|| CheckpointError::Read {
        path: checkpoint.clone(),
        message: "not inside a run directory (<run>/checkpoints/<name>), so there is no run to continue; \
                  start a new run from its model with model.path"
            .into(),
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
    fn phases_are_named_both_ways() {
        for name in CheckpointPhase::NAMES {
            assert_eq!(CheckpointPhase::from_name(name).unwrap().name(), name);
        }
        assert_eq!(CheckpointPhase::from_name("later"), None);
    }

    #[test]
    fn records_from_before_the_speed_figures_still_load() {
        let old = r#"{"epoch": 3, "train_loss": 1.5, "map": 40.0, "map_ema": null, "cf1": 1.0,
                      "of1": 2.0, "delta_p": 0.1, "gamma_neg": 4.0, "seconds": 12.0}"#;
        let record: EpochRecord = serde_json::from_str(old).unwrap();
        assert_eq!((record.epoch, record.images_per_second, record.data_wait_fraction), (3, 0.0, 0.0));
    }
}
