//! Training: our own optimizer with checkpointable state, the one-cycle
//! schedule, and the trainer loop.

mod optimizer;

pub use optimizer::{clip_grad_norm, Adam, OptimizerConfig, OptimizerError, OptimizerKind, StepHyper};
