//! What a run reports while it trains: TensorBoard event files through
//! tensorboard-rs, kept behind this small type so another writer can
//! replace it. Only `add_scalar` and `add_histogram_raw` are used; the
//! crate's other histogram and text methods panic.

use std::collections::BTreeMap;
use std::path::Path;
use tensorboard_rs::summary_writer::SummaryWriter;

/// Buckets of the probability histograms over [0, 1].
const HISTOGRAM_BUCKETS: usize = 50;

pub struct Monitor {
    writer: Option<SummaryWriter>,
    /// Every scalar logged, kept in memory for reports (`asl reproduce`).
    series: BTreeMap<String, Vec<(u64, f64)>>,
}

impl Monitor {
    /// Writes event files into `dir`. Use one monitor per directory: two
    /// writers created in the same second overwrite each other's file.
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self { writer: Some(SummaryWriter::new(dir)), series: BTreeMap::new() })
    }

    /// A monitor that records nothing.
    pub fn disabled() -> Self {
        Self { writer: None, series: BTreeMap::new() }
    }

    pub fn scalar(&mut self, tag: &str, value: f64, step: u64) {
        if !value.is_finite() {
            return;
        }
        self.series.entry(tag.to_string()).or_default().push((step, value));
        if let Some(writer) = &mut self.writer {
            writer.add_scalar(tag, value as f32, step as usize);
        }
    }

    /// The (step, value) pairs logged under `tag` so far.
    pub fn series(&self, tag: &str) -> &[(u64, f64)] {
        self.series.get(tag).map_or(&[], Vec::as_slice)
    }

    /// Histogram of values in [0, 1] (probabilities).
    pub fn probability_histogram(&mut self, tag: &str, values: &[f32], step: u64) {
        let Some(writer) = &mut self.writer else { return };
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
        writer.add_histogram_raw(tag, min, max, values.len() as f64, sum, sum_squares, &limits, &counts, step as usize);
    }

    pub fn flush(&mut self) {
        if let Some(writer) = &mut self.writer {
            writer.flush();
        }
    }
}
