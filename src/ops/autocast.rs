//! fp16 autocast for CUDA forward passes, through libtorch's per-device
//! functions (`tch::autocast` calls the device-less ones, which libtorch
//! 2.11 deprecates with three warnings per call).

use crate::native as ffi;

/// Whether CUDA autocast is on for this thread.
#[cfg(test)]
fn cuda_autocast_enabled() -> bool {
    // SAFETY: reads a thread-local flag.
    unsafe { ffi::asl_autocast_enabled() != 0 }
}

/// Runs `f` with fp16 autocast on CUDA ops when `enabled`, restoring the
/// previous state afterwards, also when `f` panics. CPU ops are unaffected.
pub fn with_cuda_autocast<T>(enabled: bool, f: impl FnOnce() -> T) -> T {
    if !enabled {
        return f();
    }
    let _scope = AutocastScope::enter();
    f()
}

struct AutocastScope {
    previous: i32,
}

impl AutocastScope {
    fn enter() -> Self {
        let mut previous = 0;
        // SAFETY: thread-local autocast state, restored in `drop`. The calls cannot
        // fail (they set flags); a failure would leave autocast off, never abort.
        unsafe { ffi::asl_autocast_enter(&mut previous) };
        Self { previous }
    }
}

impl Drop for AutocastScope {
    fn drop(&mut self) {
        // SAFETY: undoes `enter`.
        unsafe { ffi::asl_autocast_exit(self.previous) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn scope_turns_cuda_autocast_on_and_restores_it() {
        assert!(!cuda_autocast_enabled());
        let inside = with_cuda_autocast(true, || {
            let nested = with_cuda_autocast(true, cuda_autocast_enabled);
            // libtorch's own (deprecated, CUDA) query sees the same flag.
            // SAFETY: reads a thread-local flag.
            let seen_by_libtorch = unsafe { torch_sys::at_autocast_is_enabled() } != 0;
            (cuda_autocast_enabled(), nested, seen_by_libtorch)
        });
        assert_eq!(inside, (true, true, true));
        assert!(!cuda_autocast_enabled());
        assert!(!with_cuda_autocast(false, cuda_autocast_enabled));
    }

    #[test]
    fn state_is_restored_after_a_panic() {
        let result = std::panic::catch_unwind(|| with_cuda_autocast(true, || panic!("forward failed")));
        assert!(result.is_err());
        assert!(!cuda_autocast_enabled());
    }

    #[test]
    fn cpu_ops_keep_their_precision() {
        let a = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        let product = with_cuda_autocast(true, || a.matmul(&a));
        assert_eq!(product.kind(), Kind::Float);
        assert_eq!(product.double_value(&[0, 0]), 4.0);
    }

    #[test]
    #[ignore = "needs a CUDA device: run with --ignored where there is one (bench/gpu.sh does)"]
    fn cuda_matmul_runs_in_half_precision() {
        assert!(tch::Cuda::is_available(), "this test needs a CUDA device");
        let a = Tensor::ones([8, 8], (Kind::Float, Device::Cuda(0)));
        assert_eq!(with_cuda_autocast(true, || a.matmul(&a)).kind(), Kind::Half);
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
    }
}
