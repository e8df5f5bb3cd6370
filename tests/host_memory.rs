//! `keep_freed_memory` makes libtorch's CPU tensors come from glibc's heap
//! and stay there when freed, read from glibc's own counters. (That the
//! heap then stops growing over a training run is measured, not tested:
//! see the README's benchmarks.) One test in
//! its own process, because the setting is process-wide.

use asl::host_memory::{keep_freed_memory, HostMemory};
use tch::{Kind, Tensor};

/// Bytes glibc holds in mmap'd blocks, and in its main heap.
fn glibc_counters() -> (usize, usize) {
    // SAFETY: mallinfo2 only reads malloc's statistics.
    let info = unsafe { libc::mallinfo2() };
    (info.hblkhd, info.arena)
}

const TENSOR_BYTES: usize = 8 << 20;

fn allocate_activation() -> Tensor {
    Tensor::ones([(TENSOR_BYTES / 4) as i64], (Kind::Float, tch::Device::Cpu))
}

#[test]
fn activations_come_from_the_heap_and_stay_there() {
    let (mapped_before, _) = glibc_counters();
    let tensor = allocate_activation();
    let (mapped_default, _) = glibc_counters();
    drop(tensor);
    // glibc's default, the premise of the setting: an 8 MiB tensor is its own mmap.
    assert!(mapped_default >= mapped_before + TENSOR_BYTES, "{mapped_before} -> {mapped_default}");

    match keep_freed_memory() {
        HostMemory::Kept => {}
        other => {
            eprintln!("SKIPPED: the environment chose the allocator ({other:?})");
            return;
        }
    }
    let (mapped_before, heap_before) = glibc_counters();
    let tensor = allocate_activation();
    let (mapped_during, heap_during) = glibc_counters();
    assert!(mapped_during < mapped_before + TENSOR_BYTES, "still mmap'd: {mapped_before} -> {mapped_during}");
    assert!(heap_during >= heap_before, "heap {heap_before} -> {heap_during}");
    drop(tensor);
    assert_eq!(glibc_counters(), (mapped_during, heap_during), "the freed tensor left the heap");
}
