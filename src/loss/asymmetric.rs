//! The multi-label Asymmetric Loss family (paper §2–3, Eq. 1–7).
//!
//! Per element, with `p = sigmoid(z)` and `p_m = max(p - m, 0)`:
//!
//! ```text
//! L+ = -(1 - p)^γ+ · log(max(p, eps))
//! L- = -p_m^γ-     · log(max(1 - p_m, eps))
//! ```
//!
//! summed over batch × classes, exactly as the official implementation.
//! BCE, focal loss, asymmetric focusing and probability shifting are the
//! special cases produced by the named constructors.

use super::error::{LossError, Result};
use super::validate::{check_gamma, check_multi_label, check_same_shape, compute_kind};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// How per-element losses are combined into one scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Reduction {
    /// Sum over batch × classes: the reference's choice, so learning rates
    /// from the paper transfer unchanged.
    #[default]
    Sum,
    /// Mean over batch × classes.
    Mean,
}

/// Parameters of [`AsymmetricLoss`]. `Default` is the paper's COCO recipe.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AsymmetricLossConfig {
    /// γ−: focusing exponent on negatives.
    pub gamma_neg: f64,
    /// γ+: focusing exponent on positives.
    pub gamma_pos: f64,
    /// m: probability margin subtracted from negatives' p (0 disables shifting).
    pub clip: f64,
    /// Floor inside the logs, as in the reference.
    pub eps: f64,
    /// Compute the focusing weights without gradient (reference name
    /// `disable_torch_grad_focal_loss`; on in the ASL training script, off in timm).
    pub detach_focusing: bool,
    pub reduction: Reduction,
}

impl Default for AsymmetricLossConfig {
    fn default() -> Self {
        Self { gamma_neg: 4.0, gamma_pos: 0.0, clip: 0.05, eps: 1e-8, detach_focusing: true, reduction: Reduction::Sum }
    }
}

/// Focusing bases below this are raised to it before `pow`, so that an
/// exponent in (0, 1) at a base of exactly 0 yields a finite derivative
/// instead of `inf · 0 = NaN`. The loss value there is unchanged because
/// the log factor it multiplies is exactly 0.
pub(crate) const FOCUS_BASE_FLOOR: f64 = 1e-30;

/// The multi-label Asymmetric Loss, written as tensor ops so autograd
/// provides the gradient.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AsymmetricLoss {
    config: AsymmetricLossConfig,
}

impl AsymmetricLoss {
    /// Validates the parameters: γ± ≥ 0, 0 ≤ m < 1, 0 ≤ eps < 1, all finite.
    pub fn new(config: AsymmetricLossConfig) -> Result<Self> {
        let invalid = |name, value, reason| LossError::InvalidParameter { name, value, reason };
        check_gamma("gamma_neg", config.gamma_neg)?;
        check_gamma("gamma_pos", config.gamma_pos)?;
        if !(0.0..1.0).contains(&config.clip) {
            return Err(invalid("clip", config.clip, "the margin m must satisfy 0 <= m < 1"));
        }
        if !(0.0..1.0).contains(&config.eps) {
            return Err(invalid("eps", config.eps, "must satisfy 0 <= eps < 1"));
        }
        Ok(Self { config })
    }

    /// Plain binary cross-entropy: (γ−, γ+, m) = (0, 0, 0).
    pub fn bce() -> Self {
        Self::preset(0.0, 0.0, 0.0)
    }

    /// Symmetric focal loss: (γ, γ, 0).
    pub fn focal(gamma: f64) -> Result<Self> {
        Self::new(AsymmetricLossConfig { gamma_neg: gamma, gamma_pos: gamma, clip: 0.0, ..Default::default() })
    }

    /// Asymmetric focusing only: (γ−, γ+, 0).
    pub fn asymmetric_focusing(gamma_neg: f64, gamma_pos: f64) -> Result<Self> {
        Self::new(AsymmetricLossConfig { gamma_neg, gamma_pos, clip: 0.0, ..Default::default() })
    }

    /// Cross-entropy with probability shifting only: (0, 0, m).
    pub fn probability_shifting(margin: f64) -> Result<Self> {
        Self::new(AsymmetricLossConfig { gamma_neg: 0.0, gamma_pos: 0.0, clip: margin, ..Default::default() })
    }

    /// Full ASL with the paper's COCO defaults (4, 0, 0.05).
    pub fn asl() -> Self {
        Self { config: AsymmetricLossConfig::default() }
    }

    fn preset(gamma_neg: f64, gamma_pos: f64, clip: f64) -> Self {
        Self { config: AsymmetricLossConfig { gamma_neg, gamma_pos, clip, ..Default::default() } }
    }

    pub fn config(&self) -> &AsymmetricLossConfig {
        &self.config
    }

    /// Returns a copy with another γ−, as the adaptive controller needs
    /// after every batch.
    pub fn with_gamma_neg(&self, gamma_neg: f64) -> Result<Self> {
        Self::new(AsymmetricLossConfig { gamma_neg, ..self.config })
    }

    /// Returns a copy with another focusing-gradient mode.
    pub fn with_detach_focusing(&self, detach_focusing: bool) -> Self {
        Self { config: AsymmetricLossConfig { detach_focusing, ..self.config } }
    }

    /// Returns a copy with another reduction.
    pub fn with_reduction(&self, reduction: Reduction) -> Self {
        Self { config: AsymmetricLossConfig { reduction, ..self.config } }
    }

