//! Scoring a network on a labelled split: batched inference under
//! `no_grad` (fp16 autocast on CUDA) into the metrics and the probability
//! statistics. Used by the trainer after every epoch and by `asl validate`.

use crate::data::{DataError, Loader, Skipped};
use crate::loss::{batch_stats, LossError, ProbabilityStats};
use crate::metrics::{MetricsAccumulator, MetricsError, MetricsReport};
use crate::model::{ModelError, Network};
use tch::Kind;

#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Loss(#[from] LossError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error("no image of the split could be scored ({0} skipped as unreadable)")]
    NothingScored(usize),
}

pub type Result<T, E = EvaluateError> = std::result::Result<T, E>;

/// What an evaluation reports while it runs.
#[derive(Debug)]
pub enum EvaluateEvent<'a> {
    /// A batch of this many images was scored.
    Scored(usize),
    /// An image could not be read and is left out of the metrics.
    Skipped(&'a Skipped),
}

#[derive(Debug)]
pub struct Evaluation {
    pub report: MetricsReport,
    pub stats: ProbabilityStats,
    /// Row-major `[images, K]` probabilities, in loader order.
    pub probabilities: Vec<f32>,
    /// Row-major `[images, K]` targets (1 / 0 / -1 unknown), same order.
    pub targets: Vec<f32>,
    /// Dataset index of each row.
    pub indices: Vec<usize>,
    pub skipped: usize,
}

/// Runs `network` in eval mode over every batch of `loader`, reporting
/// progress and unreadable images to `on_event`.
pub fn evaluate(
    network: &mut Network,
    loader: &Loader,
    amp: bool,
    threshold: f32,
    on_event: &mut dyn FnMut(EvaluateEvent),
) -> Result<Evaluation> {
    network.set_train(false)?;
    let device = network.device();
    let mut metrics = MetricsAccumulator::new();
    let mut stats = ProbabilityStats::default();
    let mut indices = Vec::new();
    let mut epoch = loader.epoch(0, 0);
    for batch in epoch.by_ref() {
        let batch = batch?;
        batch.skipped.iter().for_each(|s| on_event(EvaluateEvent::Skipped(s)));
        if batch.is_empty() {
            continue;
        }
        let images = batch.images_tensor(device)?;
        let targets = batch.targets_tensor(device)?;
        let logits = tch::no_grad(|| crate::model::with_cuda_autocast(amp, || network.forward(&images)))?
            .f_to_kind(Kind::Float)?;
        stats.merge(&batch_stats(&logits, &targets)?);
        metrics.update(&logits.f_sigmoid()?, &targets)?;
        indices.extend_from_slice(&batch.indices);
        on_event(EvaluateEvent::Scored(batch.len()));
    }
    let skipped = epoch.skipped();
    let report = metrics.compute(threshold)?.ok_or(EvaluateError::NothingScored(skipped))?;
    let (probabilities, targets) = metrics.into_rows();
    Ok(Evaluation { report, stats, probabilities, targets, indices, skipped })
}
