//! What a trainer does differently among several processes, as PyTorch's
//! DDP does it: rank 0's weights and buffers to every rank at the start,
//! buffers (BatchNorm statistics) from rank 0 after every batch (DDP sends
//! them before each forward pass; after the backward pass is the same for
//! the next forward, and also keeps the EMA, validation and checkpoints on
//! identical statistics; during the pass autograd holds them),
//! gradients summed by libtorch's Reducer during the backward pass of a
//! group's last micro-batch only. The loss and Δp sums, and a stop request,
//! are summed over the ranks when they are read (`figures.rs`), so that they
//! and γ− agree on every rank.

use super::error::{Result, TrainError};
use crate::distributed::{Backend, ProcessGroup, Reducer};
use crate::model::Network;
use tch::{Device, Kind, Tensor};

pub(super) struct DataParallel {
    group: ProcessGroup,
    reducer: Reducer,
    /// The module's non-trainable tensors (BatchNorm statistics, frozen weights), kept as rank 0's.
    buffers: Vec<Tensor>,
    /// Where the per-step figures travel: the CPU under Gloo, the GPU under NCCL.
    device: Device,
}

impl DataParallel {
    /// Makes every rank start from rank 0's network, then sets up gradient
    /// reduction over the trainable parameters.
    pub fn new(group: ProcessGroup, network: &Network, bucket_mb: usize) -> Result<Self> {
        let tensors: Vec<Tensor> = network.named_tensors()?.into_iter().map(|(_, t)| t).collect();
        tch::no_grad(|| group.broadcast(&tensors.iter().collect::<Vec<_>>(), 0))?;
        let (trainable, buffers): (Vec<Tensor>, Vec<Tensor>) = tensors.into_iter().partition(Tensor::requires_grad);
        let reducer = Reducer::new(&group, &trainable.iter().collect::<Vec<_>>(), bucket_mb)?;
        let device = match group.backend() {
            Backend::Gloo => Device::Cpu,
            Backend::Nccl => network.device(),
        };
        Ok(Self { group, reducer, buffers, device })
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
    pub fn after_backward(&self) -> Result<()> {
        Ok(tch::no_grad(|| self.group.broadcast(&self.buffers.iter().collect::<Vec<_>>(), 0))?)
    }

    /// A backward failure, with the ranks that are gone named.
    pub fn backward_error(&self, error: tch::TchError) -> TrainError {
        self.group.failure("the gradient all-reduce in backward", error.to_string()).into()
    }

    /// Whether any rank says yes (a stop request, seen the same on every rank).
    pub fn any(&self, local: bool) -> Result<bool> {
        Ok(self.sum(&[f64::from(u8::from(local))])?[0] > 0.0)
    }

    /// Each value summed over the ranks.
    pub fn sum(&self, values: &[f64]) -> Result<Vec<f64>> {
        let tensor = Tensor::f_from_slice(values)?.f_to_device(self.device)?;
        self.group.allreduce_sum(&[&tensor])?;
        Ok(Vec::<f64>::try_from(tensor.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?)?)
    }
}
