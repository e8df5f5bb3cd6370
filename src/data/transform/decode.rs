//! File → RGB8, whatever the source: greyscale, palette, CMYK, 16-bit and
//! alpha images are all converted (alpha is dropped, as PIL's
//! `convert('RGB')` does).
//!
//! JPEGs (nearly all of COCO) go to zune-jpeg and PNGs to png, the
//! decoders `image` itself uses, each straight into a caller-owned pixel
//! buffer; files are read into another. Both buffers are reused from image
//! to image. The decoders' own working memory (about 33 KiB per JPEG) is
//! short-lived and left to the allocator.

use crate::data::error::{DataError, Result};
use image::RgbImage;
use std::io::{Cursor, Read};
use std::path::Path;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1A, b'\n'];

/// Larger decoded images are refused, so that a corrupt header cannot ask
/// for an absurd allocation.
pub const MAX_DECODED_BYTES: usize = 1 << 30;

/// Reusable file and pixel buffers; keep one per worker thread.
#[derive(Default)]
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
    let (width, height) =
        decode_rgb_bytes(&buffers.file, &mut buffers.pixels, MAX_DECODED_BYTES).map_err(decode_error)?;
    let len = width as usize * height as usize * 3;
    Ok(RgbView { width, height, pixels: &buffers.pixels[..len] })
}

/// Decodes an image already in memory (a tar member) into `buffers`.
pub fn decode_rgb_from<'a>(bytes: &[u8], buffers: &'a mut DecodeBuffers) -> Result<RgbView<'a>, String> {
    let (width, height) = decode_rgb_bytes(bytes, &mut buffers.pixels, MAX_DECODED_BYTES)?;
    let len = width as usize * height as usize * 3;
    Ok(RgbView { width, height, pixels: &buffers.pixels[..len] })
}

/// Decodes a JPEG, PNG or WebP file's `bytes` into `pixels` (RGB, row-major, at
/// the front of the buffer) and returns the width and height. Images that
/// would decode to more than `max_bytes` are refused before anything is
/// allocated for them.
pub fn decode_rgb_bytes(bytes: &[u8], pixels: &mut Vec<u8>, max_bytes: usize) -> Result<(u32, u32), String> {
    let (width, height) = if bytes.starts_with(&[0xFF, 0xD8]) {
        decode_jpeg(bytes, pixels, max_bytes)
    } else if bytes.starts_with(&PNG_SIGNATURE) {
        decode_png(bytes, pixels, max_bytes)
    } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        decode_webp(bytes, pixels, max_bytes)
    } else {
        Err("neither a JPEG, a PNG nor a WebP file (the formats the loader reads)".to_string())
    }?;
    if width == 0 || height == 0 {
        return Err("image has zero width or height".into());
    }
    Ok((width, height))
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

fn decode_jpeg(bytes: &[u8], pixels: &mut Vec<u8>, max_bytes: usize) -> Result<(u32, u32), String> {
    // Any size a JPEG header can state; `check_decoded_size` is the one limit, as for PNG.
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(|e| e.to_string())?;
    let (width, height) = decoder.dimensions().ok_or("no JPEG header")?;
    let (width, height) = (u32::try_from(width).unwrap_or(u32::MAX), u32::try_from(height).unwrap_or(u32::MAX));
    let size = decoder.output_buffer_size().ok_or("no JPEG header")?;
    check_decoded_size(width, height, size, max_bytes, "JPEG")?;
    pixels.resize(size, 0);
    decoder.decode_into(&mut pixels[..size]).map_err(|e| e.to_string())?;
    Ok((width, height))
}

/// WebP through `image` (rare in COCO-style data, common in web-scale shards).
fn decode_webp(bytes: &[u8], pixels: &mut Vec<u8>, max_bytes: usize) -> Result<(u32, u32), String> {
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), image::ImageFormat::WebP);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_bytes as u64);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| e.to_string())?.into_rgb8();
    let (width, height) = image.dimensions();
    pixels.clear();
    pixels.extend_from_slice(image.as_raw());
    Ok((width, height))
}

