//! Each rank's heartbeat in the rendezvous store, and how a watcher reads
//! them: one `multiGet` of every rank's key per check, whatever the world
//! size. A heartbeat carries three numbers: beats (the process lives),
//! progress (its main loop moved: a batch, a validation batch, a checkpoint
//! file) and its last optimizer step, so that a rank whose beat thread lives
//! while its training is stuck is told apart from one that trains.
//!
//! A process group owns one [`Liveness`]; [`StoreServer`] and
//! [`Liveness::connect`] let a test or benchmark simulate many ranks on one
//! store without process groups.

use super::error::{DistError, Result};
use crate::native::{self as ffi, AslLiveness, AslStoreServer};
use std::ffi::CString;
use std::time::Duration;

/// One rank's heartbeat as last published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat {
    pub beats: i64,
    pub progress: i64,
    pub step: i64,
}

/// A rank's heartbeat publisher and its watcher's store client.
pub struct Liveness {
    raw: *mut AslLiveness,
    owned: bool,
    world: usize,
}

// SAFETY: the native object is made for use from several threads: its counters are atomics, the beat
// thread has a store client of its own, and the watcher's client is a TCPStore, which serialises its calls.
unsafe impl Send for Liveness {}
unsafe impl Sync for Liveness {}

impl Liveness {
    /// A heartbeat of rank `rank` of `world` in the store at
    /// `host:port`, keys under `prefix`: its first beat is published before
    /// this returns, then one every 250 ms from a thread of its own.
    pub fn connect(host: &str, port: u16, prefix: &str, rank: usize, world: usize, timeout: Duration) -> Result<Self> {
        let fail = |message: String| DistError::Join { rank, address: format!("{host}:{port}"), message };
        let host_c = CString::new(host).map_err(|e| fail(e.to_string()))?;
        let prefix_c = CString::new(prefix).map_err(|e| fail(e.to_string()))?;
        let timeout_s = i32::try_from(timeout.as_secs().max(1)).unwrap_or(i32::MAX);
        let mut raw = std::ptr::null_mut();
        // SAFETY: the strings outlive the call; `raw` is written on success only.
        let status = unsafe {
            ffi::asl_liveness_new(
                host_c.as_ptr(),
                i32::from(port),
                prefix_c.as_ptr(),
                rank as i32,
                world as i32,
                timeout_s,
                &mut raw,
            )
        };
        if status != 0 {
            return Err(fail(ffi::last_error()));
        }
        Ok(Self { raw, owned: true, world })
    }

    /// The heartbeat a process group owns (freed with the group).
    pub(super) fn borrowed(raw: *mut AslLiveness, world: usize) -> Self {
        Self { raw, owned: false, world }
    }

    /// The main loop moved: one more unit of work, at optimizer step
    /// `step` (`None`: at the step it was at).
    pub fn record_progress(&self, step: Option<u64>) {
        let step = step.map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX));
        // SAFETY: the native object is live; the call only updates atomics.
        unsafe { ffi::asl_liveness_progress(self.raw, step) }
    }

    /// Every rank's heartbeat, in one store round trip that gives up after
    /// `timeout` (the store's host is then gone or stopped).
    pub fn read(&self, timeout: Duration) -> std::result::Result<Vec<Heartbeat>, String> {
        let (mut beats, mut progress, mut steps) = (vec![0; self.world], vec![0; self.world], vec![0; self.world]);
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: each output has one slot per rank, as the native object's world.
        let status = unsafe {
            ffi::asl_liveness_read(self.raw, timeout_ms, beats.as_mut_ptr(), progress.as_mut_ptr(), steps.as_mut_ptr())
        };
        if status != 0 {
            return Err(ffi::last_error());
        }
        Ok((0..self.world).map(|r| Heartbeat { beats: beats[r], progress: progress[r], step: steps[r] }).collect())
    }

    /// Why the beat thread died, once it has; `None` while it beats.
    pub fn dead(&self) -> Option<String> {
        let mut message = vec![0u8; 512];
        // SAFETY: `message` holds `len` bytes, which the native side NUL-terminates.
        let dead = unsafe { ffi::asl_liveness_dead(self.raw, message.as_mut_ptr().cast(), message.len()) } != 0;
        dead.then(|| {
            let end = message.iter().position(|&b| b == 0).unwrap_or(message.len());
            String::from_utf8_lossy(&message[..end]).into_owned()
        })
    }

    /// Fault injection: the beat thread fails at its next beat, as it would
    /// on a store error.
    pub fn fail_for_testing(&self) {
        // SAFETY: sets an atomic flag.
        unsafe { ffi::asl_liveness_fail(self.raw) }
    }

    /// Store round trips made so far by the beat thread and the watcher's client.
    pub fn requests(&self) -> u64 {
        // SAFETY: reads an atomic counter.
        unsafe { ffi::asl_liveness_requests(self.raw) }.max(0) as u64
    }

    pub fn world_size(&self) -> usize {
        self.world
    }
}

impl Drop for Liveness {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: `raw` came from `asl_liveness_new` and is freed once.
            unsafe { ffi::asl_liveness_free(self.raw) }
        }
    }
}

/// A rendezvous store hosted by this process on 127.0.0.1, for tests and
/// benchmarks of the heartbeats without a process group.
pub struct StoreServer {
    raw: *mut AslStoreServer,
    port: u16,
}

// SAFETY: the server runs on libtorch's own threads; this handle only frees it.
unsafe impl Send for StoreServer {}

impl StoreServer {
    /// Hosts a store on a free port.
    pub fn start(timeout: Duration) -> Result<Self> {
        let (mut raw, mut port) = (std::ptr::null_mut(), 0);
        let timeout_s = i32::try_from(timeout.as_secs().max(1)).unwrap_or(i32::MAX);
        // SAFETY: `raw` and `port` are written on success only.
        let status = unsafe { ffi::asl_store_server_new(0, timeout_s, &mut port, &mut raw) };
        if status != 0 {
            return Err(DistError::Join { rank: 0, address: "127.0.0.1:0".into(), message: ffi::last_error() });
        }
        Ok(Self { raw, port: port as u16 })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `asl_store_server_new` and is freed once.
        unsafe { ffi::asl_store_server_free(self.raw) }
    }
}
