//! `asl audit`: which training labels are likely missing or wrong. The
//! training split is cut into K folds; each fold's model trains on the
//! other K − 1 through the normal trainer and predicts the held-out one, so
//! that every training image gets an out-of-sample probability for every
//! class. Each label is then judged against its own class's probabilities
//! (`score.rs`), and the audit writes the probabilities, the ranked
//! suspects, an offline HTML contact sheet and a recipe that trains on the
//! same data with the suspects marked unknown.

mod outputs;
mod predict;
mod run;
pub mod score;

pub use outputs::{read_npy_f32, write_npy_f32};
pub use predict::{predict, ImagePrediction, Kept, DENSE_LIMIT_BYTES, SPARSE_TOP_K};
pub use run::{audit, AuditOptions, AuditOutcome, AuditSummary, OUTPUTS};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Evaluate(#[from] crate::evaluate::EvaluateError),
    #[error(transparent)]
    Checkpoint(#[from] crate::train::checkpoint::CheckpointError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(
        "--folds {0}: an audit needs at least 2 folds, so that each image is predicted by a model that never saw it"
    )]
    Folds(usize),
    #[error("the training split holds {images} {what}, fewer than 2 × {folds} folds: use fewer folds or more data")]
    TooFew { images: usize, what: &'static str, folds: usize },
    #[error("the training split ({split}) has no positive label at all: there is nothing to audit")]
    NoLabels { split: String },
    #[error("{} holds another audit ({difference}); audit into another --out, or remove it", out.display())]
    OtherAudit { out: PathBuf, difference: String },
    #[error("{} is not empty and holds no audit (no audit.json); audit into an empty or new --out", out.display())]
    NotAnAudit { out: PathBuf },
    #[error("the fold's model gives {outputs} outputs for the data's {classes} classes")]
    Classes { outputs: usize, classes: usize },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {}: {message}", path.display())]
    Read { path: PathBuf, message: String },
    #[error("the audit report cannot be made: {0}")]
    Report(String),
}

pub type Result<T, E = AuditError> = std::result::Result<T, E>;
