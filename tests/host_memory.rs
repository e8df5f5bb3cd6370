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

/// The allocator variables a user may set, which make `keep_freed_memory` stand aside.
const ALLOCATOR_VARIABLES: [&str; 5] =
    ["GLIBC_TUNABLES", "LD_PRELOAD", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"];

#[test]
fn activations_come_from_the_heap_and_stay_there() {
    // The check runs in a child with glibc's defaults, whatever allocator this shell chose, so that it
    // never has to be skipped.
    if std::env::var_os("ASL_HOST_MEMORY_CHILD").is_none() {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child.args(["activations_come_from_the_heap_and_stay_there", "--exact", "--nocapture"]);
        for name in ALLOCATOR_VARIABLES {
            child.env_remove(name);
        }
        let output = child.env("ASL_HOST_MEMORY_CHILD", "1").output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && text.contains("1 passed"),
            "{text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
    let (mapped_before, _) = glibc_counters();
    let tensor = allocate_activation();
    let (mapped_default, _) = glibc_counters();
    drop(tensor);
    // glibc's default, the premise of the setting: an 8 MiB tensor is its own mmap.
    assert!(mapped_default >= mapped_before + TENSOR_BYTES, "{mapped_before} -> {mapped_default}");

    assert_eq!(keep_freed_memory(), HostMemory::Kept, "the child's environment leaves the allocator to asl");
    let (mapped_before, heap_before) = glibc_counters();
    let tensor = allocate_activation();
    let (mapped_during, heap_during) = glibc_counters();
    assert!(mapped_during < mapped_before + TENSOR_BYTES, "still mmap'd: {mapped_before} -> {mapped_during}");
    assert!(heap_during >= heap_before, "heap {heap_before} -> {heap_during}");
    drop(tensor);
    assert_eq!(glibc_counters(), (mapped_during, heap_during), "the freed tensor left the heap");
}
