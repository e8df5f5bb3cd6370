//! Dynamic loss scaling for fp16 training, built on libtorch's own amp ops
//! (`_amp_foreach_non_finite_check_and_unscale_` through the native layer,
//! `_amp_update_scale_`), since tch has no GradScaler. Same defaults as
//! `torch.cuda.amp.GradScaler`. The overflow flag stays on the device: the
//! fused optimizer step reads it there.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// What a checkpoint keeps of the scaler.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "SavedScaler")]
pub struct GradScalerState {
    /// The factor the loss is multiplied by.
    pub scale: f64,
    /// Clean steps since the scale last changed.
    pub growth_tracker: i64,
}

/// Checkpoints before the state was named stored it as `[scale, tracker]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum SavedScaler {
    Named { scale: f64, growth_tracker: i64 },
    Pair(f64, i64),
}

impl From<SavedScaler> for GradScalerState {
    fn from(saved: SavedScaler) -> Self {
        let (scale, growth_tracker) = match saved {
            SavedScaler::Named { scale, growth_tracker } | SavedScaler::Pair(scale, growth_tracker) => {
                (scale, growth_tracker)
            }
        };
        Self { scale, growth_tracker }
    }
}

pub struct GradScaler {
    scale: Tensor,
    /// 1/scale, kept beside it for the multi-tensor unscale.
    inverse: Tensor,
    /// 1, for checking gradients without unscaling them.
    one: Tensor,
    growth_tracker: Tensor,
    found_inf: Tensor,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: i64,
}

impl GradScaler {
    pub fn new(device: Device) -> Result<Self, tch::TchError> {
        Ok(Self {
            scale: Tensor::f_full([1], 65536.0, (Kind::Float, device))?,
            inverse: Tensor::f_full([1], 1.0 / 65536.0, (Kind::Float, device))?,
            one: Tensor::f_ones([1], (Kind::Float, device))?,
            growth_tracker: Tensor::f_zeros([1], (Kind::Int, device))?,
            found_inf: Tensor::f_zeros([1], (Kind::Float, device))?,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        })
    }

    /// The scale, read from the device (for logs).
    pub fn scale_value(&self) -> f64 {
        self.scale.double_value(&[0])
    }

    /// The scale the gradients carry, on the device.
    pub fn scale_tensor(&self) -> &Tensor {
        &self.scale
    }

    /// 1 when the last check found an inf or NaN, else 0, on the device.
    pub fn found_inf(&self) -> &Tensor {
        &self.found_inf
    }

    /// `loss × scale`, to be back-propagated instead of `loss`.
    pub fn scale(&self, loss: &Tensor) -> Result<Tensor, tch::TchError> {
        loss.f_mul(&self.scale.f_to_kind(loss.kind())?)
    }

    /// Divides the gradients by the scale in place and records in
    /// [`found_inf`](Self::found_inf) whether any is inf or NaN (the step must
    /// then be skipped). One multi-tensor pass; nothing is read back.
    pub fn unscale(&mut self, gradients: &[Tensor]) -> Result<(), tch::TchError> {
        let _ = self.found_inf.f_zero_()?;
        self.inverse.f_copy_(&self.scale.f_reciprocal()?)?;
        crate::ops::amp_unscale(gradients, &self.found_inf, &self.inverse)
    }

    /// Records whether any gradient is inf or NaN, leaving them scaled (the
    /// fused optimizer divides by the scale itself).
    pub fn check(&mut self, gradients: &[Tensor]) -> Result<(), tch::TchError> {
        let _ = self.found_inf.f_zero_()?;
        crate::ops::amp_unscale(gradients, &self.found_inf, &self.one)
    }

    /// Halves the scale after an overflow; doubles it after
    /// `growth_interval` clean steps.
    pub fn update(&mut self) -> Result<(), tch::TchError> {
        let _ = self.scale.f_internal_amp_update_scale_(
            &self.growth_tracker,
            &self.found_inf,
            self.growth_factor,
            self.backoff_factor,
            self.growth_interval,
        )?;
        Ok(())
    }

    /// What a checkpoint keeps.
    pub fn state(&self) -> GradScalerState {
        GradScalerState { scale: self.scale.double_value(&[0]), growth_tracker: self.growth_tracker.int64_value(&[0]) }
    }

    pub fn restore(&mut self, state: GradScalerState) -> Result<(), tch::TchError> {
        let _ = self.scale.f_fill_(state.scale)?;
        let _ = self.growth_tracker.f_fill_(state.growth_tracker)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unscales_detects_overflow_and_backs_off() {
        let mut scaler = GradScaler::new(Device::Cpu).unwrap();
        let grads = [Tensor::from_slice(&[65536.0f32, 131072.0])];
        scaler.check(&grads).unwrap();
        assert_eq!(Vec::<f32>::try_from(&grads[0]).unwrap(), vec![65536.0, 131072.0], "check leaves them scaled");
        scaler.unscale(&grads).unwrap();
        assert_eq!(Vec::<f32>::try_from(&grads[0]).unwrap(), vec![1.0, 2.0]);
        assert_eq!(scaler.found_inf().double_value(&[0]), 0.0);
        scaler.update().unwrap();
        assert_eq!(scaler.scale_value(), 65536.0);
        let bad = [Tensor::from_slice(&[f32::INFINITY, 1.0])];
        scaler.check(&bad).unwrap();
        assert_eq!(scaler.found_inf().double_value(&[0]), 1.0);
        scaler.update().unwrap();
        assert_eq!(scaler.scale_value(), 32768.0);
    }

    #[test]
    fn state_round_trips_and_old_pairs_still_load() {
        let state = GradScalerState { scale: 1024.0, growth_tracker: 7 };
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(json, r#"{"scale":1024.0,"growth_tracker":7}"#);
        assert_eq!(serde_json::from_str::<GradScalerState>(&json).unwrap(), state);
        assert_eq!(serde_json::from_str::<GradScalerState>("[1024.0, 7]").unwrap(), state);
        let mut scaler = GradScaler::new(Device::Cpu).unwrap();
        scaler.restore(state).unwrap();
        assert_eq!(scaler.state(), state);
    }
}
