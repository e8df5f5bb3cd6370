//! Squish-resize to S×S (aspect ratio not kept, as the reference's
//! `transforms.Resize((S, S))`), bilinear with antialiasing like PIL,
//! written straight into the batch buffer.

use super::decode::RgbView;
use crate::data::error::{DataError, Result};
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use std::path::Path;

/// Resizes `source` into `destination` (`size × size × 3` bytes).
pub fn resize_into(
    source: RgbView,
    size: u32,
    destination: &mut [u8],
    resizer: &mut Resizer,
    path: &Path,
) -> Result<()> {
    let error = |message: String| DataError::Decode { path: path.to_path_buf(), message };
    if source.width == size && source.height == size {
        destination.copy_from_slice(source.pixels);
        return Ok(());
    }
    let src =
        ImageRef::new(source.width, source.height, source.pixels, PixelType::U8x3).map_err(|e| error(e.to_string()))?;
    let mut dst = Image::from_slice_u8(size, size, destination, PixelType::U8x3).map_err(|e| error(e.to_string()))?;
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    resizer.resize(&src, &mut dst, &options).map_err(|e| error(e.to_string()))
}