    /// Loss of `logits` `[B, K]` (any float dtype) against 0/1 `targets` `[B, K]`
    /// (any dtype). Returns a scalar in f32 (f64 for f64 logits).
    ///
    /// Errors on a shape mismatch, a non-binary target or a non-finite logit.
    pub fn forward(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        self.forward_weighted(logits, targets, None)
    }

    /// As [`forward`](Self::forward), with an optional per-element weight
    /// `[B, K]` that multiplies each term before reduction (partial labels,
    /// see [`super::PartialLabels`]).
    pub fn forward_weighted(&self, logits: &Tensor, targets: &Tensor, weights: Option<&Tensor>) -> Result<Tensor> {
        check_multi_label(logits, targets)?;
        if let Some(weights) = weights {
            check_same_shape("weights", weights, logits)?;
        }
        self.forward_unchecked(logits, targets, weights)
    }

    /// As [`forward_weighted`](Self::forward_weighted) without the checks:
    /// for callers whose inputs are valid by construction (the trainer's
    /// batches), so no device sync is spent. A non-finite logit gives a
    /// non-finite loss instead of an error.
    pub fn forward_unchecked(&self, logits: &Tensor, targets: &Tensor, weights: Option<&Tensor>) -> Result<Tensor> {
        let terms = self.log_likelihood(logits, targets)?;
        let weighted = match weights {
            Some(w) => terms.f_mul(&w.f_to_kind(terms.kind())?)?,
            None => terms,
        };
        // The sign goes on the scalar, not on every element: one pass fewer, same value.
        let total = match self.config.reduction {
            Reduction::Sum => weighted.f_sum(weighted.kind())?,
            Reduction::Mean => weighted.f_mean(weighted.kind())?,
        };
        Ok(total.f_neg()?)
    }

    /// Unreduced loss `[B, K]`, without input validation.
    pub fn per_element(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        Ok(self.log_likelihood(logits, targets)?.f_neg()?)
    }

    /// `y·L+ + (1-y)·L-` per element (the loss, negated), written with `lerp`
    /// so it is one kernel.
    fn log_likelihood(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let kind = compute_kind(logits);
        let z = logits.f_to_kind(kind)?;
        let y = targets.f_to_kind(kind)?;
        let positive = self.positive_term(&z)?;
        let negative = self.negative_term(&z)?;
        Ok(negative.f_lerp_tensor(&positive, &y)?)
    }

    /// `(1-p)^γ+ · log(max(p, eps))` for every element.
    fn positive_term(&self, z: &Tensor) -> Result<Tensor> {
        // log(max(p, eps)) == max(log σ(z), log eps), without forming p.
        let log_p = z.f_log_sigmoid()?.f_clamp_min(self.config.eps.ln())?;
        // 1 - p == σ(-z), exact even where p rounds to 1.
        let one_minus_p = || z.f_neg()?.f_sigmoid();
        self.focus(log_p, self.config.gamma_pos, one_minus_p)
    }

    /// `p_m^γ- · log(max(1 - p_m, eps))` for every element.
    fn negative_term(&self, z: &Tensor) -> Result<Tensor> {
        let AsymmetricLossConfig { clip, eps, .. } = self.config;
        if clip == 0.0 {
            let log_q = z.f_neg()?.f_log_sigmoid()?.f_clamp_min(eps.ln())?;
            return self.focus(log_q, self.config.gamma_neg, || z.f_sigmoid());
        }
        // The reference's `xs_neg = min(1 - p + m, 1)`; p_m = 1 - xs_neg.
        let p = z.f_sigmoid()?;
        let log_q = p.f_rsub_scalar(1.0 + clip)?.f_clamp(eps, 1.0)?.f_log()?;
        // p − m, floored at 0 by `focus`'s floor.
        self.focus(log_q, self.config.gamma_neg, || p.f_sub_scalar(clip))
    }

    /// Multiplies `log_term` by `base()^gamma`; skips the weight when γ = 0.
    fn focus(&self, log_term: Tensor, gamma: f64, base: impl Fn() -> Result<Tensor, tch::TchError>) -> Result<Tensor> {
        if gamma == 0.0 {
            return Ok(log_term);
        }
        let base = base()?;
        let base = if self.config.detach_focusing { base.f_detach()? } else { base };
        let weight = power(&base.f_clamp_min(FOCUS_BASE_FLOOR)?, gamma)?;
        Ok(log_term.f_mul(&weight)?)
    }
}

/// `base^gamma`. Whole exponents up to 8 (γ− = 4, the paper's, and the
/// common 1 to 7) are products of squares: two multiplications for γ = 4,
/// where libtorch's `pow` calls `std::pow` per element.
fn power(base: &Tensor, gamma: f64) -> Result<Tensor, tch::TchError> {
    if gamma.fract() != 0.0 || !(1.0..=8.0).contains(&gamma) {
        return base.f_pow_tensor_scalar(gamma);
    }
    let (mut exponent, mut square, mut result) = (gamma as u32, base.shallow_clone(), None::<Tensor>);
    loop {
        if exponent & 1 == 1 {
            result = Some(match result {
                Some(r) => r.f_mul(&square)?,
                None => square.shallow_clone(),
            });
        }
        exponent >>= 1;
        if exponent == 0 {
            return Ok(result.expect("gamma >= 1 sets a bit"));
        }
        square = square.f_mul(&square)?;
    }
}
