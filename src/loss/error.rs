use tch::TchError;

/// Everything the loss family can reject. Each variant names the shape,
/// position or value at fault so the caller can report it as is.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    #[error("logits must be 2-D [batch, classes], got shape {0:?}")]
    NotTwoDimensional(Vec<i64>),
    #[error("{what} has shape {found:?} but logits have shape {logits:?}")]
    ShapeMismatch { what: &'static str, found: Vec<i64>, logits: Vec<i64> },
    #[error("targets must be 0 or 1, found {value} at [{row}, {col}]")]
    NonBinaryTarget { value: f64, row: i64, col: i64 },
    #[error("target class {value} at row {row} is outside 0..{classes}")]
    ClassOutOfRange { value: i64, row: i64, classes: i64 },
    #[error("logit at [{row}, {col}] is {value}, not a finite number")]
    NonFiniteLogit { value: f64, row: i64, col: i64 },
    #[error("label state at [{row}, {col}] is {value}; expected 1 (positive), 0 (negative) or -1 (unknown)")]
    InvalidLabelState { value: f64, row: i64, col: i64 },
    #[error("invalid loss parameter `{name}` = {value}: {reason}")]
    InvalidParameter { name: &'static str, value: f64, reason: &'static str },
    #[error(transparent)]
    Torch(#[from] TchError),
}

pub type Result<T, E = LossError> = std::result::Result<T, E>;
