//! Small JPEG thumbnails as `data:` URIs, so that a report page carries its
//! images and asks the network for nothing.

use base64::Engine;
use std::path::Path;

/// The longest side of a thumbnail, in pixels.
pub const SIDE: u32 = 112;

/// The image a dataset names `image` (a file, or `<shard>/<key>`) as a
/// thumbnail `data:` URI; `None` when it cannot be read (the page then says so).
pub fn thumbnail(image: &str) -> Option<String> {
    let path = Path::new(image);
    let rgb = match crate::data::transform::decode_rgb(path) {
        Ok(rgb) => rgb,
        Err(_) => image::load_from_memory(&shard_member(path)?).ok()?.to_rgb8(),
    };
    let (width, height) = rgb.dimensions();
    let scale = f64::from(SIDE) / f64::from(width.max(height).max(1));
    let (w, h) =
        (((f64::from(width) * scale).round() as u32).max(1), ((f64::from(height) * scale).round() as u32).max(1));
    let small = image::imageops::thumbnail(&rgb, w, h);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80).encode_image(&small).ok()?;
    Some(format!("data:image/jpeg;base64,{}", base64::engine::general_purpose::STANDARD.encode(jpeg)))
}

/// The image bytes of sample `<shard>/<key>`, found by reading the shard front to back.
fn shard_member(path: &Path) -> Option<Vec<u8>> {
    let (shard, key) = (path.parent()?, path.file_name()?.to_str()?);
    let mut found = None;
    let _ = crate::data::sources::read_samples(shard, 0, 0, u64::MAX, &mut |sample| {
        if sample.key == key {
            let image =
                sample.members.iter().find(|(e, _)| crate::data::sources::IMAGE_EXTENSIONS.contains(&e.as_str()));
            found = image.map(|(_, bytes)| bytes.clone());
        }
        found.is_none()
    });
    found
}
