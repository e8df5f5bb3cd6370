//! TorchScript networks trained from Rust, and their EMA copy.

mod autocast;
mod card;
mod ema;
mod error;
mod network;

pub use autocast::with_cuda_autocast;
pub use card::{card_path, ModelCard};
pub use ema::ModelEma;
pub use error::{ModelError, Result};
pub use network::{NamedParameter, Network, ParamGroup};
