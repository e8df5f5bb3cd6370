//! The data path: sources → samples → transforms → batches on the device.

mod batch;
mod config;
mod dataset;
mod error;
mod folds;
pub mod labels;
mod loader;
mod normalize;
mod overrides;
pub mod pack;
mod rng;
pub mod sources;
mod split;
pub mod stream;
pub mod transform;

pub use batch::{Batch, Skipped};
pub use config::{DataConfig, SourceKind, Split, UnknownInValidation};
pub use dataset::{Dataset, Sample, UNKNOWN};
pub use error::{DataError, Result};
pub use folds::{FoldConfig, FoldPart};
pub use labels::{LabelState, Labels, Unlisted};
pub(crate) use loader::panic_message;
pub use loader::{EpochIter, Loader, LoaderConfig, Shard};
pub use normalize::Normalization;
pub use overrides::LabelOverrides;
pub use rng::{sample_rng, Stream};
pub use split::{SplitData, SplitFingerprint};
