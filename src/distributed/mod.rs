//! Data-parallel training across processes on libtorch's c10d: the
//! engine PyTorch's own DDP runs on. Launched by `torchrun --no-python`
//! (or Slurm's `srun`), which set the variables [`Launch`] reads; each
//! rank joins a [`ProcessGroup`] (NCCL on CUDA, Gloo on CPU), and a
//! [`Reducer`] sums gradients across ranks while backward runs.
//!
//! The C++ half is `src/native/dist.cpp`, compiled by `build.rs`.

mod error;
mod group;
mod launch;
mod liveness;
mod reducer;
mod share;
mod watch;

pub use error::{DistError, Result};
pub use group::{nccl_compiled, Backend, GroupOptions, ProcessGroup};
pub use launch::{restart_count, Launch};
pub use liveness::{Heartbeat, Liveness, StoreServer};
pub use reducer::Reducer;
pub use share::EpochShare;
pub use watch::{CheckTimes, InFlight, Judge, Lost, LostRank, LostRankHandler, StoreAddress, WatchSetup, Watcher};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which backend a run asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// NCCL when the device is CUDA, Gloo on CPU.
    #[default]
    Auto,
    Gloo,
    Nccl,
}

/// The `distributed` section: used only when a launcher set the variables.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DistributedConfig {
    /// auto (NCCL on CUDA, Gloo on CPU), gloo or nccl.
    pub backend: BackendChoice,
    /// Seconds a rank waits for the others (rendezvous, every collective) before it stops with an error
    /// naming the ranks that are gone.
    pub timeout_s: u64,
    /// Seconds a peer's heartbeat may stay silent while this rank waits on it (in a step or a collective)
    /// before the peer is taken as lost: the group is aborted and the run stops naming the rank. It catches
    /// a rank that hangs whole (stopped, swapping), which no collective notices before `timeout_s`.
    pub heartbeat_timeout_s: u64,
    /// Seconds a peer may go on beating while its training does not move (no batch, validation batch or
    /// checkpoint file), while this rank waits on it, before it is named as stalled with its last step: a
    /// deadlocked loader or a hung device, whose heartbeat thread still lives.
    pub stall_timeout_s: u64,
    /// Gradient bucket size in MiB: gradients are reduced one bucket at a time while backward runs (25, as
    /// PyTorch's DDP).
    pub bucket_mb: usize,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        Self {
            backend: BackendChoice::Auto,
            timeout_s: 600,
            heartbeat_timeout_s: 30,
            stall_timeout_s: 300,
            bucket_mb: 25,
        }
    }
}

impl DistributedConfig {
    /// The backend for `device`, or an error naming the key when the two
    /// do not go together (which c10d would only report, obscurely, at the
    /// first collective).
    pub fn backend(&self, device: tch::Device) -> crate::config::Result<Backend> {
        let refuse = |message: String| Err(crate::config::key_error("distributed.backend", message));
        match (self.backend, device) {
            (BackendChoice::Gloo, tch::Device::Cuda(_)) => refuse(format!(
                "gloo carries CPU tensors, but the device is {device:?}: use nccl (or auto) on CUDA, or device: cpu"
            )),
            (BackendChoice::Nccl, tch::Device::Cuda(_)) | (BackendChoice::Auto, tch::Device::Cuda(_)) => {
                Ok(Backend::Nccl)
            }
            (BackendChoice::Nccl, _) => refuse(format!(
                "nccl carries CUDA tensors, but the device is {device:?}: use gloo (or auto) on the CPU, or a CUDA \
                 device"
            )),
            (BackendChoice::Gloo, _) | (BackendChoice::Auto, _) => Ok(Backend::Gloo),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_that_cannot_carry_the_devices_tensors_is_refused_naming_the_key() {
        let with = |backend| DistributedConfig { backend, ..DistributedConfig::default() };
        let cuda = tch::Device::Cuda(0);
        assert_eq!(with(BackendChoice::Auto).backend(cuda).unwrap(), Backend::Nccl);
        assert_eq!(with(BackendChoice::Auto).backend(tch::Device::Cpu).unwrap(), Backend::Gloo);
        let err = with(BackendChoice::Gloo).backend(cuda).unwrap_err().to_string();
        assert!(err.starts_with("config key `distributed.backend`: gloo carries CPU tensors"), "{err}");
        let err = with(BackendChoice::Nccl).backend(tch::Device::Cpu).unwrap_err().to_string();
        assert!(err.starts_with("config key `distributed.backend`: nccl carries CUDA tensors"), "{err}");
    }
}
