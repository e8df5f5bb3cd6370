use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Loss(#[from] crate::loss::LossError),
    #[error(transparent)]
    Evaluate(#[from] crate::evaluate::EvaluateError),
    #[error(transparent)]
    Optimizer(#[from] super::OptimizerError),
    #[error(transparent)]
    Checkpoint(#[from] super::checkpoint::CheckpointError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(
        "the loss became {value} at epoch {epoch}, batch {batch} (optimizer step {step}); training stopped. {kept}"
    )]
    NonFiniteLoss { value: String, epoch: usize, batch: usize, step: usize, kept: String },
    #[error("out of GPU memory at epoch {epoch}, batch {batch}: try a smaller data.batch_size (now {batch_size}) or train.grad_accumulation to keep the effective batch. ({message})")]
    OutOfMemory { epoch: usize, batch: usize, batch_size: usize, message: String },
    #[error("single-label training needs exactly one positive per image; {path} has {count}")]
    NotSingleLabel { path: PathBuf, count: usize },
    #[error("{} already holds checkpoints; continue it with --resume {} or pick another --set name=...", .0.display(), .0.display())]
    RunExists(PathBuf),
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
