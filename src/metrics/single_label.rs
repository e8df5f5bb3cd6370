//! The metrics single-label classification is reported with (paper
//! Table 12, ImageNet-style): top-1 and top-5 accuracy, and macro-F1 of the
//! top-1 prediction, from each image's one positive and its ranked classes.

use super::scored::ScoredLabels;
use serde::{Deserialize, Serialize};

/// How many ranked classes top-5 looks at; the scored labels must keep at least as many.
pub const TOP_5: usize = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SingleLabelMetrics {
    /// Images with exactly one positive, the ones these count.
    pub images: usize,
    /// Images whose best class is their label, × 100.
    pub top1: f64,
    /// Images whose label is among their five best classes (all of them, with fewer classes), × 100.
    pub top5: f64,
    /// The mean over classes of F1 of the top-1 prediction, × 100, over the classes that are some
    /// image's label or prediction (as scikit-learn's `f1_score(average="macro")`).
    pub macro_f1: f64,
}

impl SingleLabelMetrics {
    /// The metrics of `scored`'s rows with exactly one positive label;
    /// `None` when there are none. `scored` must keep each row's best
    /// `min(5, classes)` classes.
    pub fn compute(scored: &ScoredLabels) -> Option<Self> {
        let mut positive: Vec<Option<u32>> = vec![None; scored.rows()];
        let mut positives = vec![0usize; scored.rows()];
        for label in scored.labels().iter().filter(|l| l.positive) {
            positive[label.row as usize] = Some(label.class);
            positives[label.row as usize] += 1;
        }
        let (mut images, mut top1, mut top5) = (0usize, 0usize, 0usize);
        let classes = scored.classes();
        let (mut true_positives, mut predicted, mut actual) =
            (vec![0usize; classes], vec![0; classes], vec![0; classes]);
        for row in 0..scored.rows() {
            let (Some(label), 1) = (positive[row], positives[row]) else { continue };
            let ranked = scored.top(row as u32);
            let best = ranked[0];
            images += 1;
            top1 += usize::from(best == label);
            top5 += usize::from(ranked.iter().take(TOP_5).any(|&c| c == label));
            predicted[best as usize] += 1;
            actual[label as usize] += 1;
            true_positives[label as usize] += usize::from(best == label);
        }
        if images == 0 {
            return None;
        }
        let f1s: Vec<f64> = (0..classes)
            .filter(|&c| predicted[c] + actual[c] > 0)
            .map(|c| 2.0 * true_positives[c] as f64 / (predicted[c] + actual[c]) as f64)
            .collect();
        let percent = |n: usize| 100.0 * n as f64 / images as f64;
        Some(Self {
            images,
            top1: percent(top1),
            top5: percent(top5),
            macro_f1: 100.0 * f1s.iter().sum::<f64>() / f1s.len() as f64,
        })
    }
}

impl std::fmt::Display for SingleLabelMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "top-1 {:.2}  top-5 {:.2}  macro-F1 {:.2} (single-label, {} images)",
            self.top1, self.top5, self.macro_f1, self.images
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of `(label, scores)`: one positive each, every other class a negative.
    fn scored(rows: &[(usize, [f32; 6])]) -> ScoredLabels {
        let mut scored = ScoredLabels::new(6, TOP_5);
        for (image, (label, scores)) in rows.iter().enumerate() {
            let targets: Vec<f32> = (0..6).map(|c| f32::from(u8::from(c == *label))).collect();
            scored.push_row(image as u32, scores, &targets).unwrap();
        }
        scored
    }

    #[test]
    fn top1_top5_and_macro_f1_match_a_hand_count() {
        let metrics = SingleLabelMetrics::compute(&scored(&[
            // Right: class 0 best.
            (0, [0.9, 0.1, 0.0, 0.0, 0.0, 0.0]),
            // Wrong: class 1 best, the label 0 second.
            (0, [0.5, 0.6, 0.0, 0.0, 0.0, 0.0]),
            // Right: class 2.
            (2, [0.0, 0.1, 0.8, 0.0, 0.0, 0.0]),
            // Wrong and outside the top 5: the label 5 has the lowest score.
            (5, [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]),
        ]))
        .unwrap();
        assert_eq!(metrics.images, 4);
        assert_eq!(metrics.top1, 50.0);
        assert_eq!(metrics.top5, 75.0);
        // Predicted 0, 1, 2, 0 for labels 0, 0, 2, 5. F1: class 0 2·1/(2+2) = 0.5, class 1 0 (predicted once,
        // never the label), class 2 1, class 5 0 (the label once, never predicted); classes 3 and 4 appear
        // nowhere and are left out: (0.5 + 0 + 1 + 0) / 4.
        assert!((metrics.macro_f1 - 37.5).abs() < 1e-12, "{metrics:?}");
    }

    #[test]
    fn rows_without_exactly_one_positive_are_not_counted() {
        let mut scored = ScoredLabels::new(3, 3);
        scored.push_row(0, &[0.9, 0.1, 0.2], &[1.0, 0.0, 0.0]).unwrap();
        scored.push_row(1, &[0.9, 0.1, 0.2], &[1.0, 1.0, 0.0]).unwrap();
        scored.push_row(2, &[0.9, 0.1, 0.2], &[0.0, 0.0, 0.0]).unwrap();
        let metrics = SingleLabelMetrics::compute(&scored).unwrap();
        assert_eq!((metrics.images, metrics.top1, metrics.top5), (1, 100.0, 100.0));
        assert_eq!(SingleLabelMetrics::compute(&ScoredLabels::new(3, 3)), None);
    }
}
