//! libtorch's DDP `Reducer`: gradients are summed across ranks in buckets
//! while backward still runs, so communication overlaps computation.

use super::error::{DistError, Result};
use super::group::ProcessGroup;
use crate::native::handles;
use crate::native::{self as ffi, AslReducer};
use tch::Tensor;

pub struct Reducer {
    raw: *mut AslReducer,
    rank: usize,
}

impl Reducer {
    /// Over `parameters` (all must require grad: the native layer checks,
    /// as libtorch would crash instead), in buckets of `bucket_mb` MiB after
    /// a first bucket of 1 MiB, as PyTorch's DDP.
    pub fn new(group: &ProcessGroup, parameters: &[&Tensor], bucket_mb: usize) -> Result<Self> {
        let handles = handles(parameters.iter().copied());
        let mut raw = std::ptr::null_mut();
        let bucket_mb = i64::try_from(bucket_mb).unwrap_or(i64::MAX);
        // SAFETY: the handles point to live tensors; `raw` is written on success only.
        let status = unsafe { ffi::asl_reducer_new(group.raw(), handles.as_ptr(), handles.len(), bucket_mb, &mut raw) };
        if status != 0 {
            return Err(DistError::Reducer { rank: group.rank(), message: ffi::last_error() });
        }
        Ok(Self { raw, rank: group.rank() })
    }

    /// Before the forward pass of a batch whose backward communicates.
    pub fn prepare_forward(&self) -> Result<()> {
        // SAFETY: the reducer is live.
        self.check(unsafe { ffi::asl_reducer_prepare_forward(self.raw) })
    }

    /// Between that forward pass and its backward: the backward then reduces
    /// every gradient across ranks. Micro-batches that skip both calls keep
    /// their gradients local (DDP's `no_sync`).
    pub fn prepare_backward(&self) -> Result<()> {
        // SAFETY: the reducer is live.
        self.check(unsafe { ffi::asl_reducer_prepare_backward(self.raw) })
    }

    fn check(&self, status: i32) -> Result<()> {
        if status == 0 {
            Ok(())
        } else {
            Err(DistError::Reducer { rank: self.rank, message: ffi::last_error() })
        }
    }
}

impl Drop for Reducer {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `asl_reducer_new` and is freed once.
        unsafe { ffi::asl_reducer_free(self.raw) }
    }
}
