//! Scoring a network on a labelled split: batched inference under
//! `no_grad` (fp16 autocast on CUDA) into the metrics and the probability
//! statistics. Used by the trainer after every epoch and by `asl validate`.
//! Only verified labels are scored (every label of COCO or VOC; a handful
//! per image of Open Images), so memory grows with the labels, not with
//! images × classes. Among several processes each scores its share of the
//! split and sends it to rank 0, which computes the metrics of the whole
//! split and sends everyone the report.

use crate::data::{DataError, Loader, Normalization, Skipped, UnknownInValidation, UNKNOWN};
use crate::distributed::{DistError, ProcessGroup};
use crate::loss::{batch_sums, LossError, ProbabilityStats};
use crate::metrics::{MetricsError, MetricsReport, ScoredLabels, TOP_5, TOP_K};
use crate::model::{ModelError, Network};
use tch::{Device, Kind, Tensor};

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
    #[error("the validation report could not be passed between ranks: {0}")]
    Report(String),
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
    /// One score per verified label and each image's top classes: of the
    /// whole split alone and on rank 0, of this rank's share on the others.
    pub scored: ScoredLabels,
    pub skipped: usize,
}

/// How to score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvaluateOptions {
    /// fp16 autocast on CUDA.
    pub amp: bool,
    /// For CP/CR/CF1/OP/OR/OF1.
    pub threshold: f32,
    /// Whether labels that are not verified are left out or counted as negatives.
    pub unknowns: UnknownInValidation,
    /// Single-label data: the report adds top-1, top-5 and macro-F1.
    pub single_label: bool,
}

impl EvaluateOptions {
    /// The report of the whole split's scored labels.
    fn report(&self, scored: &ScoredLabels) -> Result<MetricsReport, MetricsError> {
        let report = MetricsReport::compute(scored, self.threshold)?;
        Ok(if self.single_label { report.with_single_label(scored) } else { report })
    }

    /// How many best classes each image keeps: the top-3 metrics', or top-5's for single-label data.
    fn top_k(&self) -> usize {
        if self.single_label {
            TOP_K.max(TOP_5)
        } else {
            TOP_K
        }
    }
}

/// Runs `network` in eval mode over every batch of `loader`, reporting
/// progress and unreadable images to `on_event`. Only verified labels are
/// kept (with `unknowns: negative`, every label). With `group`, `loader`
/// reads this rank's share; the shares go to rank 0, which computes the
/// metrics and sends every rank the report.
pub fn evaluate(
    network: &mut Network,
    loader: &Loader,
    group: Option<&ProcessGroup>,
    options: EvaluateOptions,
    on_event: &mut dyn FnMut(EvaluateEvent),
) -> Result<Evaluation> {
    network.set_train(false)?;
    let device = network.device();
    let normalization = input_normalization(network)?;
    let classes = loader.num_classes();
    let mut scored = ScoredLabels::new(classes, options.top_k());
    let mut sums = Tensor::f_zeros([4], (Kind::Double, device))?;
    let mut epoch = loader.epoch(0, 0);
    for batch in epoch.by_ref() {
        let mut batch = batch?;
        batch.skipped.iter().for_each(|s| on_event(EvaluateEvent::Skipped(s)));
        if batch.is_empty() {
            continue;
        }
        if options.unknowns == UnknownInValidation::Negative {
            batch.targets.iter_mut().filter(|t| **t == UNKNOWN).for_each(|t| *t = 0.0);
        }
        let images = batch.images_tensor(device, &normalization)?;
        let targets = batch.targets_tensor(device)?;
        let logits = tch::no_grad(|| crate::ops::with_cuda_autocast(options.amp, || network.forward(&images)))?
            .f_to_kind(Kind::Float)?;
        sums = sums.f_add(&batch_sums(&logits, &targets)?)?;
        let probabilities = Vec::<f32>::try_from(logits.f_sigmoid()?.f_to_device(Device::Cpu)?.f_reshape([-1])?)?;
        for (row, &index) in batch.indices.iter().enumerate() {
            let span = row * classes..(row + 1) * classes;
            scored.push_row(index as u32, &probabilities[span.clone()], &batch.targets[span])?;
        }
        on_event(EvaluateEvent::Scored(batch.len()));
        if let Some(group) = group {
            group.record_progress(None);
        }
    }
    let mut skipped = epoch.skipped();
    let mut stats = ProbabilityStats::from_sums(&Vec::<f64>::try_from(sums.f_to_device(Device::Cpu)?)?);
    let Some(group) = group else {
        let report = options.report(&scored)?;
        return match report.images {
            0 => Err(EvaluateError::NothingScored(skipped)),
            _ => Ok(Evaluation { report, stats, scored, skipped }),
        };
    };
    sum_over_ranks(group, device, &mut stats, &mut skipped)?;
    let (report, scored) = report_on_rank_0(group, device, scored, &options, skipped)?;
    Ok(Evaluation { report, stats, scored, skipped })
}

