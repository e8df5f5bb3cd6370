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
mod reducer;

pub use error::{DistError, Result};
pub use group::{nccl_compiled, Backend, ProcessGroup};
pub use launch::Launch;
pub use reducer::Reducer;

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
    /// Gradient bucket size in MiB: gradients are reduced one bucket at a time while backward runs (25, as
    /// PyTorch's DDP).
    pub bucket_mb: usize,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        Self { backend: BackendChoice::Auto, timeout_s: 600, bucket_mb: 25 }
    }
}

impl DistributedConfig {
    /// The backend for `device`.
    pub fn backend(&self, device: tch::Device) -> Backend {
        match (self.backend, device) {
            (BackendChoice::Gloo, _) => Backend::Gloo,
            (BackendChoice::Nccl, _) => Backend::Nccl,
            (BackendChoice::Auto, tch::Device::Cuda(_)) => Backend::Nccl,
            (BackendChoice::Auto, _) => Backend::Gloo,
        }
    }
}

/// Rank `rank`'s share of an epoch's `order`, by `DistributedSampler`'s
/// rule: with `pad`, the order is first extended by repeating its start
/// to a multiple of `world` (so every rank gets as many samples, and the
/// last global batch repeats up to `world - 1` images); then rank `r` takes
/// positions `r, r + world, r + 2·world, …`. Without `pad` (validation),
/// the shares differ by at most one and cover the order exactly once.
pub fn shard(order: &[usize], rank: usize, world: usize, pad: bool) -> Vec<usize> {
    let len = if pad { order.len().div_ceil(world) * world } else { order.len() };
    (rank..len).step_by(world).map(|i| order[i % order.len()]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_order_once_and_pad_from_its_start() {
        let order: Vec<usize> = (0..10).map(|i| 100 + i).collect();
        let shards: Vec<Vec<usize>> = (0..3).map(|r| shard(&order, r, 3, false)).collect();
        assert_eq!(shards, [vec![100, 103, 106, 109], vec![101, 104, 107], vec![102, 105, 108]]);
        let padded: Vec<Vec<usize>> = (0..3).map(|r| shard(&order, r, 3, true)).collect();
        assert_eq!(padded, [vec![100, 103, 106, 109], vec![101, 104, 107, 100], vec![102, 105, 108, 101]]);
        assert_eq!(shard(&order, 0, 1, true), order);
    }
}
