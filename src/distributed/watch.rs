//! A watcher of the group's heartbeats. A peer that dies closes its
//! sockets and the next Gloo collective fails at once; one that hangs
//! alive (stopped, swapping, stuck in a driver), or any loss under NCCL,
//! whose `wait()` does not block the host, leaves this rank waiting until
//! the collective's own timeout, 10 minutes by default. So while this rank
//! waits on its peers (a step or a collective is [in flight](InFlight)), a
//! peer whose heartbeat has not moved for the heartbeat timeout is taken
//! as lost: the group is aborted (NCCL's communicators, which frees the
//! waiting host and kernels) and the owner's [`LostRankHandler`] is told,
//! naming the rank.

use crate::native::{self as ffi, AslGroup};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the heartbeats are read (the native layer beats every 250 ms).
const POLL: Duration = Duration::from_millis(250);

/// A lost peer, as the watcher saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct LostRank {
    /// This process's rank.
    pub rank: usize,
    /// The ranks whose heartbeat stopped.
    pub lost: Vec<usize>,
    /// How long the longest-silent of them has been silent.
    pub silent_for: Duration,
    /// The rendezvous store itself stopped answering (its host, rank 0 without torchrun's agent, is gone).
    pub store_lost: bool,
}

impl std::fmt::Display for LostRank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ranks: Vec<String> = self.lost.iter().map(usize::to_string).collect();
        let whose = if self.store_lost { "the rendezvous store's host, " } else { "" };
        write!(
            f,
            "lost rank {} ({whose}its heartbeat stopped {:.0} s ago while rank {} waited for it); the process group \
             was aborted",
            ranks.join(", "),
            self.silent_for.as_secs_f64(),
            self.rank
        )
    }
}

/// What to do once the group is aborted because a peer was lost. The
/// library only aborts; ending the process is the binary's decision.
#[derive(Clone)]
pub struct LostRankHandler(pub Arc<dyn Fn(&LostRank) + Send + Sync>);

impl std::fmt::Debug for LostRankHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LostRankHandler")
    }
}

/// Marks this rank as waiting on its peers for as long as it lives.
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub(super) fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The group's pointer, used by the watcher thread only while the group lives (it is joined first).
struct GroupPointer(*mut AslGroup);
// SAFETY: the native functions the watcher calls use their own store client and the group's abort, both
// safe to call from another thread; the thread is joined before the group is freed.
unsafe impl Send for GroupPointer {}

pub(super) struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What the watcher needs to know of its group.
pub(super) struct WatchSetup {
    pub rank: usize,
    pub world: usize,
    /// Rank 0 hosts the store (no torchrun agent does): a silent store means rank 0 is gone.
    pub rank0_hosts_store: bool,
    pub timeout: Duration,
    pub in_flight: Arc<AtomicUsize>,
    pub handler: Option<LostRankHandler>,
}

impl Watcher {
    pub(super) fn start(raw: *mut AslGroup, setup: WatchSetup) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let group = GroupPointer(raw);
        let thread = std::thread::Builder::new()
            .name("asl-heartbeat-watch".into())
            .spawn(move || watch(&group, &setup, &flag))
            .expect("a thread can be spawned");
        Self { stop, thread: Some(thread) }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn watch(group: &GroupPointer, setup: &WatchSetup, stop: &AtomicBool) {
    let now = Instant::now();
    let mut counts = vec![0i64; setup.world];
    let mut last = vec![-1i64; setup.world];
    let mut moved_at = vec![now; setup.world];
    let timeout_ms = i32::try_from(setup.timeout.as_millis()).unwrap_or(i32::MAX).max(1);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(POLL);
        // SAFETY: `counts` has one slot per rank; the group outlives this thread.
        let store_lost = unsafe { ffi::asl_heartbeats(group.0, timeout_ms, counts.as_mut_ptr()) } != 0;
        let now = Instant::now();
        if !store_lost {
            for (r, &count) in counts.iter().enumerate() {
                if count != last[r] {
                    (last[r], moved_at[r]) = (count, now);
                }
            }
        }
        if setup.in_flight.load(Ordering::SeqCst) == 0 {
            continue;
        }
        let silent: Vec<usize> =
            (0..setup.world).filter(|&r| r != setup.rank && now.duration_since(moved_at[r]) >= setup.timeout).collect();
        let lost = match (store_lost, silent.is_empty()) {
            (true, _) if setup.rank0_hosts_store && setup.rank != 0 => vec![0],
            (_, false) => silent,
            _ => continue,
        };
        let silent_for = lost.iter().map(|&r| now.duration_since(moved_at[r])).max().unwrap_or_default();
        // SAFETY: as above. A failed abort leaves the handler to end the wait.
        let _ = unsafe { ffi::asl_group_abort(group.0) };
        if let Some(handler) = &setup.handler {
            (handler.0)(&LostRank { rank: setup.rank, lost, silent_for, store_lost });
        }
        return;
    }
}
