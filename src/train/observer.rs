//! What a run reports, as events for observers, after burn's split of the
//! learner from its renderer: the trainer prints nothing, and the console
//! lines, progress bars and TensorBoard are observers the CLI attaches.
//! A library user attaches their own, or none (`&mut ()`).

use super::checkpoint::EpochRecord;
use crate::data::Skipped;
use crate::evaluate::Evaluation;
use std::path::Path;

/// Which network a validation pass scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scored {
    Model,
    Ema,
}

/// Where an unreadable image was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Training,
    Validation,
}

/// The figures of one optimizer step, sent every `train.log_every` steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLog {
    /// Optimizer steps taken so far.
    pub step: usize,
    /// Mean loss over the epoch's batches so far.
    pub loss: f64,
    pub lr: f64,
    pub beta1: f64,
    /// p_t+, p_t- and Δp of the step's last batch (`None` without positives or negatives).
    pub p_t_pos: Option<f64>,
    pub p_t_neg: Option<f64>,
    pub delta_p: Option<f64>,
    pub gamma_neg: f64,
    /// γ+ and m of the multi-label loss (`None` for single-label training).
    pub gamma_pos: Option<f64>,
    pub clip: Option<f64>,
    /// The grad scaler's scale under AMP.
    pub grad_scale: Option<f64>,
    /// Optimizer steps the grad scaler has skipped so far (non-finite gradients).
    pub skipped_steps: usize,
    pub images_per_second: f64,
    pub data_wait_fraction: f64,
}

#[derive(Debug)]
pub enum TrainEvent<'a> {
    /// Something the user should know: what was exported, reset or resumed.
    Notice(&'a str),
    /// Something wrong that does not stop the run.
    Warning(&'a str),
    /// Training of `epoch` (1-based) starts, or resumes at batch `start` of `batches`.
    EpochStarted { epoch: usize, batches: usize, start: usize },
    /// One more batch of the epoch was trained.
    BatchTrained,
    /// Every `train.log_every` optimizer steps.
    Step(&'a StepLog),
    /// An image could not be read and was left out.
    ImageSkipped { phase: Phase, skipped: &'a Skipped },
    /// Validation of the model or its EMA starts, over `images` images.
    ValidationStarted { scored: Scored, images: usize },
    /// A validation batch of `images` images was scored.
    ValidationProgress { images: usize },
    /// The epoch is trained and validated; `model` is the model's (not the EMA's) evaluation.
    EpochFinished { record: &'a EpochRecord, model: &'a Evaluation },
    /// A checkpoint (`last` or `best`) was written to `path`.
    CheckpointWritten { name: &'a str, path: &'a Path },
}

/// Receives a run's events. Observers must not fail the run: one that
/// cannot do its work (a full disk under TensorBoard) says so once and
/// goes quiet.
pub trait Observer {
    fn on_event(&mut self, event: &TrainEvent<'_>);
}

/// No observer.
impl Observer for () {
    fn on_event(&mut self, _: &TrainEvent<'_>) {}
}

/// Several observers, each given every event in order.
impl Observer for Vec<Box<dyn Observer>> {
    fn on_event(&mut self, event: &TrainEvent<'_>) {
        for observer in self {
            observer.on_event(event);
        }
    }
}
