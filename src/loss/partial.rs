//! Partial annotations (Open Images): each label is positive, negative or
//! unknown. Unknown labels are treated as negatives with a reduced weight,
//! the "ignore-or-down-weight untagged labels" scheme used for Open Images.

use super::error::{LossError, Result};
use super::validate::{check_two_dimensional, first_flagged};
use tch::{Kind, Tensor};

/// State value of a positive label.
pub const POSITIVE: i64 = 1;
/// State value of a negative label.
pub const NEGATIVE: i64 = 0;
/// State value of an unknown (untagged) label.
pub const UNKNOWN: i64 = -1;

/// Targets and per-element weights derived from a label-state tensor.
#[derive(Debug)]
pub struct PartialLabels {
    /// `[B, K]` f32: 1 for positives, 0 for negatives and unknowns.
    pub targets: Tensor,
    /// `[B, K]` f32: 1 for known labels, `unknown_weight` for unknown ones.
    pub weights: Tensor,
    /// `[B, K]` bool: `true` where the label is known.
    pub known: Tensor,
}

impl PartialLabels {
    /// Splits `states` `[B, K]` (values 1, 0, -1 in any dtype) into targets
    /// and weights. `unknown_weight` in [0, 1]; 0 ignores unknown labels.
    pub fn from_states(states: &Tensor, unknown_weight: f64) -> Result<Self> {
        check_two_dimensional(states)?;
        if !(0.0..=1.0).contains(&unknown_weight) {
            return Err(LossError::InvalidParameter {
                name: "unknown_weight",
                value: unknown_weight,
                reason: "must lie in [0, 1]",
            });
        }
        let valid = states.f_eq(POSITIVE as f64)?.f_logical_or(&states.f_eq(UNKNOWN as f64)?)?;
        let invalid = valid.f_logical_or(&states.f_eq(NEGATIVE as f64)?)?.f_logical_not()?;
        if bool::try_from(invalid.f_any()?)? {
            let (row, col, value) = first_flagged(&invalid, states)?;
            return Err(LossError::InvalidLabelState { value, row, col });
        }
        Self::from_states_unchecked(states, unknown_weight)
    }

    /// As [`from_states`](Self::from_states) without checking the states
    /// or the weight: for the trainer, whose targets the loader wrote.
    pub fn from_states_unchecked(states: &Tensor, unknown_weight: f64) -> Result<Self> {
        let positive = states.f_eq(POSITIVE as f64)?;
        let unknown = states.f_eq(UNKNOWN as f64)?;
        let known = unknown.f_logical_not()?;
        let weights = known.f_to_kind(Kind::Float)?.f_mul_scalar(1.0 - unknown_weight)?.f_add_scalar(unknown_weight)?;
        Ok(Self { targets: positive.f_to_kind(Kind::Float)?, weights, known })
    }
}
