//! Per-class decision thresholds chosen to maximise F1 on a validation
//! set, saved beside the model so `asl infer` can use them.

use super::scored::ScoredLabels;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassThresholds {
    pub class_names: Vec<String>,
    /// Predict class k when its probability is at least `thresholds[k]`.
    pub thresholds: Vec<f32>,
    /// The F1 each threshold reached on the tuning set (`None`: no positives, fallback used).
    pub f1: Vec<Option<f64>>,
}

/// For each class, the score threshold with the best F1 over its verified
/// labels (ties: the higher threshold). Classes without positives keep `fallback`.
pub fn tune_thresholds(scored: &ScoredLabels, class_names: Vec<String>, fallback: f32) -> ClassThresholds {
    let mut thresholds = Vec::with_capacity(scored.classes());
    let mut f1s = Vec::with_capacity(scored.classes());
    for mut column in scored.by_class() {
        let positives = column.iter().filter(|(_, p)| *p).count();
        if positives == 0 {
            thresholds.push(fallback);
            f1s.push(None);
            continue;
        }
        column.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (mut best_f1, mut best_threshold, mut true_positives) = (0.0, fallback, 0usize);
        for (i, &(score, positive)) in column.iter().enumerate() {
            true_positives += usize::from(positive);
            if column.get(i + 1).is_some_and(|next| next.0 == score) {
                continue;
            }
            let f1 = 2.0 * true_positives as f64 / ((i + 1) + positives) as f64;
            if f1 > best_f1 {
                (best_f1, best_threshold) = (f1, score);
            }
        }
        thresholds.push(best_threshold);
        f1s.push(Some(best_f1));
    }
    ClassThresholds { class_names, thresholds, f1: f1s }
}

impl ClassThresholds {
    /// `model.pt` → `model.thresholds.json`.
    pub fn path_for(model: &Path) -> PathBuf {
        model.with_extension("thresholds.json")
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::atomic::write_bytes_atomically(path, &json)
    }

    /// Reads the thresholds beside `model`, if there are any.
    pub fn load_beside(model: &Path) -> std::io::Result<Option<Self>> {
        let path = Self::path_for(model);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ScoreMatrix;

    fn scored(scores: &[f32], targets: &[f32]) -> ScoredLabels {
        ScoredLabels::from_matrix(&ScoreMatrix::new(scores, targets, 1).unwrap(), 1)
    }

    #[test]
    fn picks_the_f1_maximising_cut_by_hand() {
        // Class 0 ranked: 0.9 (+), 0.8 (-), 0.7 (+), 0.2 (-). Cuts: after 1 → F1 = 2·1/(1+2) = 0.667;
        // after 3 → 2·2/(3+2) = 0.8; after 4 → 2·2/(4+2) = 0.667. Best: threshold 0.7.
        let scores = [0.9, 0.8, 0.7, 0.2];
        let targets = [1.0, 0.0, 1.0, 0.0];
        let tuned = tune_thresholds(&scored(&scores, &targets), vec!["a".into()], 0.5);
        assert_eq!(tuned.thresholds, vec![0.7]);
        assert!((tuned.f1[0].unwrap() - 0.8).abs() < 1e-12);
        assert_eq!(tune_thresholds(&scored(&[0.3, 0.6], &[0.0, 0.0]), vec!["b".into()], 0.5).thresholds, vec![0.5]);
    }
}
