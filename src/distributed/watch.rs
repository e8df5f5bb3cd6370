//! A watcher of the group's heartbeats ([`super::liveness`]). A peer that
//! dies closes its sockets and the next Gloo collective fails at once; one
//! that hangs alive (stopped, swapping, stuck in a driver), or any loss under
//! NCCL, whose `wait()` does not block the host, leaves this rank waiting
//! until the collective's own timeout, 10 minutes by default. So while this
//! rank waits on its peers (a step or a collective is [in flight](InFlight)),
//! the watcher reads every heartbeat once per poll, in one store round trip,
//! and judges:
//!
//! - a peer whose beats stopped for `distributed.heartbeat_timeout_s` is
//!   lost (dead, stopped or hung whole);
//! - a peer that beats but whose main loop has not moved for
//!   `distributed.stall_timeout_s` is stalled (a deadlocked loader, a hung
//!   device), named with its last optimizer step;
//! - a store that stops answering is named as the store and its host;
//! - this rank's own beat thread dying is reported at once, since its peers
//!   would soon take it as lost.
//!
//! The owner's [`LostRankHandler`] is told after the group is aborted
//! (NCCL's communicators, which frees a waiting host and its kernels).

use super::liveness::{Heartbeat, Liveness};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the heartbeats are read (the native layer beats every 250 ms).
const POLL: Duration = Duration::from_millis(250);

/// What went wrong with the group.
#[derive(Debug, Clone, PartialEq)]
pub enum Lost {
    /// Peers whose beats stopped: dead, or stopped whole.
    Silent { ranks: Vec<usize>, silent_for: Duration },
    /// Peers that beat while their training does not move; each with its last optimizer step.
    Stalled { ranks: Vec<(usize, i64)>, still_for: Duration },
    /// The rendezvous store stopped answering.
    Store { address: String, host: String, error: String },
    /// This rank's own beat thread died.
    OwnHeartbeat { error: String },
}

/// A failure of the group, as the watcher saw it from rank `rank`.
#[derive(Debug, Clone, PartialEq)]
pub struct LostRank {
    pub rank: usize,
    pub lost: Lost,
}

impl std::fmt::Display for LostRank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let joined = |ranks: &mut dyn Iterator<Item = usize>| named(ranks.map(|r| r.to_string()).collect());
        let rank = self.rank;
        match &self.lost {
            Lost::Silent { ranks, silent_for } => write!(
                f,
                "lost rank {} (its heartbeat stopped {:.0} s ago while rank {rank} waited for it)",
                joined(&mut ranks.iter().copied()),
                silent_for.as_secs_f64()
            )?,
            Lost::Stalled { ranks, still_for } => {
                let steps = named(ranks.iter().map(|(r, s)| format!("rank {r} at optimizer step {s}")).collect());
                write!(
                    f,
                    "rank {} stalled: its heartbeat goes on but its training has not moved for {:.0} s ({}) while \
                     rank {rank} waited for it",
                    joined(&mut ranks.iter().map(|(r, _)| *r)),
                    still_for.as_secs_f64(),
                    steps
                )?
            }
            Lost::Store { address, host, error } => write!(
                f,
                "the rendezvous store at {address} stopped answering while rank {rank} waited on its peers: its \
                 host ({host}) is gone or unreachable ({error})"
            )?,
            Lost::OwnHeartbeat { error } => {
                write!(f, "the heartbeat thread of rank {rank} died ({error}), so its peers would take it as lost")?
            }
        }
        f.write_str("; the process group was aborted")
    }
}

