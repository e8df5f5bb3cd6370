//! TensorBoard as a run observer: event files through tensorboard-rs, kept
//! behind this small type so another writer can replace it. Only
//! `add_scalar` and `add_histogram_raw` are used; the crate's other
//! histogram and text methods panic.

use crate::train::{Observer, StepLog, TrainEvent};
use std::path::Path;
use tensorboard_rs::summary_writer::SummaryWriter;

/// Buckets of the probability histograms over [0, 1].
const HISTOGRAM_BUCKETS: usize = 50;

#[derive(Debug, thiserror::Error)]
#[error("cannot write TensorBoard events to {path}: {source}")]
pub struct MonitorError {
    pub path: std::path::PathBuf,
    pub source: std::io::Error,
}

pub struct TensorBoard {
    writer: SummaryWriter,
}

impl TensorBoard {
    /// Writes event files into `dir`. Use one writer per directory: two
    /// created in the same second overwrite each other's file.
    pub fn new(dir: &Path) -> Result<Self, MonitorError> {
        std::fs::create_dir_all(dir).map_err(|source| MonitorError { path: dir.to_path_buf(), source })?;
        Ok(Self { writer: SummaryWriter::new(dir) })
    }

    fn scalar(&mut self, tag: &str, value: f64, step: u64) {
        if value.is_finite() {
            self.writer.add_scalar(tag, value as f32, step as usize);
        }
    }

    fn step(&mut self, log: &StepLog) {
        let step = log.step as u64;
        let optional = [
            ("asl/p_t_pos", log.p_t_pos),
            ("asl/p_t_neg", log.p_t_neg),
            ("asl/delta_p", log.delta_p),
            ("asl/gamma_pos", log.gamma_pos),
            ("asl/clip", log.clip),
            ("train/grad_scale", log.grad_scale),
        ];
        let always = [
            ("train/loss", log.loss),
            ("train/lr", log.lr),
            ("train/beta1", log.beta1),
            ("asl/gamma_neg", log.gamma_neg),
            ("speed/images_per_second", log.images_per_second),
            ("speed/data_wait_fraction", log.data_wait_fraction),
        ];
        for (tag, value) in optional.into_iter().filter_map(|(t, v)| Some((t, v?))).chain(always) {
            self.scalar(tag, value, step);
        }
    }

    /// Histogram of values in [0, 1] (probabilities).
    fn probability_histogram(&mut self, tag: &str, values: &[f32], step: u64) {
        if values.is_empty() {
            return;
        }
        let mut counts = vec![0.0; HISTOGRAM_BUCKETS];
        for &v in values {
            let bucket = ((v.clamp(0.0, 1.0) * HISTOGRAM_BUCKETS as f32) as usize).min(HISTOGRAM_BUCKETS - 1);
            counts[bucket] += 1.0;
        }
        let limits: Vec<f64> = (1..=HISTOGRAM_BUCKETS).map(|i| i as f64 / HISTOGRAM_BUCKETS as f64).collect();
        let (min, max) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v.into()), hi.max(v.into())));
        let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
        let sum_squares: f64 = values.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        self.writer.add_histogram_raw(
            tag,
            min,
            max,
            values.len() as f64,
            sum,
            sum_squares,
            &limits,
            &counts,
            step as usize,
        );
    }
}

impl Observer for TensorBoard {
    fn on_event(&mut self, event: &TrainEvent<'_>) {
        match event {
            TrainEvent::Step(log) => self.step(log),
            TrainEvent::EpochFinished { record, model } => {
                let epoch = record.epoch as u64;
                let t = &model.report.at_threshold;
                let scalars = [
                    ("val/mAP", record.map),
                    ("val/mAP_ema", record.map_ema),
                    ("val/CP", Some(t.cp)),
                    ("val/CR", Some(t.cr)),
                    ("val/CF1", Some(t.cf1)),
                    ("val/OP", Some(t.op)),
                    ("val/OR", Some(t.or)),
                    ("val/OF1", Some(t.of1)),
                    ("val/delta_p", model.stats.delta()),
                ];
                for (tag, value) in scalars.into_iter().filter_map(|(t, v)| Some((t, v?))) {
                    self.scalar(tag, value, epoch);
                }
                let (mut positives, mut negatives) = (Vec::new(), Vec::new());
                for (&p, &target) in model.probabilities.iter().zip(&model.targets) {
                    match target {
                        1.0 => positives.push(p),
                        0.0 => negatives.push(p),
                        _ => {}
                    }
                }
                self.probability_histogram("val/p_positive", &positives, epoch);
                self.probability_histogram("val/p_negative", &negatives, epoch);
                self.writer.flush();
            }
            TrainEvent::CheckpointWritten { .. } => self.writer.flush(),
            _ => {}
        }
    }
}
