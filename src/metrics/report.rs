//! The full multi-label report: mAP with per-class AP, and the threshold
//! and top-3 metrics of paper Table 7.

use super::average_precision::per_class_average_precision;
use super::error::Result;
use super::scored::ScoredLabels;
use super::single_label::SingleLabelMetrics;
use super::threshold::{Selection, ThresholdMetrics};
use serde::{Deserialize, Serialize};

/// How many top-scoring labels per image the top-k metrics take (paper Table 7).
pub const TOP_K: usize = 3;

/// mAP over the classes that have at least one positive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeanAveragePrecision {
    /// Mean AP × 100; `None` when no class has a positive.
    pub map: Option<f64>,
    /// AP × 100 per class; `None` for a class without positives.
    pub per_class: Vec<Option<f64>>,
    /// Classes left out of the mean because they have no positive.
    pub classes_without_positives: usize,
}

impl MeanAveragePrecision {
    pub fn compute(scored: &ScoredLabels) -> Self {
        let per_class: Vec<Option<f64>> =
            per_class_average_precision(scored).into_iter().map(|ap| ap.map(|v| 100.0 * v)).collect();
        let present: Vec<f64> = per_class.iter().flatten().copied().collect();
        let map = (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64);
        Self { map, classes_without_positives: per_class.len() - present.len(), per_class }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    pub images: usize,
    pub classes: usize,
    pub average_precision: MeanAveragePrecision,
    pub at_threshold: ThresholdMetrics,
    pub top_k: ThresholdMetrics,
    /// Top-1, top-5 and macro-F1, for single-label data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_label: Option<SingleLabelMetrics>,
}

impl MetricsReport {
    /// Scores must be probabilities in [0, 1] for the threshold metrics to
    /// mean anything; the top-k metrics take the best `TOP_K` classes
    /// `scored` kept (fewer where it kept fewer).
    pub fn compute(scored: &ScoredLabels, threshold: f32) -> Result<Self> {
        Ok(Self {
            images: scored.rows(),
            classes: scored.classes(),
            average_precision: MeanAveragePrecision::compute(scored),
            at_threshold: ThresholdMetrics::compute(scored, Selection::Threshold(threshold))?,
            top_k: ThresholdMetrics::compute(scored, Selection::TopK(scored.k().min(TOP_K)))?,
            single_label: None,
        })
    }

    /// The report of single-label data: with top-1, top-5 and macro-F1.
    pub fn with_single_label(mut self, scored: &ScoredLabels) -> Self {
        self.single_label = SingleLabelMetrics::compute(scored);
        self
    }

    /// The score that picks the best checkpoint: top-1 for single-label data, else mAP.
    pub fn headline(&self) -> Option<f64> {
        match &self.single_label {
            Some(single) => Some(single.top1),
            None => self.map(),
        }
    }

    pub fn map(&self) -> Option<f64> {
        self.average_precision.map
    }
}

impl std::fmt::Display for MetricsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ap = &self.average_precision;
        match ap.map {
            Some(map) => write!(f, "mAP {map:.2}")?,
            None => write!(f, "mAP n/a")?,
        }
        write!(f, " over {} images, {} classes", self.images, self.classes)?;
        if ap.classes_without_positives > 0 {
            write!(f, " ({} without positives, excluded)", ap.classes_without_positives)?;
        }
        if let Some(single) = &self.single_label {
            write!(f, "\n{single}")?;
        }
        for m in [&self.at_threshold, &self.top_k] {
            write!(
                f,
                "\n{:>8}  CP {:.2}  CR {:.2}  CF1 {:.2}  OP {:.2}  OR {:.2}  OF1 {:.2}",
                m.selection.to_string(),
                m.cp,
                m.cr,
                m.cf1,
                m.op,
                m.or,
                m.of1
            )?;
        }
        Ok(())
    }
}
