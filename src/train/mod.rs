//! Training: the run's config, our own optimizer with checkpointable
//! state, the one-cycle schedule, the grad scaler, checkpoints, the
//! builder from a config to a ready trainer, and the trainer loop, which
//! reports to observers.

mod agreement;
mod amp;
mod builder;
pub mod checkpoint;
mod checkpointing;
mod config;
mod data_parallel;
mod epoch_end;
mod error;
pub mod faults;
mod figures;
mod lock;
mod observer;
mod optimizer;
mod placement;
mod plan;
mod restore;
mod resumable;
mod schedule;
mod setup;
mod stepper;
mod trainer;
mod validation;

pub use amp::{GradScaler, GradScalerState};
pub use builder::{prepare, RunOptions};
pub use config::{LoopConfig, Switch, TrainConfig};
pub use data_parallel::BroadcastBytes;
pub use error::{Result, TrainError};
pub use faults::{FaultPlan, FaultPoint, SetupPhase};
pub use lock::{RunLock, LOCK_FILE};
pub use observer::{Observer, Phase, Scored, StepLog, TrainEvent};
pub use optimizer::{clip_grad_norm, Adam, OptimizerConfig, OptimizerError, OptimizerKind, ScaledStep, StepHyper};
pub use plan::{RunPlan, PLAN_FILE};
pub use schedule::{OneCycle, OneCycleConfig};
pub use trainer::{Outcome, Trainer, TrainerSetup};
