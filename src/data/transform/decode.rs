//! File → RGB8, whatever the source: greyscale, CMYK, 16-bit and alpha
//! images are all converted (alpha is dropped, as PIL's `convert('RGB')`).
//!
//! JPEGs (nearly all of COCO) are decoded by zune-jpeg straight into a
//! caller-owned buffer, and files are read into another, so once the
//! buffers have grown to the largest image a worker sees, decoding
//! allocates nothing. Other formats go through the `image` crate.

use crate::data::error::{DataError, Result};
use image::{ImageReader, RgbImage};
use std::io::Read;
use std::path::Path;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// Reusable decode buffers; keep one per worker thread.
#[derive(Debug, Default)]
pub struct DecodeBuffers {
    file: Vec<u8>,
    pixels: Vec<u8>,
}

/// A decoded RGB8 image borrowed from [`DecodeBuffers`].
#[derive(Debug, Clone, Copy)]
pub struct RgbView<'a> {
    pub width: u32,
    pub height: u32,
    /// `height × width × 3` bytes.
    pub pixels: &'a [u8],
}

/// Decodes `path` into `buffers` and returns a view of the RGB pixels.
pub fn decode_rgb_into<'a>(path: &Path, buffers: &'a mut DecodeBuffers) -> Result<RgbView<'a>> {
    let decode_error = |message: String| DataError::Decode { path: path.to_path_buf(), message };
    buffers.file.clear();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut buffers.file))
        .map_err(|e| decode_error(e.to_string()))?;
    let (width, height) = if buffers.file.starts_with(&[0xFF, 0xD8]) {
        decode_jpeg(&buffers.file, &mut buffers.pixels).map_err(decode_error)?
    } else {
        let image = decode_other(&buffers.file).map_err(decode_error)?;
        buffers.pixels.clear();
        buffers.pixels.extend_from_slice(image.as_raw());
        image.dimensions()
    };
    if width == 0 || height == 0 {
        return Err(decode_error("image has zero width or height".into()));
    }
    let len = width as usize * height as usize * 3;
    Ok(RgbView { width, height, pixels: &buffers.pixels[..len] })
}

/// Decodes `path` into a new image (convenience for one-off use).
pub fn decode_rgb(path: &Path) -> Result<RgbImage> {
    let mut buffers = DecodeBuffers::default();
    let view = decode_rgb_into(path, &mut buffers)?;
    let (width, height) = (view.width, view.height);
    let len = view.pixels.len();
    buffers.pixels.truncate(len);
    RgbImage::from_raw(width, height, buffers.pixels)
        .ok_or_else(|| DataError::Decode { path: path.to_path_buf(), message: "buffer size mismatch".into() })
}

fn decode_jpeg(bytes: &[u8], pixels: &mut Vec<u8>) -> Result<(u32, u32), String> {
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(|e| e.to_string())?;
    let info = decoder.info().ok_or("no JPEG header")?;
    let size = decoder.output_buffer_size().ok_or("no JPEG header")?;
    pixels.resize(size, 0);
    decoder.decode_into(&mut pixels[..size]).map_err(|e| e.to_string())?;
    Ok((u32::from(info.width), u32::from(info.height)))
}

fn decode_other(bytes: &[u8]) -> Result<RgbImage, String> {
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| e.to_string())?;
    let mut limits = image::Limits::default();
    // A 1 GiB cap keeps a corrupt header from asking for absurd allocations.
    limits.max_alloc = Some(1 << 30);
    reader.limits(limits);
    Ok(reader.decode().map_err(|e| e.to_string())?.into_rgb8())
}
