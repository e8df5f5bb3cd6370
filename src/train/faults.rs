//! Faults injected at chosen points of a run, so that tests of preemption,
//! restarts, stalls and crashes stop a run at a step they choose, never
//! after a sleep. The binary reads them from `ASL_FAULT`; a run without it
//! has none, and a restarted attempt (torchrun's or Slurm's restart count
//! above 0) runs clean, so that the fault which ended the first attempt
//! does not end the restart too.
//!
//! `ASL_FAULT` holds `ACTION@POINT[/rank=R]` entries separated by `;`:
//!
//! | action | what it does |
//! |---|---|
//! | `SIGTERM`, `SIGINT`, `SIGUSR1`, `SIGKILL`, `SIGSTOP` | raises the signal in this process |
//! | `SIGTERM:parent` (any of those signals) | sends it to the parent: torchrun, which passes it on as on a preemption |
//! | `stall` | the main loop stops moving for good; the heartbeat thread goes on |
//! | `heartbeat-dies` | the heartbeat thread fails, as on a store error |
//! | `sleep:MS` | the main loop sleeps MS milliseconds |
//!
//! | point | when |
//! |---|---|
//! | `step=N` | after optimizer step N, before the ranks agree on stopping |
//! | `step=+N` | after the N-th optimizer step this process takes |
//! | `steps=A..B` | after each of the steps A to B |
//! | `checkpoint=K:PHASE` | in the K-th checkpoint this process writes, once PHASE is done (`CheckpointPhase`) |
//! | `setup=export`, `setup=index` | once the model export or the index build has started |

use super::checkpoint::CheckpointPhase;
use crate::distributed::Liveness;
use std::str::FromStr;
use std::time::Duration;

/// Where in a run a fault can strike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// After optimizer step `step`, the `taken`-th this process took.
    Step { step: u64, taken: u64 },
    /// In the `nth` checkpoint this process writes (1-based), after `phase`.
    Checkpoint { nth: usize, phase: CheckpointPhase },
    /// A set-up phase has started.
    Setup(SetupPhase),
}

