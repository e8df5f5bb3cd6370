//! libtorch operations that tch does not bind, through the native layer
//! (`src/native/ops.cpp`): the fused Adam step and multi-tensor (foreach)
//! kernels, which touch every parameter in a few launches instead of
//! several per tensor; the channels-last memory format; TF32; CUDA
//! autocast; and scoped seeding of the default random generators. Failures
//! come back as `TchError::Torch` with libtorch's message.

mod autocast;
mod rng;

pub use autocast::with_cuda_autocast;
pub use rng::{batch_seed, ScopedSeed};

use crate::native::{self as ffi, handle, handles, TensorHandle};
use tch::{TchError, Tensor};

fn check(status: i32) -> Result<(), TchError> {
    match status {
        0 => Ok(()),
        _ => Err(TchError::Torch(ffi::last_error())),
    }
}

/// Takes ownership of a tensor the native layer allocated (`new at::Tensor`).
fn owned(raw: TensorHandle) -> Tensor {
    // SAFETY: the shim returns a heap-allocated at::Tensor, which tch frees as its own.
    unsafe { Tensor::from_ptr(raw) }
}

/// The tensors of one fused Adam step, in parameter order.
pub struct AdamTensors<'a> {
    pub params: &'a [Tensor],
    pub grads: &'a [Tensor],
    pub exp_avgs: &'a [Tensor],
    pub exp_avg_sqs: &'a [Tensor],
    /// One float scalar per parameter, incremented by the step.
    pub steps: &'a [Tensor],
}

/// The scalars of one Adam step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
    /// AdamW's decay (on the weights) instead of Adam's L2 (on the gradient).
    pub decoupled: bool,
}

/// One Adam step over all `tensors`, as `torch.optim.Adam(fused=True)`.
/// With `grad_scale`, the gradients are divided by it inside the kernel;
/// with `found_inf` non-zero (a device flag), nothing changes.
pub fn fused_adam(
    tensors: &AdamTensors,
    step: AdamStep,
    grad_scale: Option<&Tensor>,
    found_inf: Option<&Tensor>,
) -> Result<(), TchError> {
    let n = tensors.params.len();
    let lists = [tensors.grads, tensors.exp_avgs, tensors.exp_avg_sqs, tensors.steps];
    if lists.iter().any(|l| l.len() != n) {
        return Err(TchError::Shape(format!("fused Adam needs {n} of every state tensor")));
    }
    let [p, g, m, v, s] =
        [tensors.params, tensors.grads, tensors.exp_avgs, tensors.exp_avg_sqs, tensors.steps].map(handles);
    let optional = |t: Option<&Tensor>| t.map_or(std::ptr::null_mut(), handle);
    // SAFETY: five lists of `n` live tensors; the optional tensors are live or null.
    let status = unsafe {
        ffi::asl_fused_adam(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            n,
            step.lr,
            step.beta1,
            step.beta2,
            step.weight_decay,
            step.eps,
            i32::from(step.decoupled),
            optional(grad_scale),
            optional(found_inf),
        )
    };
    check(status)
}

/// `this[i] += weight · (end[i] − this[i])` for every i, `weight` a number.
pub fn foreach_lerp(this: &[Tensor], end: &[Tensor], weight: f64) -> Result<(), TchError> {
    let (a, b) = (handles(this), handles(end));
    same_length(a.len(), b.len())?;
    // SAFETY: two lists of live tensors of equal length.
    check(unsafe { ffi::asl_foreach_lerp_scalar(a.as_ptr(), b.as_ptr(), a.len(), weight) })
}

/// As [`foreach_lerp`], `weight` a one-element tensor on the device (read by
/// no one on the host).
pub fn foreach_lerp_tensor(this: &[Tensor], end: &[Tensor], weight: &Tensor) -> Result<(), TchError> {
    let (a, b) = (handles(this), handles(end));
    same_length(a.len(), b.len())?;
    // SAFETY: as above; `weight` is live.
    check(unsafe { ffi::asl_foreach_lerp_tensor(a.as_ptr(), b.as_ptr(), a.len(), handle(weight)) })
}

/// `this[i] *= factor` for every i, `factor` a one-element tensor.
pub fn foreach_mul(this: &[Tensor], factor: &Tensor) -> Result<(), TchError> {
    let a = handles(this);
    // SAFETY: a list of live tensors and a live factor.
    check(unsafe { ffi::asl_foreach_mul_tensor(a.as_ptr(), a.len(), handle(factor)) })
}

/// The L2 norm of all `tensors` together, as a one-element float tensor.
pub fn total_norm(tensors: &[Tensor]) -> Result<Tensor, TchError> {
    let a = handles(tensors);
    let mut out = std::ptr::null_mut();
    // SAFETY: a list of live tensors; `out` is written on success.
    check(unsafe { ffi::asl_foreach_total_norm(a.as_ptr(), a.len(), &mut out) })?;
    Ok(owned(out))
}

