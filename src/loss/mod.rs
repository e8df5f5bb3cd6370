//! The Asymmetric Loss family and the probability analysis around it.

mod adaptive;
mod asymmetric;
mod config;
mod error;
mod objective;
mod partial;
mod single_label;
mod stats;
mod validate;

pub use adaptive::{AdaptiveAsymmetry, AdaptiveAsymmetryConfig};
pub use asymmetric::{AsymmetricLoss, AsymmetricLossConfig, Reduction};
pub use config::{AsymmetricSection, LossConfig};
pub use error::{LossError, Result};
pub use objective::{batch_sums, Objective};
pub use partial::{PartialLabels, NEGATIVE, POSITIVE, UNKNOWN};
pub use single_label::{AsymmetricLossSingleLabel, SingleLabelConfig};
pub use stats::ProbabilityStats;
