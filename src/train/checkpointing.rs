//! The checkpointing stage: `checkpoints/last` and `best`, written by rank
//! 0 while it holds the run's lock, with the plan beside the config. Each
//! part written counts as progress for the peers' watchers (a large model
//! on slow storage is not a stall), and each is a point where tests crash
//! the writer (`faults.rs`).

use super::checkpoint::{link_checkpoint, write_checkpoint, CheckpointParts, CheckpointPhase};
use super::data_parallel::DataParallel;
use super::error::{Result, TrainError};
use super::faults::{FaultPlan, FaultPoint};
use super::lock::RunLock;
use super::plan::RunPlan;
use crate::data::stream::StreamPosition;
use crate::distributed::ProcessGroup;
use std::path::{Path, PathBuf};
use tch::Device;

pub(super) struct Checkpointer {
    run_dir: PathBuf,
    /// The run directory's lock, held while the trainer lives (rank 0's only).
    _lock: Option<RunLock>,
    pub plan: RunPlan,
    faults: FaultPlan,
    /// Checkpoints this process has written, `best` links included.
    written: usize,
}

impl Checkpointer {
    pub fn new(run_dir: PathBuf, lock: Option<RunLock>, plan: RunPlan, faults: FaultPlan) -> Self {
        Self { run_dir, _lock: lock, plan, faults, written: 0 }
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.run_dir.join("checkpoints").join(name)
    }

    /// Writes `checkpoints/<name>` from `parts` with this run's plan and
    /// returns its path. `step`: the optimizer step, for the heartbeat.
    pub fn write(
        &mut self,
        name: &str,
        parts: &CheckpointParts,
        step: u64,
        group: Option<&ProcessGroup>,
    ) -> Result<PathBuf> {
        let dir = self.dir(name);
        self.written += 1;
        let (nth, faults) = (self.written, &self.faults);
        write_checkpoint(&dir, parts, &self.plan, &mut |phase| on_phase(faults, nth, phase, step, group))?;
        Ok(dir)
    }

    /// `checkpoints/best` as hard links to `last`'s files.
    pub fn link_best(&mut self, last: &Path, step: u64, group: Option<&ProcessGroup>) -> Result<PathBuf> {
        let best = self.dir("best");
        self.written += 1;
        let (nth, faults) = (self.written, &self.faults);
        link_checkpoint(last, &best, &mut |phase| on_phase(faults, nth, phase, step, group))?;
        Ok(best)
    }
}

fn on_phase(faults: &FaultPlan, nth: usize, phase: CheckpointPhase, step: u64, group: Option<&ProcessGroup>) {
    if let Some(group) = group {
        group.record_progress(Some(step));
    }
    faults.strike(
        FaultPoint::Checkpoint { nth, phase },
        group.map_or(0, ProcessGroup::rank),
        group.map(|g| g.liveness()),
    );
}

/// Every rank's stream position, on rank 0, when training from shards
/// stopped mid-epoch (`own` is this rank's); nothing otherwise, since an
/// epoch starts afresh.
pub(super) fn gather_positions(
    own: Option<&StreamPosition>,
    mid_epoch: bool,
    parallel: Option<&DataParallel>,
    device: Device,
) -> Result<Vec<StreamPosition>> {
    let Some(own) = own.filter(|_| mid_epoch) else { return Ok(Vec::new()) };
    let Some(parallel) = parallel else {
        return Ok(vec![own.clone()]);
    };
    let rank = parallel.group().rank();
    let bytes = serde_json::to_vec(own).map_err(|e| TrainError::StreamPosition(format!("rank {rank}: {e}")))?;
    let shares = parallel.group().gather_bytes(&bytes, device)?.unwrap_or_default();
    shares
        .iter()
        .enumerate()
        .map(|(r, share)| {
            serde_json::from_slice(share).map_err(|e| TrainError::StreamPosition(format!("rank {r}: {e}")))
        })
        .collect()
}
