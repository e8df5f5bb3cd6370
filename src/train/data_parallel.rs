//! What a trainer does differently among several processes, as PyTorch's
//! DDP does it: rank 0's weights and buffers to every rank at the start
//! (frozen parameters then never change, so they are sent only then), the
//! module's buffers (BatchNorm statistics) from rank 0 after every batch
//! (DDP sends them before each forward pass; after the backward pass is the
//! same for the next forward, and also keeps the EMA, validation and
//! checkpoints on identical statistics; during the pass autograd holds
//! them), gradients summed by libtorch's Reducer during the backward pass
//! of a group's last micro-batch only. The loss and Δp sums are summed over
//! the ranks when they are read (`figures.rs`), so that they and γ− agree on
//! every rank. Agreeing on a stop is a stage of its own (`agreement.rs`).

use super::error::{Result, TrainError};
use crate::distributed::{Backend, ProcessGroup, Reducer};
use crate::model::Network;
use tch::{Device, Kind, Tensor};

pub(super) struct DataParallel {
    group: ProcessGroup,
    reducer: Reducer,
    /// The module's buffers (BatchNorm statistics), kept as rank 0's after every batch.
    buffers: Vec<Tensor>,
    /// Where the per-step figures travel: the CPU under Gloo, the GPU under NCCL.
    device: Device,
    /// Bytes broadcast, as the native layer counted them: at the start, and after the batches since.
    broadcast: BroadcastBytes,
}

/// What weights and buffers cost in broadcasts, counted by the native layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BroadcastBytes {
    /// Rank 0's whole network, once.
    pub start: u64,
    /// The module's buffers after every batch, summed over the batches.
    pub batches: u64,
}

impl DataParallel {
    /// Makes every rank start from rank 0's network, then sets up gradient
    /// reduction over the trainable parameters.
    pub fn new(group: ProcessGroup, network: &Network, bucket_mb: usize) -> Result<Self> {
        let named = network.named_tensors()?;
        let everything: Vec<&Tensor> = named.iter().map(|(_, t)| t).collect();
        let before = group.bytes_broadcast();
        tch::no_grad(|| group.broadcast(&everything, 0))?;
        let broadcast = BroadcastBytes { start: group.bytes_broadcast() - before, batches: 0 };
        let trainable: Vec<&Tensor> = everything.iter().copied().filter(|t| t.requires_grad()).collect();
        let buffers = named
            .iter()
            .filter(|(name, t)| !t.requires_grad() && !network.is_frozen(name))
            .map(|(_, t)| t.shallow_clone())
            .collect();
        let reducer = Reducer::new(&group, &trainable, bucket_mb)?;
        let device = match group.backend() {
            Backend::Gloo => Device::Cpu,
            Backend::Nccl => network.device(),
        };
        Ok(Self { group, reducer, buffers, device, broadcast })
    }

    pub fn group(&self) -> &ProcessGroup {
        &self.group
    }

    /// Before the forward pass; `sync`: this batch ends an accumulation group.
    pub fn before_forward(&self, sync: bool) -> Result<()> {
        if sync {
            self.reducer.prepare_forward()?;
        }
        Ok(())
    }

    /// After the forward pass: the reducer armed for a synchronising backward.
    pub fn after_forward(&self, sync: bool) -> Result<()> {
        if sync {
            self.reducer.prepare_backward()?;
        }
        Ok(())
    }

    /// After the backward pass: rank 0's buffers everywhere.
    pub fn after_backward(&mut self) -> Result<()> {
        let before = self.group.bytes_broadcast();
        tch::no_grad(|| self.group.broadcast(&self.buffers.iter().collect::<Vec<_>>(), 0))?;
        self.broadcast.batches += self.group.bytes_broadcast() - before;
        Ok(())
    }

    pub fn broadcast_bytes(&self) -> BroadcastBytes {
        self.broadcast
    }

    /// A backward failure, with the ranks that are gone named.
    pub fn backward_error(&self, error: tch::TchError) -> TrainError {
        self.group.failure("the gradient all-reduce in backward", error.to_string()).into()
    }

    /// Each value summed over the ranks.
    pub fn sum(&self, values: &[f64]) -> Result<Vec<f64>> {
        let tensor = Tensor::f_from_slice(values)?.f_to_device(self.device)?;
        self.group.allreduce_sum(&[&tensor])?;
        Ok(Vec::<f64>::try_from(tensor.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?)?)
    }
}
