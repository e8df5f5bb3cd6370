//! What the metrics read: one score per verified (image, class) label, and
//! each image's top-k classes over all classes. A fully annotated split
//! (COCO, VOC) verifies every label, so this holds what a dense
//! `[images, classes]` matrix holds; a partially labelled one (Open
//! Images: 125 k test images × 9,605 classes, a handful verified each)
//! keeps only its verified labels instead of 4.8 GB of scores.

use super::error::{MetricsError, Result};
use super::scores::{ScoreMatrix, UNKNOWN_TARGET};

/// One verified label's score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredLabel {
    /// The scored image's row (order of scoring).
    pub row: u32,
    pub class: u32,
    pub score: f32,
    pub positive: bool,
}

/// Bytes of one label when sent between ranks.
const LABEL_BYTES: usize = 13;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScoredLabels {
    classes: usize,
    /// How many best classes each row keeps, for the top-k metrics.
    k: usize,
    /// Per scored row: the dataset index of its image.
    images: Vec<u32>,
    /// Per scored row: its `k` highest-scoring classes (ties: the lower class first).
    top: Vec<u32>,
    labels: Vec<ScoredLabel>,
}

impl ScoredLabels {
    pub fn new(classes: usize, k: usize) -> Self {
        Self { classes, k: k.min(classes), ..Self::default() }
    }

    /// Every label of `matrix` whose target is not unknown, rows numbered from 0.
    pub fn from_matrix(matrix: &ScoreMatrix, k: usize) -> Self {
        let mut scored = Self::new(matrix.classes(), k);
        for row in 0..matrix.rows() {
            scored.push_checked(row as u32, matrix.row_scores(row), matrix.row_targets(row));
        }
        scored
    }

    /// Adds the row of image `image`: its scores over all classes, and its
    /// targets (1, 0, or -1 for a label that is not verified and is left out).
    pub fn push_row(&mut self, image: u32, scores: &[f32], targets: &[f32]) -> Result<()> {
        ScoreMatrix::new(scores, targets, self.classes)?;
        self.push_checked(image, scores, targets);
        Ok(())
    }

    fn push_checked(&mut self, image: u32, scores: &[f32], targets: &[f32]) {
        let row = self.images.len() as u32;
        self.images.push(image);
        self.push_top(scores);
        for (class, (&score, &target)) in scores.iter().zip(targets).enumerate() {
            if target != UNKNOWN_TARGET {
                self.labels.push(ScoredLabel { row, class: class as u32, score, positive: target == 1.0 });
            }
        }
    }

    /// Appends the row's `k` best classes, best first, in one pass over
    /// its scores and without allocating (this runs once per validation
    /// image, over up to 9,605 classes). Classes are visited in ascending
    /// order and only a strictly higher score displaces, so a tie goes to
    /// the lower class.
    fn push_top(&mut self, scores: &[f32]) {
        let start = self.top.len();
        for (class, &score) in scores.iter().enumerate() {
            let best = &self.top[start..];
            let beats = |&other: &u32| score.total_cmp(&scores[other as usize]).is_gt();
            // Most classes fall short of the k-th best: one comparison each.
            if best.len() == self.k && !best.last().is_some_and(beats) {
                continue;
            }
            let place = best.iter().position(beats).unwrap_or(best.len());
            if place < self.k {
                if best.len() == self.k {
                    self.top.pop();
                }
                self.top.insert(start + place, class as u32);
            }
        }
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Scored images.
    pub fn rows(&self) -> usize {
        self.images.len()
    }

    /// The dataset index of each scored row's image.
    pub fn images(&self) -> &[u32] {
        &self.images
    }

    pub fn labels(&self) -> &[ScoredLabel] {
        &self.labels
    }

    /// Row `row`'s best classes.
    pub fn top(&self, row: u32) -> &[u32] {
        &self.top[row as usize * self.k..(row as usize + 1) * self.k]
    }

    /// Each class's labels, `(score, positive)`, in row order.
    pub fn by_class(&self) -> Vec<Vec<(f32, bool)>> {
        let mut columns: Vec<Vec<(f32, bool)>> = vec![Vec::new(); self.classes];
        for label in &self.labels {
            columns[label.class as usize].push((label.score, label.positive));
        }
        columns
    }

    /// The rows of `parts` one after the other (ranks' shares gathered).
    pub fn concat(parts: Vec<ScoredLabels>) -> Result<Self> {
        let mut all = parts.first().map(|p| Self::new(p.classes, p.k)).unwrap_or_default();
        for part in parts {
            if (part.classes, part.k) != (all.classes, all.k) {
                return Err(MetricsError::ClassCountChanged { expected: all.classes, found: part.classes });
            }
            let offset = all.images.len() as u32;
            all.images.extend_from_slice(&part.images);
            all.top.extend_from_slice(&part.top);
            all.labels.extend(part.labels.into_iter().map(|l| ScoredLabel { row: l.row + offset, ..l }));
        }
        Ok(all)
    }

    /// The labels and rows as bytes, to send to another rank.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(24 + self.images.len() * 4 * (1 + self.k) + self.labels.len() * LABEL_BYTES);
        for count in [self.classes, self.k, self.images.len(), self.labels.len()] {
            bytes.extend_from_slice(&(count as u64).to_le_bytes());
        }
        self.images.iter().chain(&self.top).for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        for label in &self.labels {
            bytes.extend_from_slice(&label.row.to_le_bytes());
            bytes.extend_from_slice(&label.class.to_le_bytes());
            bytes.extend_from_slice(&label.score.to_le_bytes());
            bytes.push(u8::from(label.positive));
        }
        bytes
    }

