//! TorchScript networks trained from Rust, and their EMA copy.

mod card;
mod config;
mod device;
mod ema;
mod error;
mod export;
mod network;
mod weights;

pub use card::{card_path, HeadLayout, ModelCard, WeightsOrigin};
pub use config::{HeadKind, ModelConfig, ResetHead};
pub use device::resolve_device;
pub use ema::ModelEma;
pub use error::{ModelError, Result};
pub use export::{export_script, export_timm, python, ExportWatch, TimmExport};
pub use network::{NamedParameter, Network, ParamGroup};
pub use weights::Weights;

/// The network's file inside a training checkpoint directory.
pub const MODEL_FILE: &str = "model.pt";
/// Its EMA's file there.
pub const EMA_FILE: &str = "ema.pt";
