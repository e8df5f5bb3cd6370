//! A fresh network exported once per node. Each node's first process (its
//! local rank 0) runs the exporter while the node's others wait: into the
//! run's `init/` on rank 0's node, into a private scratch directory
//! (`mkdtemp`, mode 0700) on every other node, whose path the node's
//! processes find through the store. Nodes are the launcher's (torchrun's
//! `GROUP_RANK`, Slurm's `SLURM_NODEID`), so any placement of ranks on
//! nodes, cyclic or uneven, exports once per node and loads its own node's
//! file. Rank 0's weights replace the others' by broadcast anyway.

use super::error::Result;
use super::faults::{FaultPlan, FaultPoint, SetupPhase};
use super::observer::{Observer, TrainEvent};
use super::plan::RunPlan;
use crate::data::SplitData;
use crate::distributed::ProcessGroup;
use crate::model::{export_timm, ExportWatch, ModelConfig, Network, TimmExport};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use tch::{Device, Kind, Tensor};

/// Where a fresh network is made: the run, this process's place in a
/// launch (its plan), its device, and what watches the export.
pub(super) struct Placement<'a> {
    pub run_dir: &'a Path,
    pub plan: &'a RunPlan,
    pub group: Option<&'a ProcessGroup>,
    pub device: Device,
    /// Let the export show its progress (rank 0 only).
    pub progress: bool,
    pub stop: &'a AtomicBool,
    pub faults: &'a FaultPlan,
}

/// What to export, for the data and the run.
pub(super) struct ExportRequest<'a> {
    pub model: &'a ModelConfig,
    pub train: &'a SplitData,
    pub image_size: u32,
    pub seed: u64,
}

/// `model.timm` exported for the data on this node, and loaded.
pub(super) fn exported(request: &ExportRequest, placement: &Placement, observer: &mut dyn Observer) -> Result<Network> {
    let Placement { run_dir, plan, group, device, progress, stop, faults } = *placement;
    let (rank, local_rank, node) = (plan.rank, plan.local_rank, plan.node);
    let export = TimmExport {
        config: request.model,
        classes: request.train.num_classes(),
        image_size: request.image_size,
        seed: request.seed,
        progress: progress && rank == 0,
    };
    let on_rank0_node = node == rank0_node(group, node, device)?;
    let key = format!("init/node{node}");
    let scratch = match (on_rank0_node, local_rank) {
        (false, 0) => {
            let temp = std::env::temp_dir();
            Some(crate::atomic::private_dir("asl-init-").map_err(write_error(&temp))?)
        }
        _ => None,
    };
    let mut dir = scratch.as_ref().map_or_else(|| run_dir.join("init"), |s| s.path().to_path_buf());
    if local_rank == 0 {
        if let Some(weights) = &request.model.weights {
            observer.on_event(&TrainEvent::Notice(&format!("exporting {} with weights {weights}", request.model.timm)));
        }
        let started = || faults.strike(FaultPoint::Setup(SetupPhase::Export), rank, group.map(|g| g.liveness()));
        let running = || group.iter().for_each(|g| g.record_progress(None));
        export_timm(&export, &dir, &ExportWatch { stop, started: &started, running: &running })?;
        if let (Some(group), Some(_)) = (group, &scratch) {
            group.store_set(&key, dir.as_os_str().as_bytes())?;
        }
    }
    if let Some(group) = group {
        group.barrier()?;
        if !on_rank0_node && local_rank != 0 {
            dir = PathBuf::from(std::ffi::OsString::from_vec(group.store_get(&key)?));
        }
    }
    let path = export.out(&dir);
    let network = Network::load(&path, device)?;
    if let Some(group) = group {
        // A barrier is every rank's or none's. Once every local rank has loaded the export, a node's
        // exporter removes its scratch copy.
        group.barrier()?;
    }
    if let Some(scratch) = scratch {
        let shown = scratch.path().display().to_string();
        if let Err(e) = scratch.close() {
            observer.on_event(&TrainEvent::Warning(&format!("cannot remove the scratch export {shown}: {e}")));
        }
    }
    let origin = network.card().weights.as_ref().map_or_else(|| "random weights".to_string(), |w| w.to_string());
    let at = if on_rank0_node { path.display().to_string() } else { format!("node {node}'s scratch directory") };
    observer.on_event(&TrainEvent::Notice(&format!("exported {} to {at} from {origin}", request.model.timm)));
    Ok(network)
}

/// The node rank 0 runs on, as rank 0 says (broadcast); alone, this one.
fn rank0_node(group: Option<&ProcessGroup>, node: usize, device: Device) -> Result<usize> {
    let Some(group) = group else { return Ok(node) };
    let value = Tensor::f_from_slice(&[node as i64])?.f_to_device(group.tensor_device(device))?;
    group.broadcast(&[&value], 0)?;
    Ok(value.f_to_device(Device::Cpu)?.f_to_kind(Kind::Int64)?.int64_value(&[0]) as usize)
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> crate::model::ModelError + '_ {
    move |source| crate::model::ModelError::Write { path: path.to_path_buf(), source }
}
