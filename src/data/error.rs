use std::path::PathBuf;

/// Everything a data source or the loader can reject. Each variant names
/// the file and, where there is one, the line, JSON path or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid annotation JSON at `{json_path}`: {message}")]
    Json { path: PathBuf, json_path: String, message: String },
    #[error("{path}: image {image} has an annotation with category id {id}, which is not in the category list")]
    UnknownCategory { path: PathBuf, image: String, id: i64 },
    #[error("{path}: an annotation refers to image id {id}, which is not in the image list")]
    UnknownImage { path: PathBuf, id: i64 },
    #[error("{path}: {message}")]
    Xml { path: PathBuf, message: String },
    #[error("{path}:{line}: {message}")]
    List { path: PathBuf, line: u64, message: String },
    #[error("cannot find {what} under {root}: looked for {tried}")]
    Layout { what: &'static str, root: PathBuf, tried: String },
    #[error("shard {path} (from {listed_by}) does not exist")]
    MissingShard { path: PathBuf, listed_by: String },
    #[error("{0} holds no images")]
    Empty(PathBuf),
    #[error("cannot decode image {path}: {message}")]
    Decode { path: PathBuf, message: String },
    #[error("the loader delivered {received} of {expected} batches of this epoch: {reason}")]
    LoaderStopped { received: usize, expected: usize, reason: String },
    #[error("invalid data option `{name}`: {message}")]
    Option { name: &'static str, message: String },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io { path: path.to_path_buf(), source }
}
