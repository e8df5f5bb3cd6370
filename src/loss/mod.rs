//! The Asymmetric Loss family and the probability analysis around it.

mod adaptive;
mod asymmetric;
mod error;
mod partial;
mod single_label;
mod stats;
mod validate;

pub use adaptive::{AdaptiveAsymmetry, AdaptiveAsymmetryConfig};
pub use asymmetric::{AsymmetricLoss, AsymmetricLossConfig, Reduction};
pub use error::{LossError, Result};
pub use partial::{PartialLabels, NEGATIVE, POSITIVE, UNKNOWN};
pub use single_label::{AsymmetricLossSingleLabel, SingleLabelConfig};
pub use stats::ProbabilityStats;
