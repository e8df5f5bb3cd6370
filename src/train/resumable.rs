//! Whether a checkpoint can be continued with this config, plan and data.
//! At an epoch's end anything can change (a new epoch is laid out afresh);
//! in the middle of one, the rest of the epoch must line up with the
//! batches already trained: the keys that lay out an epoch, the number of
//! processes and the training split's files or shards must be as they
//! were, and each change is refused by name, with the checkpoint and epoch.

use super::checkpoint::{read_checkpoint, CheckpointError, TrainState};
use super::config::TrainConfig;
use super::error::{Result, TrainError};
use super::plan::{RunPlan, PLAN_FILE};
use crate::data::{SourceKind, SplitFingerprint};
use std::path::Path;

/// What continuing `checkpoint` changes that can go on (the plan's changes,
/// and the data's at an epoch boundary), as notes for the log; an error
/// for what cannot.
pub(super) fn check_resumable(
    config: &TrainConfig,
    plan: &RunPlan,
    data: &SplitFingerprint,
    checkpoint: &Path,
) -> Result<Vec<String>> {
    let (state, saved): (TrainState, TrainConfig) = read_checkpoint(checkpoint)?;
    let saved_plan = RunPlan::read(checkpoint)
        .map_err(|e| CheckpointError::Read { path: checkpoint.join(PLAN_FILE), message: e.to_string() })?;
    let mut notes = Vec::new();
    if let Some(before) = &saved_plan {
        let changes = plan.changes_from(before);
        if !changes.is_empty() {
            notes.push(format!(
                "the launch differs from checkpoint {}'s: {}",
                checkpoint.display(),
                changes.join(", ")
            ));
        }
    }
    let data_change = state.data.as_ref().and_then(|before| data.change_from(before));
    if state.batch_in_epoch == 0 {
        if let Some(change) = data_change {
            notes.push(format!("the training data changed since checkpoint {}: {change}", checkpoint.display()));
        }
        return Ok(notes);
    }
    let (epoch, batch) = (state.epoch + 1, state.batch_in_epoch);
    let world_before = saved_plan.map_or(state.world_size.max(1), |p| p.world_size);
    let before = layout(&saved, world_before);
    for (key, after) in layout(config, plan.world_size) {
        let before = before.iter().find(|(k, _)| *k == key).map_or_else(|| "unset".into(), |(_, v)| v.clone());
        if before != after {
            let checkpoint = checkpoint.to_path_buf();
            return Err(TrainError::MidEpochChange { key, before, after, checkpoint, epoch, batch });
        }
    }
    match data_change {
        Some(change) => Err(TrainError::DataChanged { checkpoint: checkpoint.to_path_buf(), epoch, batch, change }),
        None => Ok(notes),
    }
}

/// The keys that lay out an epoch's batches, with their values.
fn layout(config: &TrainConfig, world: usize) -> Vec<(&'static str, String)> {
    let mut keys = vec![
        ("data.source", format!("{:?}", config.data.source).to_lowercase()),
        ("data.batch_size", config.data.batch_size.to_string()),
        ("data.drop_last", config.data.drop_last.to_string()),
        ("train.grad_accumulation", config.train.grad_accumulation.to_string()),
        ("train.max_steps_per_epoch", format!("{:?}", config.train.max_steps_per_epoch)),
        ("seed", config.seed.to_string()),
        ("the number of processes", world.to_string()),
    ];
    if config.data.source == SourceKind::Shards {
        keys.push(("data.readers", config.data.readers.to_string()));
        keys.push(("data.shuffle_buffer", config.data.shuffle_buffer.to_string()));
    }
    keys
}