/// The long phases of a run's set-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupPhase {
    /// The timm export (and any hub download) runs in its child process.
    Export,
    /// The dataset's index is being built.
    Index,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    Signal(i32),
    SignalParent(i32),
    Stall,
    HeartbeatDies,
    Sleep(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum When {
    Step(u64),
    Taken(u64),
    Steps(u64, u64),
    Checkpoint(usize, CheckpointPhase),
    Setup(SetupPhase),
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Fault {
    action: Action,
    when: When,
    rank: Option<usize>,
}

/// The faults of a run; the default has none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    faults: Vec<Fault>,
}

impl FaultPlan {
    /// Parses `ASL_FAULT`'s value; an error names the entry at fault.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let faults = spec.split(';').map(str::trim).filter(|e| !e.is_empty()).map(parse_fault);
        Ok(Self { faults: faults.collect::<Result<_, _>>()? })
    }

    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    /// Carries out every fault of `point` meant for `rank`. `liveness`:
    /// this rank's heartbeat, if it has one.
    pub fn strike(&self, point: FaultPoint, rank: usize, liveness: Option<&Liveness>) {
        for fault in self.faults.iter().filter(|f| f.rank.is_none_or(|r| r == rank) && f.when.matches(point)) {
            // The one thing the library prints: a test reads when its fault struck.
            eprintln!("fault injected on rank {rank}: {:?} at {point:?}", fault.action);
            match fault.action {
                // SAFETY: raise(3) sends a signal to this process; the handlers asl installs only set flags.
                Action::Signal(signal) => unsafe {
                    libc::raise(signal);
                },
                // SAFETY: kill(2) of the parent process, which launched this one to be signalled so.
                Action::SignalParent(signal) => unsafe {
                    libc::kill(libc::getppid(), signal);
                },
                Action::Stall => loop {
                    std::thread::sleep(Duration::from_secs(3600));
                },
                Action::HeartbeatDies => {
                    if let Some(liveness) = liveness {
                        liveness.fail_for_testing();
                        // Until the watcher has seen it, as a store error would leave it.
                        while liveness.dead().is_none() {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                Action::Sleep(duration) => std::thread::sleep(duration),
            }
        }
    }
}

impl When {
    fn matches(self, point: FaultPoint) -> bool {
        match (self, point) {
            (When::Step(n), FaultPoint::Step { step, .. }) => n == step,
            (When::Taken(n), FaultPoint::Step { taken, .. }) => n == taken,
            (When::Steps(a, b), FaultPoint::Step { step, .. }) => (a..=b).contains(&step),
            (When::Checkpoint(k, p), FaultPoint::Checkpoint { nth, phase }) => k == nth && p == phase,
            (When::Setup(p), FaultPoint::Setup(q)) => p == q,
            _ => false,
        }
    }
}

fn parse_fault(entry: &str) -> Result<Fault, String> {
    let bad = |why: &str| format!("ASL_FAULT entry `{entry}`: {why}");
    let (action, rest) = entry.split_once('@').ok_or_else(|| bad("expected ACTION@POINT[/rank=R]"))?;
    let (point, rank) = match rest.split_once('/') {
        Some((point, rank)) => {
            let rank = rank.strip_prefix("rank=").and_then(|r| r.parse().ok()).ok_or_else(|| bad("bad /rank=R"))?;
            (point, Some(rank))
        }
        None => (rest, None),
    };
    let (action, to_parent) = match action.strip_suffix(":parent") {
        Some(signal) => (signal, true),
        None => (action, false),
    };
    let signal = match action {
        "SIGTERM" => Some(libc::SIGTERM),
        "SIGINT" => Some(libc::SIGINT),
        "SIGUSR1" => Some(libc::SIGUSR1),
        "SIGKILL" => Some(libc::SIGKILL),
        "SIGSTOP" => Some(libc::SIGSTOP),
        _ => None,
    };
    let action = match (signal, to_parent) {
        (Some(signal), true) => Action::SignalParent(signal),
        (Some(signal), false) => Action::Signal(signal),
        (None, true) => return Err(bad("only a signal can go to the parent")),
        (None, false) if action == "stall" => Action::Stall,
        (None, false) if action == "heartbeat-dies" => Action::HeartbeatDies,
        (None, false) => match action.strip_prefix("sleep:").map(u64::from_str) {
            Some(Ok(ms)) => Action::Sleep(Duration::from_millis(ms)),
            _ => {
                return Err(bad(
                    "unknown action (SIGTERM, SIGINT, SIGUSR1, SIGKILL, SIGSTOP, stall, heartbeat-dies, sleep:MS)",
                ))
            }
        },
    };
    let number = |text: &str| text.parse::<u64>().map_err(|_| bad(&format!("`{text}` is not a number")));
    let when = match point.split_once('=') {
        Some(("step", n)) => match n.strip_prefix('+') {
            Some(n) => When::Taken(number(n)?),
            None => When::Step(number(n)?),
        },
        Some(("steps", range)) => {
            let (a, b) = range.split_once("..").ok_or_else(|| bad("expected steps=A..B"))?;
            When::Steps(number(a)?, number(b)?)
        }
        Some(("checkpoint", spec)) => {
            let (k, phase) = spec.split_once(':').ok_or_else(|| bad("expected checkpoint=K:PHASE"))?;
            let phase = CheckpointPhase::from_name(phase).ok_or_else(|| {
                bad(&format!("unknown checkpoint phase `{phase}` ({})", CheckpointPhase::NAMES.join(", ")))
            })?;
            When::Checkpoint(number(k)? as usize, phase)
        }
        Some(("setup", "export")) => When::Setup(SetupPhase::Export),
        Some(("setup", "index")) => When::Setup(SetupPhase::Index),
        _ => return Err(bad("unknown point (step=N, step=+N, steps=A..B, checkpoint=K:PHASE, setup=export|index)")),
    };
    Ok(Fault { action, when, rank })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_match_only_their_point_and_rank() {
        let plan =
            FaultPlan::parse("SIGTERM@step=30; sleep:200@steps=28..31/rank=1 ;SIGKILL@checkpoint=2:renamed").unwrap();
        let step = |step, taken| FaultPoint::Step { step, taken };
        let term = plan.faults[0];
        assert_eq!(term.action, Action::Signal(libc::SIGTERM));
        assert!(term.when.matches(step(30, 1)) && !term.when.matches(step(29, 30)));
        let sleep = plan.faults[1];
        assert_eq!((sleep.action, sleep.rank), (Action::Sleep(Duration::from_millis(200)), Some(1)));
        assert!(sleep.when.matches(step(28, 1)) && sleep.when.matches(step(31, 1)) && !sleep.when.matches(step(32, 1)));
        let kill = plan.faults[2];
        assert!(kill.when.matches(FaultPoint::Checkpoint { nth: 2, phase: CheckpointPhase::Renamed }));
        assert!(!kill.when.matches(FaultPoint::Checkpoint { nth: 1, phase: CheckpointPhase::Renamed }));
        let parent = FaultPlan::parse("SIGTERM:parent@step=3").unwrap().faults[0];
        assert_eq!(parent.action, Action::SignalParent(libc::SIGTERM));
        let taken = FaultPlan::parse("SIGKILL@step=+3").unwrap().faults[0];
        assert!(taken.when.matches(step(103, 3)) && !taken.when.matches(step(3, 1)));
        assert!(FaultPlan::parse("").unwrap().is_empty());
    }

    #[test]
    fn a_bad_entry_is_named() {
        for (spec, why) in [
            ("SIGTERM", "expected ACTION@POINT"),
            ("SIGHUP@step=1", "unknown action"),
            ("SIGTERM@step=x", "`x` is not a number"),
            ("SIGTERM@epoch=1", "unknown point"),
            ("SIGKILL@checkpoint=1:halfway", "unknown checkpoint phase `halfway`"),
            ("stall@step=1/r=1", "bad /rank=R"),
            ("stall:parent@step=1", "only a signal can go to the parent"),
        ] {
            let error = FaultPlan::parse(spec).unwrap_err();
            assert!(error.starts_with(&format!("ASL_FAULT entry `{spec}`")) && error.contains(why), "{error}");
        }
    }

    #[test]
    fn a_raised_signal_is_delivered_before_strike_returns() {
        let caught = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let id = signal_hook::flag::register(libc::SIGUSR1, std::sync::Arc::clone(&caught)).unwrap();
        FaultPlan::parse("SIGUSR1@step=4").unwrap().strike(FaultPoint::Step { step: 4, taken: 1 }, 0, None);
        assert!(caught.load(std::sync::atomic::Ordering::SeqCst));
        signal_hook::low_level::unregister(id);
    }
}
