//! Decodes each JPEG and PNG named on the command line with the upstream
//! crates (zune-jpeg 0.5.15, png 0.18.1) and with our patched copies
//! (memory reused from image to image, metadata skipped), twice over in
//! opposite orders so that every image also meets buffers warmed by larger
//! and differently laid out ones. Reports each file whose bytes differ and
//! exits non-zero if any does.

use std::io::Cursor;

fn upstream_jpeg(bytes: &[u8]) -> Result<Vec<u8>, String> {
    use upstream_jpeg::zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    upstream_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options).decode().map_err(|e| e.to_string())
}

fn patched_jpeg(bytes: &[u8], buffers: &mut patched_jpeg::DecoderBuffers) -> Result<Vec<u8>, String> {
    use patched_jpeg::zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder =
        patched_jpeg::JpegDecoder::new_with_buffers(ZCursor::new(bytes), options, std::mem::take(buffers));
    decoder.set_skip_metadata(true);
    let decoded = decoder.decode().map_err(|e| e.to_string());
    *buffers = decoder.into_buffers();
    decoded
}

fn upstream_png(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut decoder = upstream_png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(upstream_png::Transformations::EXPAND | upstream_png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let mut out = vec![0; reader.output_buffer_size().ok_or("too large")?];
    reader.next_frame(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn patched_png(bytes: &[u8], buffers: &mut patched_png::DecoderBuffers) -> Result<Vec<u8>, String> {
    let mut options = patched_png::DecodeOptions::default();
    options.set_skip_metadata(true);
    let mut decoder = patched_png::Decoder::new_with_buffers(Cursor::new(bytes), options, std::mem::take(buffers));
    decoder.set_transformations(patched_png::Transformations::EXPAND | patched_png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let mut out = vec![0; reader.output_buffer_size().ok_or("too large")?];
    let decoded = reader.next_frame(&mut out).map(|_| out).map_err(|e| e.to_string());
    *buffers = reader.into_buffers();
    decoded
}

fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    let (mut jpeg_buffers, mut png_buffers) = Default::default();
    let (mut identical, mut different) = (0, 0);
    for file in files.iter().chain(files.iter().rev()) {
        let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let (upstream, patched) = if bytes.starts_with(&[0xFF, 0xD8]) {
            (upstream_jpeg(&bytes), patched_jpeg(&bytes, &mut jpeg_buffers))
        } else {
            (upstream_png(&bytes), patched_png(&bytes, &mut png_buffers))
        };
        match (upstream, patched) {
            (Ok(a), Ok(b)) if a == b => identical += 1,
            (Err(a), Err(b)) if a == b => identical += 1,
            (a, b) => {
                different += 1;
                let describe = |r: Result<Vec<u8>, String>| r.map(|v| format!("{} bytes", v.len())).unwrap_or_else(|e| e);
                println!("{file}: upstream {}, patched {}", describe(a), describe(b));
            }
        }
    }
    println!("{identical} decodes identical, {different} different");
    std::process::exit(i32::from(different > 0));
}
