//! The last stage of the input path: per-channel `(x - mean) / std` on the
//! device, as torchvision's `Normalize` after `ToTensor`, with the mean and
//! std the network was pretrained with (its model card).

use super::error::Result;
use tch::{Device, Tensor};

/// Held on the device, so that normalising a batch copies nothing from the host.
#[derive(Debug)]
pub struct Normalization {
    /// `[1, 3, 1, 1]` mean and std; `None` for mean 0 and std 1, which
    /// leave [0, 1] inputs as they are and cost no pass.
    mean_std: Option<(Tensor, Tensor)>,
}

impl Normalization {
    /// Inputs stay in [0, 1].
    pub fn none() -> Self {
        Self { mean_std: None }
    }

    pub fn new(mean: [f64; 3], std: [f64; 3], device: Device) -> Result<Self> {
        if mean == [0.0; 3] && std == [1.0; 3] {
            return Ok(Self::none());
        }
        let channel = |values: [f64; 3]| -> Result<Tensor> {
            let values = values.map(|v| v as f32);
            Ok(Tensor::f_from_slice(&values)?.f_view([1, 3, 1, 1])?.f_to_device(device)?)
        };
        Ok(Self { mean_std: Some((channel(mean)?, channel(std)?)) })
    }

    /// `[N, 3, H, W]` float images in [0, 1], normalised.
    pub fn apply(&self, images: Tensor) -> Result<Tensor> {
        match &self.mean_std {
            None => Ok(images),
            Some((mean, std)) => Ok(images.f_sub(mean)?.f_div(std)?),
        }
    }
}

impl Default for Normalization {
    fn default() -> Self {
        Self::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn normalises_each_channel_as_torchvision_does() {
        let images = Tensor::from_slice(&[0.0f32, 1.0, 0.5, 0.25, 1.0, 0.0]).view([1, 3, 1, 2]);
        let normalised = Normalization::new([0.5, 0.25, 0.0], [0.5, 0.25, 2.0], Device::Cpu)
            .unwrap()
            .apply(images.shallow_clone())
            .unwrap();
        // By hand: (x - mean) / std per channel.
        let expected = [-1.0f32, 1.0, 1.0, 0.0, 0.5, 0.0];
        assert_eq!(Vec::<f32>::try_from(normalised.view([-1])).unwrap(), expected);
        let unchanged = Normalization::new([0.0; 3], [1.0; 3], Device::Cpu).unwrap().apply(images.shallow_clone());
        assert!(unchanged.unwrap().equal(&images));
        assert_eq!(normalised.kind(), Kind::Float);
    }
}