fn decode_png(bytes: &[u8], pixels: &mut Vec<u8>, max_bytes: usize) -> Result<(u32, u32), String> {
    let mut options = png::DecodeOptions::default();
    // Text and ICC chunks do not change the pixels (PIL's `convert('RGB')`
    // ignores them too), so they are not copied out.
    options.set_ignore_text_chunk(true);
    options.set_ignore_iccp_chunk(true);
    let mut decoder = png::Decoder::new_with_options(Cursor::new(bytes), options);
    // Palettes and low bit depths become 8-bit samples, 16-bit samples keep
    // their high byte, as PIL reads them.
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let (width, height) = reader.info().size();
    let decoded_len = reader.output_buffer_size().ok_or("PNG dimensions overflow")?;
    let count = width as usize * height as usize;
    let len = decoded_len.max(count * 3);
    check_decoded_size(width, height, len, max_bytes, "PNG")?;
    pixels.resize(len, 0);
    let frame = reader.next_frame(&mut pixels[..decoded_len]).map_err(|e| e.to_string())?;
    expand_to_rgb(pixels, frame.color_type, count);
    Ok((width, height))
}

/// Refuses a header whose image would need more than `max_bytes`, before
/// anything is allocated for it.
fn check_decoded_size(width: u32, height: u32, bytes: usize, max_bytes: usize, format: &str) -> Result<(), String> {
    if bytes > max_bytes {
        return Err(format!("{width}×{height} {format} is larger than the {max_bytes}-byte limit"));
    }
    Ok(())
}

/// Rewrites the first `count` pixels of `pixels`, stored as `color` with
/// 8-bit samples, as RGB in place (the buffer holds at least `3 × count`).
/// Grey widens, so it runs backwards; RGBA narrows, so it runs forwards.
fn expand_to_rgb(pixels: &mut [u8], color: png::ColorType, count: usize) {
    use png::ColorType::*;
    match color {
        // EXPAND has already turned palettes into RGB or RGBA.
        Rgb | Indexed => {}
        Rgba => (0..count).for_each(|i| pixels.copy_within(4 * i..4 * i + 3, 3 * i)),
        Grayscale => (0..count).rev().for_each(|i| {
            let grey = pixels[i];
            pixels[3 * i..3 * i + 3].fill(grey);
        }),
        GrayscaleAlpha => (0..count).rev().for_each(|i| {
            let grey = pixels[2 * i];
            pixels[3 * i..3 * i + 3].fill(grey);
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossless_webp_decodes_to_its_pixels() {
        let image = image::RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 40, y as u8 * 70, 200]));
        let mut bytes = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut bytes)
            .encode(image.as_raw(), 5, 3, image::ExtendedColorType::Rgb8)
            .unwrap();
        let mut pixels = Vec::new();
        assert_eq!(decode_rgb_bytes(&bytes, &mut pixels, MAX_DECODED_BYTES).unwrap(), (5, 3));
        assert_eq!(&pixels[..], image.as_raw().as_slice());
        assert!(decode_rgb_bytes(&bytes, &mut pixels, 10).is_err(), "the size limit is not applied to WebP");
    }

    /// A real 8×8 JPEG whose frame header is rewritten to claim `width × height`.
    fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
        let mut bytes = Vec::new();
        let image = image::RgbImage::from_pixel(8, 8, image::Rgb([10, 20, 30]));
        image.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Jpeg).unwrap();
        let frame = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline frame header");
        bytes[frame + 5..frame + 7].copy_from_slice(&height.to_be_bytes());
        bytes[frame + 7..frame + 9].copy_from_slice(&width.to_be_bytes());
        bytes
    }

    #[test]
    fn a_jpeg_header_claiming_a_huge_image_is_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.jpg");
        std::fs::write(&path, jpeg_claiming(20_000, 20_000)).unwrap();
        let mut buffers = DecodeBuffers::default();
        let err = decode_rgb_into(&path, &mut buffers).unwrap_err().to_string();
        assert!(
            err.contains("huge.jpg") && err.contains("20000×20000 JPEG is larger than the 1073741824-byte limit"),
            "{err}"
        );
        assert!(buffers.pixels.capacity() < 1 << 20, "nothing was allocated for it");
    }
}
