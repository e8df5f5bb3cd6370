//! Scoring a network on a labelled split: batched inference under
//! `no_grad` (fp16 autocast on CUDA) into the metrics and the probability
//! statistics. Used by the trainer after every epoch and by `asl validate`.
//! Among several processes each scores its share of the split and the
//! scores are gathered, so the metrics are those of the whole split.

use crate::data::{DataError, Loader, Normalization, Skipped};
use crate::distributed::{DistError, ProcessGroup};
use crate::loss::{batch_sums, LossError, ProbabilityStats};
use crate::metrics::{MetricsAccumulator, MetricsError, MetricsReport};
use crate::model::{ModelError, Network};
use tch::{Kind, Tensor};

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
    Distributed(#[from] DistError),
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
/// progress and unreadable images to `on_event`. With `group`, `loader`
/// reads this rank's share and every rank gets the whole split's figures.
pub fn evaluate(
    network: &mut Network,
    loader: &Loader,
    group: Option<&ProcessGroup>,
    amp: bool,
    threshold: f32,
    on_event: &mut dyn FnMut(EvaluateEvent),
) -> Result<Evaluation> {
    network.set_train(false)?;
    let device = network.device();
    let normalization = input_normalization(network)?;
    let mut metrics = MetricsAccumulator::new();
    let mut sums = Tensor::f_zeros([4], (Kind::Double, device))?;
    let mut indices = Vec::new();
    let mut epoch = loader.epoch(0, 0);
    for batch in epoch.by_ref() {
        let batch = batch?;
        batch.skipped.iter().for_each(|s| on_event(EvaluateEvent::Skipped(s)));
        if batch.is_empty() {
            continue;
        }
        let images = batch.images_tensor(device, &normalization)?;
        let targets = batch.targets_tensor(device)?;
        let logits = tch::no_grad(|| crate::ops::with_cuda_autocast(amp, || network.forward(&images)))?
            .f_to_kind(Kind::Float)?;
        sums = sums.f_add(&batch_sums(&logits, &targets)?)?;
        metrics.update(&logits.f_sigmoid()?, &targets)?;
        indices.extend_from_slice(&batch.indices);
        on_event(EvaluateEvent::Scored(batch.len()));
    }
    let mut skipped = epoch.skipped();
    let mut stats = ProbabilityStats::from_sums(&Vec::<f64>::try_from(sums.f_to_device(tch::Device::Cpu)?)?);
    if let Some(group) = group {
        (metrics, indices) = gather(group, loader, network.device(), metrics, &indices, &mut stats, &mut skipped)?;
    }
    let report = metrics.compute(threshold)?.ok_or(EvaluateError::NothingScored(skipped))?;
    let (probabilities, targets) = metrics.into_rows();
    Ok(Evaluation { report, stats, probabilities, targets, indices, skipped })
}

/// The input normalisation `network`'s card asks for, on its device.
pub fn input_normalization(network: &Network) -> Result<Normalization> {
    let (mean, std) = network.input_normalization()?;
    Ok(Normalization::new(mean, std, network.device())?)
}

/// Every rank's scores, in dataset order: each rank writes its rows into a
/// zeroed `[images, K]` matrix at their dataset indices, and one sum over
/// the ranks fills it (a sum of one value and zeros is that value, bit for
/// bit). The statistics and skip counts are summed alongside.
fn gather(
    group: &ProcessGroup,
    loader: &Loader,
    device: tch::Device,
    local: MetricsAccumulator,
    indices: &[usize],
    stats: &mut ProbabilityStats,
    skipped: &mut usize,
) -> Result<(MetricsAccumulator, Vec<usize>)> {
    let dataset = loader.dataset();
    let (images, classes) = (dataset.len() as i64, dataset.num_classes() as i64);
    let device = group.tensor_device(device);
    let (scores, _) = local.into_rows();
    let all = Tensor::f_zeros([images, classes], (Kind::Float, device))?;
    let scored = Tensor::f_zeros([images], (Kind::Float, device))?;
    if !indices.is_empty() {
        let rows = Tensor::f_from_slice(&indices.iter().map(|&i| i as i64).collect::<Vec<_>>())?.f_to_device(device)?;
        let values = Tensor::f_from_slice(&scores)?.f_view([-1, classes])?.f_to_device(device)?;
        let _ = all.shallow_clone().f_index_copy_(0, &rows, &values)?;
        let _ = scored.shallow_clone().f_index_fill_(0, &rows, 1.0)?;
    }
    group.allreduce_sum(&[&all, &scored])?;
    let totals = Tensor::f_from_slice(&[&stats.to_sums()[..], &[*skipped as f64]].concat())?.f_to_device(device)?;
    group.allreduce_sum(&[&totals])?;
    let totals = Vec::<f64>::try_from(totals.f_to_device(tch::Device::Cpu)?)?;
    *stats = ProbabilityStats::from_sums(&totals);
    *skipped = totals[4].round() as usize;
    let all = Vec::<f32>::try_from(all.f_to_device(tch::Device::Cpu)?.f_view([-1])?)?;
    let scored = Vec::<f32>::try_from(scored.f_to_device(tch::Device::Cpu)?)?;
    let (k, mut metrics, mut order) = (classes as usize, MetricsAccumulator::new(), Vec::new());
    let mut targets = vec![0.0; k];
    for index in (0..images as usize).filter(|&i| scored[i] > 0.0) {
        dataset.write_targets(index, &mut targets);
        metrics.update_slices(&all[index * k..(index + 1) * k], &targets, k)?;
        order.push(index);
    }
    Ok((metrics, order))
}
