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
        "the loss became {value} by epoch {epoch}, batch {batch} (optimizer step {step}); training stopped. {kept}"
    )]
    NonFiniteLoss { value: String, epoch: usize, batch: usize, step: usize, kept: String },
    #[error("training diverged: the grad scaler skipped {skipped} optimizer steps in a row for non-finite gradients, up to epoch {epoch}, batch {batch} (optimizer step {step}); training stopped (train.max_skipped_steps). {kept}")]
    Diverged { skipped: usize, epoch: usize, batch: usize, step: usize, kept: String },
    #[error("out of GPU memory at epoch {epoch}, batch {batch}: try a smaller data.batch_size (now {batch_size}) or train.grad_accumulation to keep the effective batch. ({message})")]
    OutOfMemory { epoch: usize, batch: usize, batch_size: usize, message: String },
    #[error("single-label training needs exactly one positive per image; {path} has {count}")]
    NotSingleLabel { path: PathBuf, count: usize },
    #[error("{} already holds checkpoints; continue it with --resume {} (or this same command with --auto-resume), or pick another --set name=...", .0.display(), .0.display())]
    RunExists(PathBuf),
    #[error("run {} is in use by process {pid}: two trainers must not write one run's checkpoints (lock file {}/lock)", run.display(), run.display())]
    RunInUse { run: PathBuf, pid: String },
    #[error("cannot change {key} from {before} to {after} when resuming checkpoint {} in the middle of epoch {epoch} (after batch {batch}): the rest of the epoch would not line up with the batches already trained. Resume without the change, or make it from a checkpoint written at the end of an epoch", checkpoint.display())]
    MidEpochChange { key: &'static str, before: String, after: String, checkpoint: PathBuf, epoch: usize, batch: usize },
    #[error("the training data changed since checkpoint {} was written in the middle of epoch {epoch} (after batch {batch}): {change}. The rest of the epoch cannot be laid out as it was; resume with the data it was trained on, or from a checkpoint written at the end of an epoch", checkpoint.display())]
    DataChanged { checkpoint: PathBuf, epoch: usize, batch: usize, change: String },
    #[error("stopped on request during set-up ({during}); nothing was left half-written. Run the same command again to start")]
    Stopped { during: &'static str },
    #[error("set-up failed while {during}: {message}")]
    Setup { during: &'static str, message: String },
    #[error("every image of batch {batch} of epoch {epoch} on this rank was unreadable; a multi-process run cannot skip a whole batch on one rank (fix or remove the files named above)")]
    EmptyBatch { epoch: usize, batch: usize },
    #[error("the head of {model} does not fit the data ({reason}) and model.reset_head is never; set it to auto or always to train a fresh head")]
    HeadMismatch { model: String, reason: String },
    #[error(transparent)]
    Distributed(#[from] crate::distributed::DistError),
    #[error("the shard readers' positions could not be passed to rank 0 for the checkpoint: {0}")]
    StreamPosition(String),
    #[error("cannot take the run lock {path}: {source}")]
    Lock { path: PathBuf, source: std::io::Error },
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