/// Multiplies every gradient by `inv_scale` and sets `found_inf` to 1 when
/// any value is inf or NaN (both one-element float tensors on the device).
pub fn amp_unscale(grads: &[Tensor], found_inf: &Tensor, inv_scale: &Tensor) -> Result<(), TchError> {
    let a = handles(grads);
    // SAFETY: a list of live tensors and two live scalars.
    check(unsafe { ffi::asl_amp_unscale(a.as_ptr(), a.len(), handle(found_inf), handle(inv_scale)) })
}

/// A channels-last copy of a 4-D tensor (NHWC in memory, NCHW in shape),
/// the layout cuDNN's fastest convolutions want; other tensors unchanged.
pub fn channels_last(tensor: &Tensor) -> Result<Tensor, TchError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: a live tensor; `out` is written on success.
    check(unsafe { ffi::asl_channels_last(handle(tensor), &mut out) })?;
    Ok(owned(out))
}

pub fn is_channels_last(tensor: &Tensor) -> bool {
    // SAFETY: a live tensor.
    unsafe { ffi::asl_is_channels_last(handle(tensor)) != 0 }
}

/// TF32 for cuDNN and float32 matrix products on CUDA (as timm turns on),
/// or full float32. No effect on CPU.
pub fn set_tf32(enabled: bool) -> Result<(), TchError> {
    // SAFETY: sets two global flags.
    check(unsafe { ffi::asl_set_tf32(i32::from(enabled)) })
}

pub fn tf32_enabled() -> bool {
    // SAFETY: reads a global flag.
    unsafe { ffi::asl_tf32_enabled() != 0 }
}

fn same_length(a: usize, b: usize) -> Result<(), TchError> {
    if a == b {
        Ok(())
    } else {
        Err(TchError::Shape(format!("foreach lists of {a} and {b} tensors")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn foreach_kernels_match_per_tensor_arithmetic() {
        let a = [Tensor::from_slice(&[1.0f32, 2.0]), Tensor::from_slice(&[10.0f32])];
        let b = [Tensor::from_slice(&[3.0f32, 6.0]), Tensor::from_slice(&[20.0f32])];
        foreach_lerp(&a, &b, 0.25).unwrap();
        assert_eq!(Vec::<f32>::try_from(&a[0]).unwrap(), [1.5, 3.0]);
        foreach_lerp_tensor(&a, &b, &Tensor::from_slice(&[0.5f32])).unwrap();
        assert_eq!(Vec::<f32>::try_from(&a[1]).unwrap(), [16.25]);
        foreach_mul(&a, &Tensor::from_slice(&[2.0f32])).unwrap();
        assert_eq!(Vec::<f32>::try_from(&a[1]).unwrap(), [32.5]);
        let norm = total_norm(&[Tensor::from_slice(&[3.0f32]), Tensor::from_slice(&[4.0f32])]).unwrap();
        assert_eq!(norm.double_value(&[]), 5.0);
        let err = foreach_lerp(&a, &b[..1], 0.5).unwrap_err().to_string();
        assert!(err.contains("2 and 1"), "{err}");
    }

    #[test]
    fn unscale_flags_overflow_and_errors_do_not_abort() {
        let found = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        let grads = [Tensor::from_slice(&[4.0f32, 8.0]), Tensor::from_slice(&[f32::INFINITY])];
        amp_unscale(&grads[..1], &found, &Tensor::from_slice(&[0.25f32])).unwrap();
        assert_eq!((Vec::<f32>::try_from(&grads[0]).unwrap(), found.double_value(&[0])), (vec![1.0, 2.0], 0.0));
        amp_unscale(&grads, &found, &Tensor::from_slice(&[0.25f32])).unwrap();
        assert_eq!(found.double_value(&[0]), 1.0);
        // A libtorch error (a double found_inf) comes back as an error, not an abort.
        let wrong = Tensor::zeros([1], (Kind::Double, Device::Cpu));
        assert!(amp_unscale(&grads, &wrong, &Tensor::from_slice(&[1.0f32])).is_err());
    }

    #[test]
    fn a_one_by_one_kernel_gets_the_canonical_channels_last_strides() {
        // Contiguous [O, I, 1, 1] passes is_contiguous(ChannelsLast), but its strides are not the ones a
        // convolution's gradient comes back with.
        let kernel = Tensor::arange(12, (Kind::Float, Device::Cpu)).view([4, 3, 1, 1]);
        assert_eq!(kernel.stride(), [3, 1, 1, 1]);
        assert!(!is_channels_last(&kernel));
        let canonical = channels_last(&kernel).unwrap();
        assert_eq!(canonical.stride(), [3, 1, 3, 3]);
        assert!(is_channels_last(&canonical) && canonical.equal(&kernel));
    }

    #[test]
    fn channels_last_keeps_values_and_changes_strides() {
        let nchw = Tensor::arange(24, (Kind::Float, Device::Cpu)).view([1, 2, 3, 4]);
        let nhwc = channels_last(&nchw).unwrap();
        assert!(is_channels_last(&nhwc) && !is_channels_last(&nchw));
        assert_eq!(nhwc.stride(), [24, 1, 8, 2]);
        assert!(nhwc.equal(&nchw));
        set_tf32(false).unwrap();
        assert!(!tf32_enabled());
    }
}
