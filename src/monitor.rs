//! TensorBoard as a run observer: event files through tensorboard-rs, kept
//! behind this small type so another writer can replace it. Only
//! `add_scalar` and `add_histogram_raw` are used; the crate's other
//! histogram and text methods panic.
//!
//! tensorboard-rs panics on any I/O error (a full disk, a removed
//! directory), so the writer lives on a thread of its own and every call
//! into it is guarded: a failure disables logging with one message to the
//! caller's `on_failure`, and training goes on.

use crate::train::{Observer, StepLog, TrainEvent};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::thread::JoinHandle;
use tensorboard_rs::summary_writer::SummaryWriter;

/// Buckets of the probability histograms over [0, 1].
const HISTOGRAM_BUCKETS: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("cannot write TensorBoard events to {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot write TensorBoard events to {path}: {message}")]
    Writer { path: PathBuf, message: String },
}

/// One write, done on the writer's thread.
enum Record {
    Scalar { tag: &'static str, value: f32, step: usize },
    Histogram { tag: &'static str, summary: Histogram, step: usize },
    Flush,
}

struct Histogram {
    min: f64,
    max: f64,
    count: f64,
    sum: f64,
    sum_squares: f64,
    limits: Vec<f64>,
    counts: Vec<f64>,
}

pub struct TensorBoard {
    records: Option<Sender<Record>>,
    thread: Option<JoinHandle<()>>,
}

impl TensorBoard {
    /// Writes event files into `dir`. Use one writer per directory: two
    /// created in the same second overwrite each other's file. If writing
    /// fails later, `on_failure` is told why, once, and logging stops.
    pub fn new(dir: &Path, on_failure: impl FnOnce(String) + Send + 'static) -> Result<Self, MonitorError> {
        std::fs::create_dir_all(dir).map_err(|source| MonitorError::Create { path: dir.to_path_buf(), source })?;
        let writer = catch_unwind(|| SummaryWriter::new(dir)).map_err(|panic| MonitorError::Writer {
            path: dir.to_path_buf(),
            message: crate::data::panic_message(panic.as_ref()),
        })?;
        let (records, received) = channel::<Record>();
        let path = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("asl-tensorboard".into())
            .spawn(move || {
                let mut writer = Some(writer);
                for record in received {
                    let Some(active) = writer.as_mut() else { continue };
                    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| write(active, record))) {
                        let message = crate::data::panic_message(panic.as_ref());
                        on_failure(format!("TensorBoard logging to {} stopped: {message}", path.display()));
                        // Dropping it may panic again (its own thread is gone): contained too.
                        let _ = catch_unwind(AssertUnwindSafe(|| drop(writer.take())));
                        return;
                    }
                }
                let _ = catch_unwind(AssertUnwindSafe(|| drop(writer.take())));
            })
            .map_err(|source| MonitorError::Create { path: dir.to_path_buf(), source })?;
        Ok(Self { records: Some(records), thread: Some(thread) })
    }

    fn send(&self, record: Record) {
        if let Some(records) = &self.records {
            // After a failure the thread is gone; the record is dropped.
            let _ = records.send(record);
        }
    }

    fn scalar(&self, tag: &'static str, value: f64, step: usize) {
        if value.is_finite() {
            self.send(Record::Scalar { tag, value: value as f32, step });
        }
    }

    fn step(&self, log: &StepLog) {
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
            ("train/skipped_steps", log.skipped_steps as f64),
        ];
        for (tag, value) in optional.into_iter().filter_map(|(t, v)| Some((t, v?))).chain(always) {
            self.scalar(tag, value, log.step);
        }
    }

    /// Histogram of values in [0, 1] (probabilities).
    fn probability_histogram(&self, tag: &'static str, values: &[f32], step: usize) {
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
        let summary = Histogram { min, max, count: values.len() as f64, sum, sum_squares, limits, counts };
        self.send(Record::Histogram { tag, summary, step });
    }

    fn epoch(&self, record: &crate::train::checkpoint::EpochRecord, model: &crate::evaluate::Evaluation) {
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
            ("val/top1", record.single_label.map(|s| s.top1)),
            ("val/top1_ema", record.single_label.and_then(|s| s.top1_ema)),
            ("val/top5", record.single_label.map(|s| s.top5)),
            ("val/macro_F1", record.single_label.map(|s| s.macro_f1)),
            ("data/skipped_train", Some(record.skipped_train as f64)),
            ("data/skipped_val", Some(record.skipped_val as f64)),
        ];
        for (tag, value) in scalars.into_iter().filter_map(|(t, v)| Some((t, v?))) {
            self.scalar(tag, value, record.epoch);
        }
        let (mut positives, mut negatives) = (Vec::new(), Vec::new());
        for label in model.scored.labels() {
            if label.positive {
                positives.push(label.score);
            } else {
                negatives.push(label.score);
            }
        }
        self.probability_histogram("val/p_positive", &positives, record.epoch);
        self.probability_histogram("val/p_negative", &negatives, record.epoch);
        self.send(Record::Flush);
    }
}

fn write(writer: &mut SummaryWriter, record: Record) {
    match record {
        Record::Scalar { tag, value, step } => writer.add_scalar(tag, value, step),
        Record::Histogram { tag, summary: h, step } => {
            writer.add_histogram_raw(tag, h.min, h.max, h.count, h.sum, h.sum_squares, &h.limits, &h.counts, step)
        }
        Record::Flush => writer.flush(),
    }
}

impl Observer for TensorBoard {
    fn on_event(&mut self, event: &TrainEvent<'_>) {
        match event {
            TrainEvent::Step(log) => self.step(log),
            TrainEvent::EpochFinished { record, model } => self.epoch(record, model),
            TrainEvent::CheckpointWritten { .. } => self.send(Record::Flush),
            _ => {}
        }
    }
}

impl Drop for TensorBoard {
    /// Writes out what is queued.
    fn drop(&mut self) {
        drop(self.records.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_full_disk_stops_logging_with_one_message_and_nothing_else() {
        // tensorboard-rs names its file events.out.tfevents.<seconds>.<host>.<pid>.0: point the
        // names it may choose in the next seconds at /dev/full, where every write fails.
        let dir = tempfile::tempdir().unwrap();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        for second in now - 1..now + 5 {
            let name = format!("events.out.tfevents.{second:010}.{host}.{}.0", std::process::id());
            std::os::unix::fs::symlink("/dev/full", dir.path().join(name)).unwrap();
        }
        let messages = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&messages);
        let mut board = TensorBoard::new(dir.path(), move |m| seen.lock().unwrap().push(m)).unwrap();
        for step in 0..200 {
            board.scalar("train/loss", 1.0, step);
            board.send(Record::Flush);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        board.on_event(&TrainEvent::Notice("training goes on"));
        drop(board);
        let messages = messages.lock().unwrap();
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(messages[0].starts_with("TensorBoard logging to ") && messages[0].contains("stopped"), "{messages:?}");
    }
}
