//! File → RGB8, whatever the source: greyscale, CMYK, 16-bit and alpha
//! images are all converted (alpha is dropped, as PIL's `convert('RGB')`).

use crate::data::error::{DataError, Result};
use image::{ImageReader, RgbImage};
use std::path::Path;

pub fn decode_rgb(path: &Path) -> Result<RgbImage> {
    let decode_error = |message: String| DataError::Decode { path: path.to_path_buf(), message };
    let reader = ImageReader::open(path)
        .map_err(|e| decode_error(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| decode_error(e.to_string()))?;
    let mut decoder_limits = image::Limits::default();
    // A 1 GiB cap keeps a corrupt header from asking for absurd allocations.
    decoder_limits.max_alloc = Some(1 << 30);
    let mut reader = reader;
    reader.limits(decoder_limits);
    let image = reader.decode().map_err(|e| decode_error(e.to_string()))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(decode_error("image has zero width or height".into()));
    }
    Ok(image.into_rgb8())
}
