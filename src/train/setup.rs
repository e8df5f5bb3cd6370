//! Set-up that a stop request ends promptly. A signal during set-up sets
//! the same flag as during training, but there is no step to stop after:
//! the long phases (joining the group, building the index, the export and
//! its download) run on a thread of their own while this one watches the
//! flag, and a request ends the set-up at once, with nothing half-written.

use super::error::{Result, TrainError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

/// How often a set-up phase checks for a stop request.
const POLL: Duration = Duration::from_millis(50);

/// Fails with [`TrainError::Stopped`] once a stop was requested.
pub(super) fn check_stop(stop: &AtomicBool, during: &'static str) -> Result<()> {
    match stop.load(Ordering::SeqCst) {
        true => Err(TrainError::Stopped { during }),
        false => Ok(()),
    }
}

/// `work`'s result, or [`TrainError::Stopped`] within 50 ms of a stop
/// request, in which case `work` is left to finish on its thread (it
/// writes nothing: the phases run this way only read). `watch.started` is
/// called once `work` runs, `watch.waiting` every 50 ms while it does (set-up
/// work is progress, for the peers' watchers).
pub(super) fn cancellable<T: Send + 'static>(
    stop: &AtomicBool,
    during: &'static str,
    watch: PhaseWatch,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    check_stop(stop, during)?;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("asl-setup".into())
        .spawn(move || {
            let _ = sender.send(work());
        })
        .map_err(|e| TrainError::Setup { during, message: e.to_string() })?;
    (watch.started)();
    loop {
        (watch.waiting)();
        match receiver.recv_timeout(POLL) {
            // A request that came while the work ran ends the set-up all the same.
            Ok(value) => return check_stop(stop, during).map(|()| value),
            Err(RecvTimeoutError::Timeout) => check_stop(stop, during)?,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(TrainError::Setup { during, message: "its thread panicked".into() })
            }
        }
    }
}

/// Who is told how a set-up phase goes.
pub(super) struct PhaseWatch<'a> {
    pub started: &'a dyn Fn(),
    pub waiting: &'a dyn Fn(),
}

impl PhaseWatch<'static> {
    pub fn none() -> Self {
        Self { started: &|| {}, waiting: &|| {} }
    }
}

/// A run directory this set-up created, removed again if the set-up is
/// stopped before its first checkpoint, so that a stopped start leaves
/// nothing behind.
pub(super) struct NewRunDir {
    path: Option<PathBuf>,
}

impl NewRunDir {
    /// Notes whether `path` exists before the set-up creates it.
    pub fn before_creating(path: &Path) -> Self {
        Self { path: (!path.exists()).then(|| path.to_path_buf()) }
    }

    /// After a stop: removes the directory if this set-up created it and
    /// it holds no checkpoint.
    pub fn remove(&self) -> std::io::Result<()> {
        match &self.path {
            Some(path) if !path.join("checkpoints").exists() => match std::fs::remove_dir_all(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_stop_request_ends_a_long_phase_at_once() {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let began = Instant::now();
        let started = move || flag.store(true, Ordering::SeqCst);
        let watch = PhaseWatch { started: &started, waiting: &|| {} };
        let result = cancellable(&stop, "a long phase", watch, || std::thread::sleep(Duration::from_secs(30)));
        assert!(matches!(result, Err(TrainError::Stopped { during: "a long phase" })));
        assert!(began.elapsed() < Duration::from_secs(1), "{:?}", began.elapsed());
        assert_eq!(cancellable(&AtomicBool::new(false), "quick", PhaseWatch::none(), || 7).unwrap(), 7);
        let panicked =
            cancellable(&AtomicBool::new(false), "a bad phase", PhaseWatch::none(), || panic!("in the phase"));
        assert!(panicked.unwrap_err().to_string().contains("a bad phase"));
    }
}
