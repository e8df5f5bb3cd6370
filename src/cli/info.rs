//! `asl info`: which libtorch this binary loaded and which devices it sees.

use anyhow::Result;
use asl::host_memory::HostMemory;

pub fn run(host_memory: HostMemory) -> Result<()> {
    println!("asl {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch: {}", loaded_libtorch().unwrap_or_else(|| "(not found in /proc/self/maps)".into()));
    println!("libtorch threads: {}", tch::get_num_threads());
    println!(
        "host memory: {}",
        match host_memory {
            HostMemory::Kept => "freed blocks kept for reuse (glibc mmap threshold 32 MiB, no trimming)",
            HostMemory::UserChoice => "as the environment sets it (GLIBC_TUNABLES, MALLOC_*_ or LD_PRELOAD)",
            HostMemory::Unchanged => "the C library's defaults",
        }
    );
    let cuda = tch::Cuda::is_available();
    println!("CUDA available: {cuda}");
    if cuda {
        println!("CUDA devices: {}", tch::Cuda::device_count());
        println!("cuDNN available: {}", tch::Cuda::cudnn_is_available());
    }
    Ok(())
}

/// The path of the `libtorch_cpu.so` mapped into this process: which
/// install the rpath (or `LD_LIBRARY_PATH`) resolved to.
fn loaded_libtorch() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .map(str::to_string)
}
