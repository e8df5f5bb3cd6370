//! Validation: batched inference under `no_grad` (fp16 autocast on CUDA)
//! into the metrics accumulator and the probability statistics.

use super::error::Result;
use super::objective::batch_stats;
use crate::data::Loader;
use crate::loss::ProbabilityStats;
use crate::metrics::{MetricsAccumulator, MetricsReport};
use crate::model::Network;
use indicatif::ProgressBar;
use tch::Kind;

pub struct Evaluation {
    pub report: MetricsReport,
    pub stats: ProbabilityStats,
    /// Row-major `[images, K]` probabilities, in loader order.
    pub probabilities: Vec<f32>,
    /// Dataset index of each row.
    pub indices: Vec<usize>,
    pub skipped: usize,
}

/// Runs `network` in eval mode over every batch of `loader`.
pub fn evaluate(
    network: &mut Network,
    loader: &Loader,
    amp: bool,
    threshold: f32,
    progress: &ProgressBar,
) -> Result<Evaluation> {
    network.set_train(false)?;
    let device = network.device();
    let mut metrics = MetricsAccumulator::new();
    let mut stats = ProbabilityStats::default();
    let (mut probabilities, mut indices) = (Vec::new(), Vec::new());
    let mut epoch = loader.epoch(0, 0);
    for batch in epoch.by_ref() {
        let batch = batch?;
        if batch.is_empty() {
            continue;
        }
        let images = batch.images_tensor(device)?;
        let targets = batch.targets_tensor(device)?;
        let logits = tch::no_grad(|| crate::model::with_cuda_autocast(amp, || network.forward(&images)))?
            .f_to_kind(Kind::Float)?;
        stats.merge(&batch_stats(&logits, &targets)?);
        let p = logits.f_sigmoid()?;
        metrics.update(&p, &targets)?;
        probabilities.extend(Vec::<f32>::try_from(p.f_to_device(tch::Device::Cpu)?.f_view([-1])?)?);
        indices.extend_from_slice(&batch.indices);
        progress.inc(batch.len() as u64);
    }
    let report = metrics.compute(threshold)?.ok_or_else(|| crate::data::DataError::Empty(loader_name(loader)))?;
    Ok(Evaluation { report, stats, probabilities, indices, skipped: epoch.skipped() })
}

fn loader_name(loader: &Loader) -> std::path::PathBuf {
    loader.dataset().samples.first().and_then(|s| s.path.parent()).map(|p| p.to_path_buf()).unwrap_or_default()
}
