//! Precision/recall/F1 per class (C*) and overall (O*), either for
//! predictions above a threshold or for each image's top-k classes
//! (paper Table 7). Values are percentages, like mAP.

use super::error::{MetricsError, Result};
use super::scores::ScoreMatrix;
use serde::Serialize;

/// Which labels count as predicted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Labels whose score is at least the threshold.
    Threshold(f32),
    /// Each image's k highest-scoring labels, whatever their score.
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
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
    pub fn compute(matrix: &ScoreMatrix, selection: Selection) -> Result<Self> {
        let counts = count(matrix, selection)?;
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

fn count(matrix: &ScoreMatrix, selection: Selection) -> Result<Vec<Counts>> {
    let classes = matrix.classes();
    if let Selection::TopK(k) = selection {
        if k == 0 || k > classes {
            return Err(MetricsError::InvalidTopK { k, classes });
        }
    }
    let mut counts = vec![Counts::default(); classes];
    let mut predicted = vec![false; classes];
    let mut order: Vec<usize> = Vec::with_capacity(classes);
    for row in 0..matrix.rows() {
        mark_predicted(matrix.row_scores(row), selection, &mut predicted, &mut order);
        for (class, c) in counts.iter_mut().enumerate() {
            let target = matrix.target(row, class);
            if target < 0.0 {
                continue;
            }
            let positive = target == 1.0;
            c.positives += usize::from(positive);
            c.predicted += usize::from(predicted[class]);
            c.true_positives += usize::from(positive && predicted[class]);
        }
    }
    Ok(counts)
}

fn mark_predicted(scores: &[f32], selection: Selection, predicted: &mut [bool], order: &mut Vec<usize>) {
    match selection {
        Selection::Threshold(t) => predicted.iter_mut().zip(scores).for_each(|(p, &s)| *p = s >= t),
        Selection::TopK(k) => {
            order.clear();
            order.extend(0..scores.len());
            // Highest first; ties go to the lower class index so results are reproducible.
            order.select_nth_unstable_by(k - 1, |&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
            predicted.fill(false);
            order[..k].iter().for_each(|&i| predicted[i] = true);
        }
    }
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
