//! Signals that ask a training run to stop: SIGTERM (what Slurm and
//! torchrun send on preemption or shutdown), SIGINT (Ctrl-C) and SIGUSR1
//! (what `sbatch --signal=USR1@120` sends ahead of the time limit). A
//! handler only sets a flag; the trainer reads it at every optimizer step,
//! agrees on it with the other ranks, writes a checkpoint and returns. A
//! second Ctrl-C ends the process at once (status 130); the last checkpoint
//! stays good, since checkpoints are written to a temporary name and
//! renamed. SIGTERM never does: Ctrl-C under torchrun reaches every worker
//! both as SIGINT from the terminal and as SIGTERM from torchrun, and
//! launchers that will not wait send SIGKILL themselves.

use anyhow::Result;
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::flag;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The exit status of a run stopped on request with its checkpoint
/// written: EX_TEMPFAIL, "try again later", which a Slurm batch script
/// reads as "requeue" (README, "Preemption").
pub const STOPPED_ON_REQUEST: u8 = 75;

/// Installs the handlers; the flag is set by the first of the signals.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let interrupted = Arc::new(AtomicBool::new(false));
    // Registered first, so that it sees the flag as the signal found it: set means "the second Ctrl-C".
    flag::register_conditional_shutdown(SIGINT, 128 + SIGINT, Arc::clone(&interrupted))?;
    flag::register(SIGINT, interrupted)?;
    for signal in [SIGINT, SIGTERM, SIGUSR1] {
        flag::register(signal, Arc::clone(&stop))?;
    }
    Ok(stop)
}
