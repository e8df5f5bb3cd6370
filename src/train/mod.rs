//! Training: our own optimizer with checkpointable state, the one-cycle
//! schedule, the grad scaler, checkpoints, validation and the trainer loop.

mod amp;
pub mod checkpoint;
mod error;
mod evaluate;
mod objective;
mod optimizer;
mod schedule;
mod setup;
mod trainer;

pub use amp::GradScaler;
pub use error::{Result, TrainError};
pub use evaluate::{evaluate, Evaluation};
pub use objective::{batch_stats, Objective};
pub use optimizer::{clip_grad_norm, Adam, OptimizerConfig, OptimizerError, OptimizerKind, StepHyper};
pub use schedule::OneCycle;
pub use setup::{check_single_label, load_split, resolve_device, train_loader_config, val_loader_config, Split};
pub use trainer::{Outcome, Trainer, TrainerSetup};