/// The input normalisation `network`'s card asks for, on its device.
pub fn input_normalization(network: &Network) -> Result<Normalization> {
    let (mean, std) = network.input_normalization()?;
    Ok(Normalization::new(mean, std, network.device())?)
}

/// The Δp sums and skip counts of every rank, summed.
fn sum_over_ranks(
    group: &ProcessGroup,
    device: Device,
    stats: &mut ProbabilityStats,
    skipped: &mut usize,
) -> Result<()> {
    let on_group = group.tensor_device(device);
    let totals = Tensor::f_from_slice(&[&stats.to_sums()[..], &[*skipped as f64]].concat())?.f_to_device(on_group)?;
    group.allreduce_sum(&[&totals])?;
    let totals = Vec::<f64>::try_from(totals.f_to_device(Device::Cpu)?)?;
    *stats = ProbabilityStats::from_sums(&totals);
    *skipped = totals[4].round() as usize;
    Ok(())
}

/// Every rank's scored labels go to rank 0 alone (padded to the longest
/// share, as c10d's gather wants equal sizes), which computes the report;
/// the report, a few kilobytes, then goes to every rank. Rank 0 returns
/// the whole split's labels, the others their own.
fn report_on_rank_0(
    group: &ProcessGroup,
    device: Device,
    scored: ScoredLabels,
    options: &EvaluateOptions,
    skipped: usize,
) -> Result<(MetricsReport, ScoredLabels)> {
    let on_group = group.tensor_device(device);
    let (scored, report) = match group.gather_bytes(&scored.to_bytes(), device)? {
        Some(shares) => {
            let shares = shares.iter().map(|s| ScoredLabels::from_bytes(s)).collect::<Result<Vec<_>, _>>()?;
            let whole = ScoredLabels::concat(shares)?;
            let report = (whole.rows() > 0).then(|| options.report(&whole)).transpose()?;
            (whole, report)
        }
        None => (scored, None),
    };
    let report = broadcast_report(group, on_group, report)?.ok_or(EvaluateError::NothingScored(skipped))?;
    Ok((report, scored))
}

/// Rank 0's report (or its absence: nothing scored) on every rank, as JSON bytes.
fn broadcast_report(
    group: &ProcessGroup,
    on_group: Device,
    report: Option<MetricsReport>,
) -> Result<Option<MetricsReport>> {
    let json = serde_json::to_vec(&report).map_err(|e| EvaluateError::Report(e.to_string()))?;
    let length = Tensor::f_from_slice(&[json.len() as i64])?.f_to_device(on_group)?;
    group.broadcast(&[&length], 0)?;
    let length = length.f_to_device(Device::Cpu)?.int64_value(&[0]) as usize;
    let mut bytes = json;
    bytes.resize(length, 0);
    let buffer = Tensor::f_from_slice(&bytes)?.f_to_device(on_group)?;
    group.broadcast(&[&buffer], 0)?;
    let bytes = Vec::<u8>::try_from(buffer.f_to_device(Device::Cpu)?)?;
    serde_json::from_slice(&bytes).map_err(|e| EvaluateError::Report(e.to_string()))
}
