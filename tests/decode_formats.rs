//! Decoding every JPEG and PNG layout to RGB, against Pillow and the
//! `image` crate, with the file and pixel buffers reused from image to
//! image. Reuse must never change a pixel: whatever was decoded before, a
//! warm decode gives the bytes of a cold one.

mod common;

use asl::data::transform::{decode_rgb, decode_rgb_into, DecodeBuffers};
use std::path::{Path, PathBuf};

/// File name, Pillow expression for the image (from `photo(w, h)`), and
/// how to write it (`save` arguments, or a call of `write_png`): every
/// layout the decoders branch on, and metadata the hot path skips.
const VARIANTS: &[(&str, &str, &str)] = &[
    ("420.jpg", "photo(640, 480)", "quality=90"),
    ("444.jpg", "photo(333, 517)", "quality=95, subsampling=0"),
    ("422.jpg", "photo(500, 375)", "quality=85, subsampling=1"),
    ("progressive.jpg", "photo(800, 600)", "quality=90, progressive=True"),
    ("progressive_444_large.jpg", "photo(1200, 900)", "quality=92, progressive=True, subsampling=0"),
    ("restarts.jpg", "photo(421, 300)", "quality=90, restart_marker_blocks=7"),
    ("metadata.jpg", "photo(320, 240)", "quality=90, exif=exif, icc_profile=icc"),
    ("grey.jpg", "photo(257, 129).convert('L')", "quality=90"),
    ("cmyk.jpg", "photo(96, 80).convert('CMYK')", "quality=90"),
    ("rgb.png", "photo(300, 200)", ""),
    ("rgba.png", "with_alpha(photo(123, 77))", ""),
    ("grey.png", "photo(64, 500).convert('L')", ""),
    ("grey_alpha.png", "with_alpha(photo(99, 101)).convert('LA')", ""),
    ("palette.png", "photo(640, 480).convert('P', palette=Image.ADAPTIVE, colors=200)", ""),
    ("palette_transparent.png", "photo(200, 150).convert('P', palette=Image.ADAPTIVE, colors=64)", "transparency=3"),
    ("palette_4bit.png", "photo(111, 222).convert('P', palette=Image.ADAPTIVE, colors=16)", "bits=4"),
    ("bilevel.png", "photo(130, 70).convert('1')", ""),
    ("metadata.png", "photo(160, 120)", "pnginfo=text, icc_profile=icc, exif=exif"),
    ("interlaced.png", "photo(97, 61)", "write_png(depth=8, interlaced=True)"),
    ("sixteen_bit_interlaced.png", "photo(45, 150)", "write_png(depth=16, interlaced=True)"),
    ("sixteen_bit.png", "photo(230, 33)", "write_png(depth=16, interlaced=False)"),
];

/// Pillow cannot write interlaced or 16-bit RGB PNGs, so this writes them
/// (filter 0 on every row); Pillow reads them, keeping each sample's high byte.
const WRITE_PNG: &str = r#"
import struct, zlib
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
def write_png(path, image, depth, interlaced):
    w, h = image.size
    px = image.load()
    sample = (lambda v: bytes([v])) if depth == 8 else (lambda v: bytes([v, (v * 7) & 255]))
    raw = b''
    for x0, y0, dx, dy in (ADAM7 if interlaced else [(0, 0, 1, 1)]):
        xs = range(x0, w, dx)
        for y in range(y0, h, dy) if xs else []:
            raw += b'\0' + b''.join(sample(c) for x in xs for c in px[x, y])
    header = struct.pack('>IIBBBBB', w, h, depth, 2, 0, 0, int(interlaced))
    body = chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b'')
    open(path, 'wb').write(b'\x89PNG\r\n\x1a\n' + body)
"#;

