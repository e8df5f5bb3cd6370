//! Continuing a run from a checkpoint directory.

use super::amp::GradScaler;
use super::checkpoint::{read_checkpoint, TrainState, EMA_FILE, OPTIMIZER_FILE};
use super::config::TrainConfig;
use super::error::Result;
use super::Adam;
use crate::model::{ModelEma, Network};
use std::path::Path;

/// The EMA and state of the checkpoint in `dir`; the optimizer moments and
/// the grad scaler are restored in place.
pub(super) fn restore(
    dir: &Path,
    network: &Network,
    config: &TrainConfig,
    optimizer: &mut Adam,
    scaler: Option<&mut GradScaler>,
) -> Result<(ModelEma, TrainState)> {
    let state = read_checkpoint(dir)?.0;
    optimizer.load(&dir.join(OPTIMIZER_FILE), network.device())?;
    let ema = ModelEma::from_network(Network::load(&dir.join(EMA_FILE), network.device())?, config.train.ema_decay)?;
    if let (Some(scaler), Some(saved)) = (scaler, state.grad_scaler) {
        scaler.restore(saved)?;
    }
    Ok((ema, state))
}
