//! fp16 autocast for CUDA forward passes.
//!
//! `tch::autocast` drives libtorch through its device-less autocast calls,
//! which libtorch 2.11 deprecates with three warnings on stderr per call:
//! 180 lines in a two-epoch run on a GPU. This calls the per-device
//! functions instead. tch binds no C++ entry point for them, so they are
//! linked by their Itanium C++ ABI names from libtorch_cpu, which exports
//! them with plain C calling conventions (an `int8_t` device type and a
//! `bool`); none of them throws.

/// `c10::DeviceType::CUDA`.
const CUDA: i8 = 1;

mod ffi {
    #[link(name = "torch_cpu")]
    extern "C" {
        #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
        pub fn is_autocast_enabled(device_type: i8) -> bool;
        #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
        pub fn set_autocast_enabled(device_type: i8, enabled: bool);
        #[link_name = "_ZN2at8autocast17increment_nestingEv"]
        pub fn increment_nesting() -> i64;
        #[link_name = "_ZN2at8autocast17decrement_nestingEv"]
        pub fn decrement_nesting() -> i64;
        #[link_name = "_ZN2at8autocast11clear_cacheEv"]
        pub fn clear_cache();
    }
}

/// Whether CUDA autocast is on for this thread.
fn cuda_autocast_enabled() -> bool {
    // SAFETY: reads a thread-local flag.
    unsafe { ffi::is_autocast_enabled(CUDA) }
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
    previous: bool,
}

impl AutocastScope {
    fn enter() -> Self {
        let previous = cuda_autocast_enabled();
        // SAFETY: thread-local autocast state, restored in `drop`.
        unsafe {
            ffi::set_autocast_enabled(CUDA, true);
            ffi::increment_nesting();
        }
        Self { previous }
    }
}

impl Drop for AutocastScope {
    fn drop(&mut self) {
        // SAFETY: undoes `enter`. The weight casts cached for the scope are
        // dropped when the outermost scope ends, as torch.autocast does.
        unsafe {
            if ffi::decrement_nesting() == 0 {
                ffi::clear_cache();
            }
            ffi::set_autocast_enabled(CUDA, self.previous);
        }
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