    /// What [`to_bytes`](Self::to_bytes) wrote (trailing bytes ignored: padding).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let corrupt = || MetricsError::Corrupt(format!("{} bytes of scored labels do not parse", bytes.len()));
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8]> {
            let slice = bytes.get(at..at + n).ok_or_else(corrupt)?;
            at += n;
            Ok(slice)
        };
        let mut counts = [0usize; 4];
        for count in &mut counts {
            *count = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes")) as usize;
        }
        let [classes, k, rows, labels] = counts;
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let images = take(rows * 4)?;
        let top = take(rows * k * 4)?;
        let mut scored = Self {
            classes,
            k,
            images: (0..rows).map(|i| u32_at(images, 4 * i)).collect(),
            top: (0..rows * k).map(|i| u32_at(top, 4 * i)).collect(),
            labels: Vec::with_capacity(labels),
        };
        let raw = take(labels * LABEL_BYTES)?;
        for chunk in raw.chunks_exact(LABEL_BYTES) {
            scored.labels.push(ScoredLabel {
                row: u32_at(chunk, 0),
                class: u32_at(chunk, 4),
                score: f32::from_bits(u32_at(chunk, 8)),
                positive: chunk[12] != 0,
            });
        }
        Ok(scored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_verified_labels_and_their_best_classes_and_survive_bytes() {
        let mut scored = ScoredLabels::new(4, 2);
        scored.push_row(7, &[0.1, 0.9, 0.9, 0.2], &[1.0, -1.0, 0.0, -1.0]).unwrap();
        scored.push_row(3, &[0.5, 0.4, 0.3, 0.6], &[0.0, 0.0, 0.0, 1.0]).unwrap();
        assert_eq!((scored.rows(), scored.labels().len()), (2, 6));
        assert_eq!(scored.top(0), [1, 2], "ties go to the lower class");
        assert_eq!(scored.top(1), [3, 0]);
        let back = ScoredLabels::from_bytes(&[scored.to_bytes(), vec![0; 5]].concat()).unwrap();
        assert_eq!(back, scored);
        let both = ScoredLabels::concat(vec![scored.clone(), back]).unwrap();
        assert_eq!((both.rows(), both.labels()[6].row), (4, 2));
        assert!(scored.push_row(1, &[f32::NAN, 0.0, 0.0, 0.0], &[0.0; 4]).is_err());
    }

    #[test]
    fn the_best_classes_are_those_of_a_full_sort_by_score_then_class() {
        // Scores in steps of 0.1: many ties.
        let mut state = 7u64;
        for k in [1, 3, 9] {
            let mut scored = ScoredLabels::new(9, k);
            for row in 0..200u32 {
                let scores: Vec<f32> = (0..9)
                    .map(|_| {
                        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        ((state >> 33) % 10) as f32 / 10.0
                    })
                    .collect();
                scored.push_row(row, &scores, &[0.0; 9]).unwrap();
                let mut sorted: Vec<u32> = (0..9).collect();
                sorted.sort_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]).then(a.cmp(&b)));
                assert_eq!(scored.top(row), &sorted[..k], "{scores:?}");
            }
        }
    }
}
