//! Exponential moving average of a whole network, buffers included
//! (reference: `ModelEma(model, 0.9997)` updated after every step).

use super::error::{ModelError, Result};
use super::network::Network;
use std::path::Path;
use tch::Tensor;

pub struct ModelEma {
    network: Network,
    decay: f64,
    /// The EMA module's state, fetched once: the tensors share storage with it.
    state: Vec<(String, Tensor)>,
}

impl ModelEma {
    /// Starts the average at a copy of `model`, in eval mode.
    pub fn new(model: &Network, decay: f64) -> Result<Self> {
        Self::from_network(model.duplicate()?, decay)
    }

    /// Continues an average saved earlier (a checkpoint's EMA file).
    pub fn from_network(mut network: Network, decay: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&decay) {
            return Err(ModelError::BadDecay(decay));
        }
        network.set_train(false)?;
        let state = network.named_tensors()?;
        Ok(Self { network, decay, state })
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Mutable access for evaluation (switching its mode).
    pub fn network_mut(&mut self) -> &mut Network {
        &mut self.network
    }

    /// `ema = decay · ema + (1 - decay) · model` for every floating-point
    /// tensor; integer state (BatchNorm's batch counter) is copied.
    pub fn update(&mut self, model: &Network) -> Result<()> {
        let source = model.named_tensors()?;
        if source.len() != self.state.len() {
            return Err(tch::TchError::Shape(format!(
                "EMA holds {} tensors but the model has {}",
                self.state.len(),
                source.len()
            ))
            .into());
        }
        tch::no_grad(|| -> Result<()> {
            for ((_, ema), (_, current)) in self.state.iter_mut().zip(&source) {
                if ema.is_floating_point() {
                    let _ = ema.f_lerp_(current, 1.0 - self.decay)?;
                } else {
                    ema.f_copy_(current)?;
                }
            }
            Ok(())
        })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        self.network.save(path)
    }
}
