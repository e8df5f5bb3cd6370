//! Keeps freed host memory in the process for reuse.
//!
//! libtorch allocates every CPU tensor with `posix_memalign`. glibc serves a
//! block above its mmap threshold (128 KiB at first) with a fresh `mmap` and
//! unmaps it on free. A training step allocates the same activations every
//! time, so each step pays their page faults and the kernel's zeroing again.
//! PyTorch's CPU tuning guides preload jemalloc or tcmalloc against this.
//! glibc does the same when its mmap threshold is at its maximum and the heap
//! is never trimmed; the README's benchmarks give what that is worth to the
//! CPU train step. The price is that the process keeps its peak heap until it exits.

/// What [`keep_freed_memory`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMemory {
    /// Blocks up to 32 MiB come from the heap, and freed memory stays there.
    Kept,
    /// The user chose the allocator's behaviour (glibc's malloc tunables or a
    /// preloaded allocator), and it is left alone.
    UserChoice,
    /// The C library is not glibc, or refused the settings.
    Unchanged,
}

/// glibc's largest mmap threshold on 64-bit targets (`DEFAULT_MMAP_THRESHOLD_MAX`).
const MMAP_THRESHOLD_MAX: i32 = 32 << 20;

/// Raises glibc's mmap threshold to its maximum and turns off heap
/// trimming, unless the environment already says how to allocate. Call it
/// at the start of a training or inference process.
pub fn keep_freed_memory() -> HostMemory {
    if user_chose_allocator(|name| std::env::var(name).ok()) {
        return HostMemory::UserChoice;
    }
    set_glibc_thresholds()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_glibc_thresholds() -> HostMemory {
    // SAFETY: mallopt only changes malloc's parameters; it is thread-safe in glibc.
    let kept = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
    };
    if kept {
        HostMemory::Kept
    } else {
        HostMemory::Unchanged
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_glibc_thresholds() -> HostMemory {
    HostMemory::Unchanged
}

/// Whether the environment (read through `var`) sets glibc's malloc
/// tunables or preloads another allocator.
fn user_chose_allocator(var: impl Fn(&str) -> Option<String>) -> bool {
    let tunes_malloc = var("GLIBC_TUNABLES").is_some_and(|t| t.contains("glibc.malloc."));
    let legacy = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"];
    let preloads_allocator = var("LD_PRELOAD").is_some_and(|p| p.contains("malloc"));
    tunes_malloc || preloads_allocator || legacy.iter().any(|name| var(name).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_users_allocator_settings_win() {
        assert!(!user_chose_allocator(env(&[])));
        assert!(!user_chose_allocator(env(&[("GLIBC_TUNABLES", "glibc.rtld.nns=2"), ("LD_PRELOAD", "libfoo.so")])));
        assert!(user_chose_allocator(env(&[("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")])));
        assert!(user_chose_allocator(env(&[("MALLOC_TRIM_THRESHOLD_", "0")])));
        assert!(user_chose_allocator(env(&[("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")])));
    }
}
