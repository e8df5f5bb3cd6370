//! The distributed-agreement stage: whether the run stops after the step
//! just taken. A signal only sets a flag; every rank brings its flag to
//! every optimizer step, and all of them stop after the same step, the one
//! after the first request (`ProcessGroup::agree_stop`, sound however far a
//! host runs ahead of its device). Alone, a request stops after the step
//! it was seen at.

use super::error::Result;
use crate::distributed::ProcessGroup;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub(super) struct StopAgreement {
    /// Set by a signal handler (or a library user) to ask for a stop.
    requested: Arc<AtomicBool>,
}

impl StopAgreement {
    pub fn new(requested: Arc<AtomicBool>) -> Self {
        Self { requested }
    }

    /// Whether to stop after optimizer step `step` (consecutive steps, one
    /// call each, on every rank of `group`).
    pub fn after_step(&self, step: u64, group: Option<&ProcessGroup>) -> Result<bool> {
        let requested = self.requested.load(Ordering::SeqCst);
        match group {
            Some(group) => Ok(group.agree_stop(step, requested)?),
            None => Ok(requested),
        }
    }
}
