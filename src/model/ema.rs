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
    /// tensor, in one multi-tensor pass; integer state (BatchNorm's batch
    /// counter) is copied. With `skipped` (a device flag, 1 when the grad
    /// scaler skipped the step) the average stays put, with nothing read
    /// back to the host.
    pub fn update(&mut self, model: &Network, skipped: Option<&tch::Tensor>) -> Result<()> {
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
            let (mut averaged, mut followed) = (Vec::new(), Vec::new());
            for ((_, ema), (_, current)) in self.state.iter_mut().zip(&source) {
                if ema.is_floating_point() {
                    averaged.push((ema.shallow_clone(), current.shallow_clone()));
                } else {
                    ema.f_copy_(current)?;
                }
            }
            followed.extend(averaged.iter().map(|(_, current)| current.shallow_clone()));
            let emas: Vec<tch::Tensor> = averaged.into_iter().map(|(ema, _)| ema).collect();
            match skipped {
                None => crate::ops::foreach_lerp(&emas, &followed, 1.0 - self.decay)?,
                Some(flag) => {
                    let weight = flag.f_neg()?.f_add_scalar(1.0)?.f_mul_scalar(1.0 - self.decay)?;
                    crate::ops::foreach_lerp_tensor(&emas, &followed, &weight)?
                }
            }
            Ok(())
        })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        self.network.save(path)
    }
}
