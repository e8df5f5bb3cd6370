//! Collects scores batch by batch, in burn's `update`/`compute` shape.

use super::error::{MetricsError, Result};
use super::report::{MetricsReport, TOP_K};
use super::scored::ScoredLabels;
use super::scores::{check_tensor_shapes, tensor_to_vec, ScoreMatrix};
use tch::Tensor;

#[derive(Debug, Default, Clone)]
pub struct MetricsAccumulator {
    classes: Option<usize>,
    scores: Vec<f32>,
    targets: Vec<f32>,
}

impl MetricsAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a batch: `probabilities` and `targets` `[B, K]` on any device.
    pub fn update(&mut self, probabilities: &Tensor, targets: &Tensor) -> Result<()> {
        let classes = check_tensor_shapes(probabilities, targets)?;
        self.update_slices(&tensor_to_vec(probabilities)?, &tensor_to_vec(targets)?, classes)
    }

    /// Appends a batch given as row-major slices of `rows × classes`.
    pub fn update_slices(&mut self, probabilities: &[f32], targets: &[f32], classes: usize) -> Result<()> {
        if let Some(expected) = self.classes.filter(|&c| c != classes) {
            return Err(MetricsError::ClassCountChanged { expected, found: classes });
        }
        ScoreMatrix::new(probabilities, targets, classes)?;
        self.classes = Some(classes);
        self.scores.extend_from_slice(probabilities);
        self.targets.extend_from_slice(targets);
        Ok(())
    }

    pub fn images(&self) -> usize {
        self.classes.map_or(0, |c| self.scores.len() / c)
    }

    /// The report over everything appended; `None` before any update.
    pub fn compute(&self, threshold: f32) -> Result<Option<MetricsReport>> {
        let Some(classes) = self.classes else { return Ok(None) };
        let matrix = ScoreMatrix::new(&self.scores, &self.targets, classes)?;
        MetricsReport::compute(&ScoredLabels::from_matrix(&matrix, TOP_K), threshold).map(Some)
    }

    /// The row-major `[images, K]` scores and targets appended, in order.
    pub fn into_rows(self) -> (Vec<f32>, Vec<f32>) {
        (self.scores, self.targets)
    }
}
