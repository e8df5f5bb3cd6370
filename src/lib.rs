//! `asl`: multi-label image classification with the Asymmetric Loss
//! (Ben-Baruch, Ridnik et al., ICCV 2021) on libtorch through `tch`.
//!
//! The library knows nothing of the command line; `src/main.rs` is a thin
//! front end over it.

pub mod atomic;
pub mod audit;
pub mod config;
pub mod curves;
pub mod data;
pub mod distributed;
pub mod evaluate;
pub mod host_memory;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod monitor;
mod native;
pub mod ops;
pub mod report;
pub mod train;
