//! The validated `[images, classes]` score/target matrix every metric reads.

use super::error::{MetricsError, Result};
use tch::{Device, Kind, Tensor};

/// Target value of an unknown label; such labels are left out of every metric.
pub const UNKNOWN_TARGET: f32 = -1.0;

/// Borrowed row-major scores (probabilities or logits) and targets
/// (1 positive, 0 negative, -1 unknown), both `rows × classes`.
#[derive(Debug, Clone, Copy)]
pub struct ScoreMatrix<'a> {
    scores: &'a [f32],
    targets: &'a [f32],
    classes: usize,
}

impl<'a> ScoreMatrix<'a> {
    /// Checks lengths, that every score is finite, and that every target is 1, 0 or -1.
    pub fn new(scores: &'a [f32], targets: &'a [f32], classes: usize) -> Result<Self> {
        let rows = scores.len().checked_div(classes).unwrap_or(0);
        if classes == 0 || scores.len() != targets.len() || scores.len() != rows * classes {
            return Err(MetricsError::LengthMismatch { scores: scores.len(), targets: targets.len(), rows, classes });
        }
        if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
            return Err(MetricsError::NonFiniteScore { value: scores[i], row: i / classes, col: i % classes });
        }
        if let Some(i) = targets.iter().position(|&t| t != 1.0 && t != 0.0 && t != UNKNOWN_TARGET) {
            return Err(MetricsError::InvalidTarget { value: targets[i], row: i / classes, col: i % classes });
        }
        Ok(Self { scores, targets, classes })
    }

    pub fn rows(&self) -> usize {
        self.scores.len() / self.classes
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    pub fn score(&self, row: usize, class: usize) -> f32 {
        self.scores[row * self.classes + class]
    }

    pub fn target(&self, row: usize, class: usize) -> f32 {
        self.targets[row * self.classes + class]
    }

    pub fn row_scores(&self, row: usize) -> &'a [f32] {
        &self.scores[row * self.classes..(row + 1) * self.classes]
    }

    pub fn row_targets(&self, row: usize) -> &'a [f32] {
        &self.targets[row * self.classes..(row + 1) * self.classes]
    }
}

/// Copies a `[N, K]` tensor (any device, any numeric dtype) into a row-major f32 vector.
pub fn tensor_to_vec(tensor: &Tensor) -> Result<Vec<f32>> {
    let flat = tensor.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?.f_contiguous()?.f_view([-1])?;
    Ok(Vec::<f32>::try_from(flat)?)
}

/// Checks that `scores` and `targets` are 2-D with equal shapes; returns the class count.
pub fn check_tensor_shapes(scores: &Tensor, targets: &Tensor) -> Result<usize> {
    if scores.dim() != 2 || scores.size() != targets.size() {
        return Err(MetricsError::ShapeMismatch { scores: scores.size(), targets: targets.size() });
    }
    Ok(scores.size()[1] as usize)
}
