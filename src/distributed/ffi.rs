//! The C ABI of `src/native/dist.cpp`. Every function returns 0 on success
//! and -1 on failure, with the message in `asl_last_error` on the calling
//! thread; none lets a C++ exception through.

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
    pub fn asl_lost_ranks(group: *mut AslGroup, wait_ms: c_int, lost: *mut c_int) -> c_int;
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
}

/// The message of the last failed call on this thread.
pub fn last_error() -> String {
    // SAFETY: the shim returns a pointer into a thread-local std::string that lives until the next failing call.
    unsafe { std::ffi::CStr::from_ptr(asl_last_error()) }.to_string_lossy().into_owned()
}