/// The first few of `items`, joined, and how many more there are: a lost
/// switch can silence hundreds of ranks at once.
fn named(items: Vec<String>) -> String {
    const SHOWN: usize = 8;
    match items.len() {
        n if n > SHOWN => format!("{} and {} more", items[..SHOWN].join(", "), n - SHOWN),
        _ => items.join(", "),
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
    pub fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Where the store is, for naming it when it is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreAddress {
    pub address: String,
    /// Who hosts it: "rank 0" or "torchrun's agent on <host>".
    pub host: String,
}

/// How the watcher judges.
#[derive(Debug, Clone)]
pub struct WatchSetup {
    pub rank: usize,
    pub world: usize,
    /// Beats silent this long: lost.
    pub heartbeat_timeout: Duration,
    /// Beats going on, progress still this long: stalled.
    pub stall_timeout: Duration,
    pub store: StoreAddress,
    /// Non-zero while this rank waits on its peers.
    pub in_flight: Arc<AtomicUsize>,
}

/// Each peer as last seen, and when its beats and its progress last moved.
/// Pure bookkeeping over readings and instants, so that its rules are
/// tested without processes.
#[derive(Debug, Clone)]
pub struct Judge {
    rank: usize,
    heartbeat_timeout: Duration,
    stall_timeout: Duration,
    seen: Vec<(Heartbeat, Instant, Instant)>,
}

impl Judge {
    /// Every peer counts as just seen at `now`.
    pub fn new(rank: usize, world: usize, heartbeat_timeout: Duration, stall_timeout: Duration, now: Instant) -> Self {
        let unseen = Heartbeat { beats: -1, progress: -1, step: 0 };
        Self { rank, heartbeat_timeout, stall_timeout, seen: vec![(unseen, now, now); world] }
    }

    /// Takes in one reading of every rank's heartbeat, made at `now`.
    pub fn observe(&mut self, now: Instant, readings: &[Heartbeat]) {
        for ((last, beat_at, progress_at), reading) in self.seen.iter_mut().zip(readings) {
            if reading.beats != last.beats {
                *beat_at = now;
            }
            if reading.progress != last.progress {
                *progress_at = now;
            }
            *last = *reading;
        }
    }

    /// Peers silent past the heartbeat timeout, else peers that beat
    /// without progress past the stall timeout, at `now`.
    pub fn verdict(&self, now: Instant) -> Option<Lost> {
        let peers = || self.seen.iter().enumerate().filter(|(r, _)| *r != self.rank);
        let silent: Vec<(usize, Duration)> = peers()
            .map(|(r, (_, beat_at, _))| (r, now.duration_since(*beat_at)))
            .filter(|(_, silent)| *silent >= self.heartbeat_timeout)
            .collect();
        if !silent.is_empty() {
            let silent_for = silent.iter().map(|(_, d)| *d).max().unwrap_or_default();
            return Some(Lost::Silent { ranks: silent.into_iter().map(|(r, _)| r).collect(), silent_for });
        }
        let stalled: Vec<(usize, i64, Duration)> = peers()
            .map(|(r, (last, _, progress_at))| (r, last.step, now.duration_since(*progress_at)))
            .filter(|(_, _, still)| *still >= self.stall_timeout)
            .collect();
        let still_for = stalled.iter().map(|(_, _, d)| *d).max()?;
        Some(Lost::Stalled { ranks: stalled.into_iter().map(|(r, s, _)| (r, s)).collect(), still_for })
    }
}

/// How long the watcher's checks (one store round trip each) took.
#[derive(Debug, Default)]
pub struct CheckTimes {
    /// Checks made.
    pub checks: AtomicU64,
    /// Checks by latency: bucket `i` counts those of `[2^i, 2^(i+1))` µs.
    pub buckets: [AtomicU64; 32],
}

impl CheckTimes {
    fn record(&self, latency: Duration) {
        let micros = latency.as_micros().max(1) as u64;
        self.buckets[(63 - micros.leading_zeros() as usize).min(31)].fetch_add(1, Ordering::Relaxed);
        self.checks.fetch_add(1, Ordering::Relaxed);
    }

    /// The latency below which a fraction `q` of the checks fell (a bucket's upper bound).
    pub fn quantile(&self, q: f64) -> Duration {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let wanted = (q * counts.iter().sum::<u64>() as f64).ceil() as u64;
        let mut seen = 0;
        for (i, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= wanted.max(1) {
                return Duration::from_micros(2u64 << i);
            }
        }
        Duration::from_micros(2u64 << 31)
    }
}

/// The thread that reads the heartbeats and acts on a verdict.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    times: Arc<CheckTimes>,
}

impl Watcher {
    /// Watches through `liveness` until dropped; at the first failure
    /// calls `on_lost` once and stops.
    pub fn start(liveness: Arc<Liveness>, setup: WatchSetup, on_lost: Box<dyn Fn(LostRank) + Send>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let times = Arc::new(CheckTimes::default());
        let (flag, timed) = (Arc::clone(&stop), Arc::clone(&times));
        let thread = std::thread::Builder::new()
            .name("asl-heartbeat-watch".into())
            .spawn(move || {
                if let Some(lost) = watch(&liveness, &setup, &flag, &timed) {
                    on_lost(LostRank { rank: setup.rank, lost });
                }
            })
            .expect("a thread can be spawned");
        Self { stop, thread: Some(thread), times }
    }

    /// How long its checks took so far.
    pub fn times(&self) -> &CheckTimes {
        &self.times
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // Wakes it from its wait between polls, so that dropping a group does not wait out a poll.
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Polls until stopped or until something is lost, which it returns.
fn watch(liveness: &Liveness, setup: &WatchSetup, stop: &AtomicBool, times: &CheckTimes) -> Option<Lost> {
    let mut judge = Judge::new(setup.rank, setup.world, setup.heartbeat_timeout, setup.stall_timeout, Instant::now());
    loop {
        // A wake-up before the poll is due (a drop, or a spurious one) only checks the stop flag sooner.
        std::thread::park_timeout(POLL);
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        if let Some(error) = liveness.dead() {
            return Some(Lost::OwnHeartbeat { error });
        }
        let asked = Instant::now();
        let reading = liveness.read(setup.heartbeat_timeout);
        let now = Instant::now();
        times.record(now - asked);
        let in_flight = setup.in_flight.load(Ordering::SeqCst) > 0;
        match reading {
            Ok(readings) => judge.observe(now, &readings),
            Err(error) if in_flight && !stop.load(Ordering::SeqCst) => {
                let StoreAddress { address, host } = setup.store.clone();
                return Some(Lost::Store { address, host, error });
            }
            Err(_) => continue,
        }
        if in_flight {
            if let Some(lost) = judge.verdict(now) {
                return Some(lost);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(beats: i64, progress: i64, step: i64) -> Heartbeat {
        Heartbeat { beats, progress, step }
    }

    #[test]
    fn a_silent_peer_is_lost_after_the_heartbeat_timeout_and_not_before() {
        let start = Instant::now();
        let second = |s: u64| start + Duration::from_secs(s);
        let mut judge = Judge::new(0, 3, Duration::from_secs(5), Duration::from_secs(60), start);
        for s in 0..=10 {
            // Rank 1 beats and trains; rank 2 beat once, at 0 s, and went silent.
            let (n, one, two) = (s as i64, beat(s as i64, s as i64, s as i64), beat(1, 1, 7));
            judge.observe(second(s), &[beat(n, n, 0), one, two]);
            let verdict = judge.verdict(second(s));
            let expected = (s >= 5).then(|| Lost::Silent { ranks: vec![2], silent_for: Duration::from_secs(s) });
            assert_eq!(verdict, expected, "at {s} s");
        }
    }

    #[test]
    fn a_peer_that_beats_without_progress_is_stalled_with_its_last_step() {
        let start = Instant::now();
        let mut judge = Judge::new(1, 2, Duration::from_secs(5), Duration::from_secs(30), start);
        for s in 0..=40u64 {
            // Rank 0's thread beats every second; its training stopped at step 12 after 10 s.
            let progress = s.min(10) as i64;
            judge.observe(start + Duration::from_secs(s), &[beat(s as i64, progress, progress + 2), beat(0, 0, 0)]);
        }
        assert_eq!(judge.verdict(start + Duration::from_secs(39)), None);
        let verdict = judge.verdict(start + Duration::from_secs(40));
        assert_eq!(verdict, Some(Lost::Stalled { ranks: vec![(0, 12)], still_for: Duration::from_secs(30) }));
    }

    #[test]
    fn the_judge_never_names_its_own_rank() {
        let start = Instant::now();
        let mut judge = Judge::new(0, 2, Duration::from_secs(1), Duration::from_secs(1), start);
        judge.observe(start, &[beat(0, 0, 0), beat(0, 0, 0)]);
        let later = start + Duration::from_secs(3);
        judge.observe(later, &[beat(0, 0, 0), beat(3, 3, 3)]);
        assert_eq!(judge.verdict(later), None, "rank 0 is silent, but it is the judge");
    }

    #[test]
    fn check_times_fall_in_power_of_two_buckets() {
        let times = CheckTimes::default();
        for micros in [3, 3, 3, 100, 5000] {
            times.record(Duration::from_micros(micros));
        }
        assert_eq!(times.checks.load(Ordering::Relaxed), 5);
        assert_eq!(times.quantile(0.5), Duration::from_micros(4), "3 µs lies in [2, 4)");
        assert_eq!(times.quantile(0.8), Duration::from_micros(128));
        assert_eq!(times.quantile(1.0), Duration::from_micros(8192));
    }

    #[test]
    fn messages_name_the_rank_the_step_and_the_store() {
        let stalled =
            LostRank { rank: 0, lost: Lost::Stalled { ranks: vec![(1, 30)], still_for: Duration::from_secs(5) } };
        assert_eq!(
            stalled.to_string(),
            "rank 1 stalled: its heartbeat goes on but its training has not moved for 5 s (rank 1 at optimizer step \
             30) while rank 0 waited for it; the process group was aborted"
        );
        let many =
            LostRank { rank: 0, lost: Lost::Silent { ranks: (1..=20).collect(), silent_for: Duration::from_secs(30) } };
        assert!(many.to_string().starts_with("lost rank 1, 2, 3, 4, 5, 6, 7, 8 and 12 more (its heartbeat"), "{many}");
        let store = LostRank {
            rank: 1,
            lost: Lost::Store { address: "node0:29500".into(), host: "rank 0".into(), error: "Broken pipe".into() },
        };
        assert!(store.to_string().starts_with("the rendezvous store at node0:29500 stopped answering"), "{store}");
        assert!(store.to_string().contains("its host (rank 0) is gone"), "{store}");
    }
}
