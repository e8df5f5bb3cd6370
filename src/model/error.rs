use std::path::PathBuf;
use tch::TchError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {0} does not exist; export one with `python models/export.py --model tresnet_m --num-classes K --out FILE`")]
    Missing(PathBuf),
    #[error(
        "{path} is not a TorchScript module (expected a file written by torch.jit.save or models/export.py): {source}"
    )]
    NotTorchScript { path: PathBuf, source: TchError },
    #[error("model card {path} is invalid: {message}")]
    BadCard { path: PathBuf, message: String },
    #[error("classifier parameter `{name}` not found in {path}; its parameters are named like {examples:?}")]
    ClassifierNotFound { name: String, path: PathBuf, examples: Vec<String> },
    #[error("cannot tell which parameters are the classifier of {0}: no model card beside it names them")]
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
    #[error(transparent)]
    Torch(#[from] TchError),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