/// Writes the variants, each with Pillow's own decode beside it as PNG.
fn write_variants(dir: &Path) -> Vec<PathBuf> {
    let mut script = String::from(
        // A large noisy progressive JPEG overflows Pillow's default encoder buffer.
        "from PIL import Image, ImageCms, ImageFile, PngImagePlugin\n\
         ImageFile.MAXBLOCK = 1 << 24\n\
         def photo(w, h):\n\
         \x20   g = Image.radial_gradient('L').resize((w, h))\n\
         \x20   n = Image.effect_noise((w, h), 48)\n\
         \x20   l = Image.linear_gradient('L').resize((w, h)).rotate(90)\n\
         \x20   return Image.merge('RGB', (g, n, l))\n\
         def with_alpha(image):\n\
         \x20   image.putalpha(Image.linear_gradient('L').resize(image.size))\n\
         \x20   return image\n\
         exif = Image.Exif(); exif[0x0112] = 6; exif[0x010F] = 'asl test'\n\
         icc = ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()\n\
         text = PngImagePlugin.PngInfo(); text.add_text('Comment', 'asl test ' * 100, zip=True)\n",
    );
    script += WRITE_PNG;
    for (name, image, how) in VARIANTS {
        let path = dir.join(name);
        let write = match how.strip_prefix("write_png(") {
            Some(args) => format!("write_png('{}', {image}, {args}\n", path.display()),
            None => format!("{image}.save('{}', {how})\n", path.display()),
        };
        script += &write;
        script += &format!("Image.open('{p}').convert('RGB').save('{p}.pil.png')\n", p = path.display());
    }
    common::python::run_python(&["-c", &script]);
    VARIANTS.iter().map(|(name, ..)| dir.join(name)).collect()
}

fn decode_cold(path: &Path) -> Vec<u8> {
    decode_rgb(path).unwrap().into_raw()
}

fn pillow(path: &Path) -> Vec<u8> {
    decode_cold(&PathBuf::from(format!("{}.pil.png", path.display())))
}

#[test]
fn warm_buffers_give_the_pixels_of_cold_ones_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_variants(dir.path());
    let cold: Vec<Vec<u8>> = paths.iter().map(|p| decode_cold(p)).collect();
    let n = paths.len();
    // Forwards, backwards and strided, so each image follows larger,
    // smaller and differently laid out ones.
    let orders = [(0..n).collect::<Vec<_>>(), (0..n).rev().collect(), (0..n).map(|i| (i * 8) % n).collect()];
    let mut buffers = DecodeBuffers::default();
    for order in &orders {
        for &i in order {
            let warm = decode_rgb_into(&paths[i], &mut buffers).unwrap();
            assert!(warm.pixels == cold[i].as_slice(), "{}: a warm decode differs from a cold one", paths[i].display());
        }
    }
}

#[test]
fn pngs_decode_exactly_as_pillow_and_jpegs_within_rounding() {
    let dir = tempfile::tempdir().unwrap();
    let mut buffers = DecodeBuffers::default();
    for path in write_variants(dir.path()) {
        let ours = decode_rgb_into(&path, &mut buffers).unwrap().pixels.to_vec();
        let pillow = pillow(&path);
        assert_eq!(ours.len(), pillow.len(), "{}", path.display());
        if path.extension().unwrap() == "png" {
            // Lossless: palettes, bit depths, grey and dropped alpha must all match.
            let first = ours.iter().zip(&pillow).position(|(a, b)| a != b);
            assert_eq!(first, None, "{}: first byte that differs from Pillow", path.display());
            continue;
        }
        let differences: Vec<u8> = ours.iter().zip(&pillow).map(|(a, b)| a.abs_diff(*b)).collect();
        let mean = differences.iter().map(|&d| f64::from(d)).sum::<f64>() / differences.len() as f64;
        let max = differences.iter().copied().max().unwrap();
        // zune-jpeg and libjpeg round their IDCTs and upsampling differently:
        // means of 0.01 to 0.4, and up to 12 at a few noisy 4:2:2 pixels.
        // A wrong plane or stale row would be far off.
        println!("{}: mean |ours - Pillow| {mean:.3}, max {max}", path.display());
        assert!(mean < 1.0 && max <= 16, "{}: mean {mean}, max {max} against Pillow", path.display());
    }
}

#[test]
fn jpegs_decode_as_the_image_crate_decodes_them() {
    let dir = tempfile::tempdir().unwrap();
    for path in write_variants(dir.path()) {
        // `image` converts CMYK itself; the CMYK value test is in data_loader.rs.
        if path.extension().unwrap() == "png" || path.ends_with("cmyk.jpg") {
            continue;
        }
        // `image` drives zune-jpeg on its own, reading every metadata segment.
        let reference = image::open(&path).unwrap().into_rgb8().into_raw();
        assert!(decode_cold(&path) == reference, "{}: differs from the image crate", path.display());
    }
}
