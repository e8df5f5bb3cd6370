//! Per-sample transforms on `image` buffers: decode, squish-resize,
//! Cutout, RandAugment and horizontal flip.

mod cutout;
mod decode;
mod randaugment;
mod resize;

pub use cutout::cutout;
pub use decode::{
    decode_rgb, decode_rgb_bytes, decode_rgb_from, decode_rgb_into, DecodeBuffers, RgbView, MAX_DECODED_BYTES,
};
pub use randaugment::{apply as apply_op, rand_augment, Op, RandAugmentConfig, OPS};
pub use resize::{resize_into, Resizer};

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Training augmentation, applied after the resize in the reference's order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Cutout: a rectangle of this fraction of the width and height, filled with a random colour (0.5 in
    /// the reference); null disables.
    pub cutout: Option<f64>,
    /// RandAugment after Cutout, as in the reference; null disables.
    pub randaugment: Option<RandAugmentConfig>,
    /// Mirror half of the images left to right.
    pub horizontal_flip: bool,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self { cutout: Some(0.5), randaugment: Some(RandAugmentConfig::default()), horizontal_flip: false }
    }
}

impl AugmentConfig {
    /// No augmentation: validation and inference.
    pub fn none() -> Self {
        Self { cutout: None, randaugment: None, horizontal_flip: false }
    }

    /// Augments a `size × size × 3` image in place.
    pub fn apply(&self, pixels: &mut [u8], size: usize, scratch: &mut Vec<u8>, rng: &mut impl Rng) {
        if let Some(factor) = self.cutout {
            cutout(pixels, size, factor, rng);
        }
        if let Some(config) = &self.randaugment {
            rand_augment(pixels, size, config, scratch, rng);
        }
        if self.horizontal_flip && rng.random::<bool>() {
            for row in pixels.chunks_exact_mut(size * 3) {
                for x in 0..size / 2 {
                    for c in 0..3 {
                        row.swap(x * 3 + c, (size - 1 - x) * 3 + c);
                    }
                }
            }
        }
    }
}
