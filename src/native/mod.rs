//! The C ABI of the native layer, `dist.cpp` (c10d), `liveness.cpp`
//! (heartbeats) and `ops.cpp` (ATen operations tch does not bind),
//! compiled by `build.rs`. Every function
//! returns 0 on success and -1 on failure, with the message in
//! `asl_last_error` on the calling thread; none lets a C++ exception
//! through. The safe sides are `asl::distributed` and `asl::ops`.

use std::ffi::{c_char, c_int};

/// `at::Tensor*`, which tch's `Tensor::as_ptr` hands out.
pub type TensorHandle = *mut torch_sys::C_tensor;

#[repr(C)]
pub struct AslGroup {
    _private: [u8; 0],
}

#[repr(C)]
pub struct AslReducer {
    _private: [u8; 0],
}

#[repr(C)]
pub struct AslLiveness {
    _private: [u8; 0],
}

#[repr(C)]
pub struct AslStoreServer {
    _private: [u8; 0],
}

extern "C" {
    pub fn asl_last_error() -> *const c_char;
    pub fn asl_nccl_compiled() -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub fn asl_group_new(
        backend: c_int,
        host: *const c_char,
        port: c_int,
        server: c_int,
        prefix: *const c_char,
        rank: c_int,
        world: c_int,
        device: c_int,
        timeout_s: c_int,
        out: *mut *mut AslGroup,
    ) -> c_int;
    pub fn asl_group_free(group: *mut AslGroup);
    pub fn asl_allreduce_sum(group: *mut AslGroup, tensors: *const TensorHandle, n: usize) -> c_int;
    pub fn asl_broadcast(group: *mut AslGroup, tensors: *const TensorHandle, n: usize, root: c_int) -> c_int;
    pub fn asl_barrier(group: *mut AslGroup) -> c_int;
    pub fn asl_broadcast_bytes(group: *mut AslGroup) -> i64;
    pub fn asl_gather(group: *mut AslGroup, input: TensorHandle, output: TensorHandle, root: c_int) -> c_int;
    pub fn asl_group_abort(group: *mut AslGroup) -> c_int;
    pub fn asl_stop_agree(group: *mut AslGroup, step: i64, requested: c_int, stop: *mut c_int) -> c_int;
    pub fn asl_group_liveness(group: *mut AslGroup) -> *mut AslLiveness;
    pub fn asl_store_set(group: *mut AslGroup, key: *const c_char, value: *const u8, length: usize) -> c_int;
    pub fn asl_store_get(
        group: *mut AslGroup,
        key: *const c_char,
        out: *mut u8,
        capacity: usize,
        length: *mut usize,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub fn asl_liveness_new(
        host: *const c_char,
        port: c_int,
        prefix: *const c_char,
        rank: c_int,
        world: c_int,
        timeout_s: c_int,
        out: *mut *mut AslLiveness,
    ) -> c_int;
    pub fn asl_liveness_free(liveness: *mut AslLiveness);
    pub fn asl_liveness_progress(liveness: *mut AslLiveness, step: i64);
    pub fn asl_liveness_read(
        liveness: *mut AslLiveness,
        timeout_ms: c_int,
        beats: *mut i64,
        progress: *mut i64,
        steps: *mut i64,
    ) -> c_int;
    pub fn asl_liveness_dead(liveness: *mut AslLiveness, message: *mut c_char, capacity: usize) -> c_int;
    pub fn asl_liveness_fail(liveness: *mut AslLiveness);
    pub fn asl_liveness_requests(liveness: *mut AslLiveness) -> i64;
    pub fn asl_store_server_new(
        port: c_int,
        timeout_s: c_int,
        bound: *mut c_int,
        out: *mut *mut AslStoreServer,
    ) -> c_int;
    pub fn asl_store_server_free(server: *mut AslStoreServer);
    pub fn asl_reducer_new(
        group: *mut AslGroup,
        params: *const TensorHandle,
        n: usize,
        bucket_mb: i64,
        out: *mut *mut AslReducer,
    ) -> c_int;
    pub fn asl_reducer_prepare_forward(reducer: *mut AslReducer) -> c_int;
    pub fn asl_reducer_prepare_backward(reducer: *mut AslReducer) -> c_int;
    pub fn asl_reducer_free(reducer: *mut AslReducer);

    #[allow(clippy::too_many_arguments)]
    pub fn asl_fused_adam(
        params: *const TensorHandle,
        grads: *const TensorHandle,
        exp_avgs: *const TensorHandle,
        exp_avg_sqs: *const TensorHandle,
        steps: *const TensorHandle,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        decoupled: c_int,
        grad_scale: TensorHandle,
        found_inf: TensorHandle,
    ) -> c_int;
    pub fn asl_foreach_lerp_scalar(this: *const TensorHandle, end: *const TensorHandle, n: usize, weight: f64)
        -> c_int;
    pub fn asl_foreach_lerp_tensor(
        this: *const TensorHandle,
        end: *const TensorHandle,
        n: usize,
        weight: TensorHandle,
    ) -> c_int;
    pub fn asl_foreach_mul_tensor(this: *const TensorHandle, n: usize, factor: TensorHandle) -> c_int;
    pub fn asl_foreach_total_norm(tensors: *const TensorHandle, n: usize, out: *mut TensorHandle) -> c_int;
    pub fn asl_amp_unscale(
        grads: *const TensorHandle,
        n: usize,
        found_inf: TensorHandle,
        inv_scale: TensorHandle,
    ) -> c_int;
    pub fn asl_channels_last(tensor: TensorHandle, out: *mut TensorHandle) -> c_int;
    pub fn asl_is_channels_last(tensor: TensorHandle) -> c_int;
    pub fn asl_rng_state(cuda_device: c_int, out: *mut TensorHandle) -> c_int;
    pub fn asl_rng_set_state(cuda_device: c_int, state: TensorHandle) -> c_int;
    pub fn asl_rng_seed(cuda_device: c_int, seed: u64) -> c_int;
    pub fn asl_set_tf32(enabled: c_int) -> c_int;
    pub fn asl_tf32_enabled() -> c_int;
    pub fn asl_autocast_enter(previous: *mut c_int) -> c_int;
    pub fn asl_autocast_exit(previous: c_int) -> c_int;
    #[cfg(test)]
    pub fn asl_autocast_enabled() -> c_int;
}

/// tch's handle of `tensor`, for the native layer (which changes tensors
/// in place through it, never the handle itself).
pub fn handle(tensor: &tch::Tensor) -> TensorHandle {
    tensor.as_ptr() as TensorHandle
}

pub fn handles<'a>(tensors: impl IntoIterator<Item = &'a tch::Tensor>) -> Vec<TensorHandle> {
    tensors.into_iter().map(handle).collect()
}

/// The message of the last failed call on this thread.
pub fn last_error() -> String {
    // SAFETY: the shim returns a pointer into a thread-local std::string that lives until the next failing call.
    unsafe { std::ffi::CStr::from_ptr(asl_last_error()) }.to_string_lossy().into_owned()
}
