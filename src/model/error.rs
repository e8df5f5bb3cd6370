use std::path::PathBuf;
use tch::TchError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "model file {0} does not exist; export one with `asl export --model tresnet_m --num-classes K --out FILE`"
    )]
    Missing(PathBuf),
    #[error(
        "{path} is not a TorchScript module (expected a file written by torch.jit.save or models/export.py): {source}"
    )]
    NotTorchScript { path: PathBuf, source: TchError },
    #[error("model card {path} is invalid: {message}")]
    BadCard { path: PathBuf, message: String },
    #[error(
        "{model} has no model card {card} beside it, which says which parameters are the head and how inputs \
         are scaled; export with `asl export --model NAME --num-classes K --out {model}` (add \
         --weights FILE for your own weights), or write the card by hand (see models/README.md)"
    )]
    NoCard { model: PathBuf, card: PathBuf },
    #[error(
        "the model card of {0} records no input mean and std: set model.input_mean and model.input_std (e.g. \
         [0, 0, 0] and [1, 1, 1] for inputs in [0, 1]) when training, add \"mean\" and \"std\" to the card \
         (models/README.md), or export again with models/export.py"
    )]
    NoNormalization(PathBuf),
    #[error("classifier parameter `{name}` not found in {path}; its parameters are named like {examples:?}")]
    ClassifierNotFound { name: String, path: PathBuf, examples: Vec<String> },
    #[error("cannot tell which parameters are the classifier of {0}: its model card names none")]
    NoClassifier(PathBuf),
    #[error("{model} cannot take {size}×{size} inputs: {reason}")]
    BadInputSize { model: String, size: i64, reason: String },
    #[error("EMA decay must lie in [0, 1], got {0}")]
    BadDecay(f64),
    #[error("the number of classes must be at least 1, got {0}")]
    BadClassCount(i64),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot use device `{name}`: {message}")]
    Device { name: String, message: String },
    #[error("cannot export {model} with models/export.py: {message}")]
    Export { model: String, message: String },
    #[error("the export of {model} was stopped on request; it left no partial file")]
    Stopped { model: String },
    #[error(transparent)]
    Torch(#[from] TchError),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
