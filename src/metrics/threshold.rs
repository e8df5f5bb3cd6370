//! Precision/recall/F1 per class (C*) and overall (O*), either for
//! predictions above a threshold or for each image's top-k classes
//! (paper Table 7). Values are percentages, like mAP.

use super::error::{MetricsError, Result};
use super::scored::ScoredLabels;
use serde::{Deserialize, Serialize};

/// Which labels count as predicted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Labels whose score is at least the threshold.
    Threshold(f32),
    /// Each image's k highest-scoring labels, whatever their score (k is the scored labels' own).
    TopK(usize),
}

impl std::fmt::Display for Selection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selection::Threshold(t) => write!(f, "@ {t}"),
            Selection::TopK(k) => write!(f, "top-{k}"),
        }
    }
}

/// CP, CR, CF1, OP, OR, OF1 in percent.
///
/// Per-class precision and recall are averaged over classes with at least
/// one positive, the same classes mAP uses; a class with no predicted
/// label has precision 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdMetrics {
    pub selection: Selection,
    pub cp: f64,
    pub cr: f64,
    pub cf1: f64,
    pub op: f64,
    pub or: f64,
    pub of1: f64,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    true_positives: usize,
    predicted: usize,
    positives: usize,
}

impl ThresholdMetrics {
    /// Over the verified labels of `scored`; `TopK(k)` takes each image's `k`
    /// best, so it needs `k` no larger than the classes `scored` kept.
    pub fn compute(scored: &ScoredLabels, selection: Selection) -> Result<Self> {
        let counts = count(scored, selection)?;
        let scored: Vec<&Counts> = counts.iter().filter(|c| c.positives > 0).collect();
        let mean = |f: &dyn Fn(&Counts) -> f64| {
            if scored.is_empty() {
                0.0
            } else {
                100.0 * scored.iter().map(|c| f(c)).sum::<f64>() / scored.len() as f64
            }
        };
        let cp = mean(&|c| ratio(c.true_positives, c.predicted));
        let cr = mean(&|c| ratio(c.true_positives, c.positives));
        let total = counts.iter().fold(Counts::default(), |a, c| Counts {
            true_positives: a.true_positives + c.true_positives,
            predicted: a.predicted + c.predicted,
            positives: a.positives + c.positives,
        });
        let op = 100.0 * ratio(total.true_positives, total.predicted);
        let or = 100.0 * ratio(total.true_positives, total.positives);
        Ok(Self { selection, cp, cr, cf1: f1(cp, cr), op, or, of1: f1(op, or) })
    }
}

fn count(scored: &ScoredLabels, selection: Selection) -> Result<Vec<Counts>> {
    let classes = scored.classes();
    if let Selection::TopK(k) = selection {
        if k == 0 || k > scored.k() {
            return Err(MetricsError::InvalidTopK { k, kept: scored.k() });
        }
    }
    let mut counts = vec![Counts::default(); classes];
    for label in scored.labels() {
        let predicted = match selection {
            Selection::Threshold(t) => label.score >= t,
            Selection::TopK(k) => scored.top(label.row)[..k].contains(&label.class),
        };
        let c = &mut counts[label.class as usize];
        c.positives += usize::from(label.positive);
        c.predicted += usize::from(predicted);
        c.true_positives += usize::from(label.positive && predicted);
    }
    Ok(counts)
}

fn ratio(numerator: usize, denominator: usize) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

fn f1(precision: f64, recall: f64) -> f64 {
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}
