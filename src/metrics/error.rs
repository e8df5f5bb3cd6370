use tch::TchError;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("scores have {scores} values and targets {targets}; both must hold rows × classes = {rows} × {classes}")]
    LengthMismatch { scores: usize, targets: usize, rows: usize, classes: usize },
    #[error("scores and targets must be 2-D [images, classes] of equal shape, got {scores:?} and {targets:?}")]
    ShapeMismatch { scores: Vec<i64>, targets: Vec<i64> },
    #[error("batch has {found} classes but earlier batches had {expected}")]
    ClassCountChanged { expected: usize, found: usize },
    #[error("score at [{row}, {col}] is {value}, not a finite number")]
    NonFiniteScore { value: f32, row: usize, col: usize },
    #[error("target at [{row}, {col}] is {value}; expected 1 (positive), 0 (negative) or -1 (unknown, ignored)")]
    InvalidTarget { value: f32, row: usize, col: usize },
    #[error("top-k needs k >= 1 and at most the {kept} best classes kept per image, got k = {k}")]
    InvalidTopK { k: usize, kept: usize },
    #[error("{0}")]
    Corrupt(String),
    #[error(transparent)]
    Torch(#[from] TchError),
}

pub type Result<T, E = MetricsError> = std::result::Result<T, E>;
