//! Input checks shared by the loss family. They cost one device sync per
//! call: all conditions are folded into one boolean first, and the offending
//! element is only located when that boolean says something is wrong.

use super::error::{LossError, Result};
use tch::{Kind, Tensor};

/// The dtype the loss is evaluated in: f64 stays f64 (finite-difference
/// tests need it), every other float becomes f32 because fp16/bf16 lose
/// `eps = 1e-8` and overflow in `log` (reference issue ASL#53).
pub(crate) fn compute_kind(logits: &Tensor) -> Kind {
    match logits.kind() {
        Kind::Double => Kind::Double,
        _ => Kind::Float,
    }
}

pub(crate) fn check_two_dimensional(logits: &Tensor) -> Result<()> {
    if logits.dim() != 2 {
        return Err(LossError::NotTwoDimensional(logits.size()));
    }
    Ok(())
}

pub(crate) fn check_same_shape(what: &'static str, other: &Tensor, logits: &Tensor) -> Result<()> {
    if other.size() != logits.size() {
        return Err(LossError::ShapeMismatch { what, found: other.size(), logits: logits.size() });
    }
    Ok(())
}

/// `true` where a logit is NaN or ±inf.
pub(crate) fn non_finite(logits: &Tensor) -> Tensor {
    logits.isfinite().logical_not()
}

/// `true` where a target is neither 0 nor 1.
pub(crate) fn non_binary(targets: &Tensor) -> Tensor {
    targets.ne(0.0).logical_and(&targets.ne(1.0))
}

/// Returns `(row, col, value)` of the first `true` element of `mask` in `source`.
pub(crate) fn first_flagged(mask: &Tensor, source: &Tensor) -> Result<(i64, i64, f64)> {
    let index = mask.f_nonzero()?.f_get(0)?;
    let row = index.f_int64_value(&[0])?;
    let col = index.f_int64_value(&[1])?;
    let value = source.f_double_value(&[row, col])?;
    Ok((row, col, value))
}

/// Validates multi-label logits and 0/1 targets of the same `[B, K]` shape.
pub(crate) fn check_multi_label(logits: &Tensor, targets: &Tensor) -> Result<()> {
    check_two_dimensional(logits)?;
    check_same_shape("targets", targets, logits)?;
    let bad_logits = non_finite(logits);
    let bad_targets = non_binary(targets);
    let any_bad = bad_logits.f_any()?.f_logical_or(&bad_targets.f_any()?)?;
    if !bool::try_from(any_bad)? {
        return Ok(());
    }
    if bool::try_from(bad_logits.f_any()?)? {
        let (row, col, value) = first_flagged(&bad_logits, logits)?;
        return Err(LossError::NonFiniteLogit { value, row, col });
    }
    let (row, col, value) = first_flagged(&bad_targets, targets)?;
    Err(LossError::NonBinaryTarget { value, row, col })
}

/// γ must be a finite number >= 0.
pub(crate) fn check_gamma(name: &'static str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(LossError::InvalidParameter { name, value, reason: "must be a finite number >= 0" })
    }
}
