//! The `loss` section of a run's config.

use super::{AdaptiveAsymmetryConfig, AsymmetricLossConfig, Reduction, SingleLabelConfig};
use crate::config::{finite_non_negative, in_closed_unit, in_unit, Validate};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which member of the loss family trains the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LossConfig {
    /// The multi-label ASL family (BCE, focal, AF, PS, ASL), optionally adaptive.
    Asymmetric(AsymmetricSection),
    /// ASLSingleLabel for single-label data: each image has exactly one positive.
    SingleLabel(SingleLabelConfig),
}

impl Default for LossConfig {
    fn default() -> Self {
        Self::Asymmetric(AsymmetricSection::default())
    }
}

/// The multi-label loss as training uses it: the ASL parameters, the
/// optional γ− controller, and the weight of unknown labels. The ASL
/// parameters are listed here rather than flattened from
/// [`AsymmetricLossConfig`]: through `flatten` inside a tagged enum serde
/// no longer rejects a misspelt key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AsymmetricSection {
    /// γ−: focusing on negatives (0 with gamma_pos 0 and clip 0 is plain BCE).
    pub gamma_neg: f64,
    /// γ+: focusing on positives.
    pub gamma_pos: f64,
    /// m: the probability margin subtracted from negatives (probability shifting).
    pub clip: f64,
    /// Floor inside the logs.
    pub eps: f64,
    /// Focusing weights without gradient, as in the reference training script (timm computes them with it).
    pub detach_focusing: bool,
    /// sum over batch × classes (the reference) or mean.
    pub reduction: Reduction,
    /// Adaptive γ− (paper §3.4): null keeps γ− fixed.
    pub adaptive: Option<AdaptiveAsymmetryConfig>,
    /// Weight of unknown labels (partial annotations), which count as negatives.
    pub unknown_weight: f64,
}

impl Default for AsymmetricSection {
    fn default() -> Self {
        let loss = AsymmetricLossConfig::default();
        Self {
            gamma_neg: loss.gamma_neg,
            gamma_pos: loss.gamma_pos,
            clip: loss.clip,
            eps: loss.eps,
            detach_focusing: loss.detach_focusing,
            reduction: loss.reduction,
            adaptive: None,
            unknown_weight: 1.0,
        }
    }
}

impl AsymmetricSection {
    /// The loss parameters, without the training-only keys.
    pub fn loss(&self) -> AsymmetricLossConfig {
        AsymmetricLossConfig {
            gamma_neg: self.gamma_neg,
            gamma_pos: self.gamma_pos,
            clip: self.clip,
            eps: self.eps,
            detach_focusing: self.detach_focusing,
            reduction: self.reduction,
        }
    }
}

impl Validate for LossConfig {
    fn validate(&self) -> crate::config::Result<()> {
        let LossConfig::Asymmetric(loss) = self else { return Ok(()) };
        finite_non_negative("loss.gamma_neg", loss.gamma_neg)?;
        finite_non_negative("loss.gamma_pos", loss.gamma_pos)?;
        in_unit("loss.clip", loss.clip)?;
        in_unit("loss.eps", loss.eps)?;
        in_closed_unit("loss.unknown_weight", loss.unknown_weight)
    }
}
