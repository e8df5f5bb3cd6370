//! ASL for single-label (e.g. fine-grained) classification, as the
//! reference `ASLSingleLabel`: log-softmax, focusing weights
//! `(1 - p)^γ+` on the target class and `p^γ−` on the others, label
//! smoothing, and mean over the batch.

use super::asymmetric::{Reduction, FOCUS_BASE_FLOOR};
use super::error::{LossError, Result};
use super::validate::{check_gamma, check_two_dimensional, compute_kind, first_flagged, non_finite};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SingleLabelConfig {
    /// γ+: focusing on the target class.
    pub gamma_pos: f64,
    /// γ−: focusing on the other classes.
    pub gamma_neg: f64,
    /// Label smoothing ε: targets become `(1-ε)·onehot + ε/K`.
    pub label_smoothing: f64,
    /// Over the batch; the per-sample loss is always summed over classes.
    pub reduction: Reduction,
}

impl Default for SingleLabelConfig {
    fn default() -> Self {
        Self { gamma_pos: 0.0, gamma_neg: 4.0, label_smoothing: 0.1, reduction: Reduction::Mean }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AsymmetricLossSingleLabel {
    config: SingleLabelConfig,
}

impl AsymmetricLossSingleLabel {
    pub fn new(config: SingleLabelConfig) -> Result<Self> {
        let invalid = |name, value, reason| LossError::InvalidParameter { name, value, reason };
        check_gamma("gamma_neg", config.gamma_neg)?;
        check_gamma("gamma_pos", config.gamma_pos)?;
        if !(0.0..=1.0).contains(&config.label_smoothing) {
            return Err(invalid("label_smoothing", config.label_smoothing, "must lie in [0, 1]"));
        }
        Ok(Self { config })
    }

    pub fn config(&self) -> &SingleLabelConfig {
        &self.config
    }

    /// Loss of `logits` `[B, K]` against class indices `targets` `[B]`
    /// (integer dtype). Errors on shapes, classes outside `0..K` and
    /// non-finite logits.
    pub fn forward(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let onehot = self.check_inputs(logits, targets)?;
        self.forward_onehot_unchecked(logits, &onehot)
    }

    /// As [`forward`](Self::forward), against one-hot `onehot` `[B, K]`
    /// (any dtype), without the checks: for callers whose inputs are valid
    /// by construction (the trainer's batches), so no device sync is spent.
    pub fn forward_onehot_unchecked(&self, logits: &Tensor, onehot: &Tensor) -> Result<Tensor> {
        let kind = compute_kind(logits);
        let classes = logits.size()[1];
        let log_p = logits.f_to_kind(kind)?.f_log_softmax(1, kind)?;
        let p = log_p.f_exp()?;
        let onehot = onehot.f_to_kind(kind)?;
        let pow = |base: Tensor, gamma: f64| base.f_clamp_min(FOCUS_BASE_FLOOR)?.f_pow_tensor_scalar(gamma);
        let weight_target = pow(p.f_neg()?.f_add_scalar(1.0)?, self.config.gamma_pos)?;
        let weight_other = pow(p.shallow_clone(), self.config.gamma_neg)?;
        let weight = weight_other.f_lerp_tensor(&weight_target, &onehot)?;
        let eps = self.config.label_smoothing;
        let smoothed = onehot.f_mul_scalar(1.0 - eps)?.f_add_scalar(eps / classes as f64)?;
        let per_sample = smoothed.f_mul(&log_p)?.f_mul(&weight)?.f_sum_dim_intlist(1, false, kind)?.f_neg()?;
        Ok(match self.config.reduction {
            Reduction::Sum => per_sample.f_sum(kind)?,
            Reduction::Mean => per_sample.f_mean(kind)?,
        })
    }

    /// Validates the inputs and returns the one-hot targets `[B, K]` (bool).
    fn check_inputs(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        check_two_dimensional(logits)?;
        let (batch, classes) = (logits.size()[0], logits.size()[1]);
        if targets.size() != [batch] {
            return Err(LossError::ShapeMismatch {
                what: "class-index targets",
                found: targets.size(),
                logits: logits.size(),
            });
        }
        let bad_logits = non_finite(logits);
        if bool::try_from(bad_logits.f_any()?)? {
            let (row, col, value) = first_flagged(&bad_logits, logits)?;
            return Err(LossError::NonFiniteLogit { value, row, col });
        }
        let indices = targets.f_to_kind(Kind::Int64)?;
        let out_of_range = indices.f_lt(0)?.f_logical_or(&indices.f_ge(classes)?)?;
        if bool::try_from(out_of_range.f_any()?)? {
            let row = out_of_range.f_nonzero()?.f_int64_value(&[0, 0])?;
            let value = indices.f_int64_value(&[row])?;
            return Err(LossError::ClassOutOfRange { value, row, classes });
        }
        Ok(logits.f_zeros_like()?.f_to_kind(Kind::Bool)?.f_scatter_value(1, &indices.f_unsqueeze(1)?, 1.0)?)
    }
}
