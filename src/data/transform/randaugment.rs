//! RandAugment (Cubuk et al.) on a square RGB8 image, in place: `num_ops`
//! operations drawn uniformly from the standard list, each applied with
//! probability `probability`, at magnitude `magnitude` of 30 (torchvision's
//! scale). Geometric operations sample nearest-neighbour and fill with
//! grey 128, as the ASL reference's RandAugment does.

use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RandAugmentConfig {
    pub num_ops: usize,
    /// 0..=30; 9 is the common default.
    pub magnitude: f64,
    pub probability: f64,
}

impl Default for RandAugmentConfig {
    fn default() -> Self {
        Self { num_ops: 2, magnitude: 9.0, probability: 0.5 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    AutoContrast,
    Equalize,
    Rotate,
    Solarize,
    Color,
    Posterize,
    Contrast,
    Brightness,
    Sharpness,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
}

pub const OPS: [Op; 13] = [
    Op::AutoContrast,
    Op::Equalize,
    Op::Rotate,
    Op::Solarize,
    Op::Color,
    Op::Posterize,
    Op::Contrast,
    Op::Brightness,
    Op::Sharpness,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateX,
    Op::TranslateY,
];

const FILL: u8 = 128;

/// Applies RandAugment to `pixels` (`size × size × 3`), using `scratch` for
/// operations that cannot work in place.
pub fn rand_augment(
    pixels: &mut [u8],
    size: usize,
    config: &RandAugmentConfig,
    scratch: &mut Vec<u8>,
    rng: &mut impl Rng,
) {
    let fraction = (config.magnitude / 30.0).clamp(0.0, 1.0);
    for _ in 0..config.num_ops {
        let op = OPS[rng.random_range(0..OPS.len())];
        let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
        if rng.random::<f64>() < config.probability {
            apply(op, fraction, sign, pixels, size, scratch);
        }
    }
}

/// One operation at magnitude `fraction` (0..=1) with `sign` ±1 for the signed ones.
pub fn apply(op: Op, fraction: f64, sign: f64, pixels: &mut [u8], size: usize, scratch: &mut Vec<u8>) {
    let enhance = 1.0 + 0.9 * fraction * sign;
    let s = size as f64;
    match op {
        Op::AutoContrast => auto_contrast(pixels),
        Op::Equalize => equalize(pixels),
        Op::Solarize => {
            let threshold = 255.0 * (1.0 - fraction);
            pixels.iter_mut().filter(|v| f64::from(**v) >= threshold).for_each(|v| *v = 255 - *v);
        }
        Op::Posterize => {
            let bits = 8 - (4.0 * fraction).round() as u32;
            let mask = !((1u16 << (8 - bits)) - 1) as u8;
            pixels.iter_mut().for_each(|v| *v &= mask);
        }
        Op::Brightness => pixels.iter_mut().for_each(|v| *v = clamp_u8(f64::from(*v) * enhance)),
        Op::Color => blend_with_grey(pixels, enhance),
        Op::Contrast => {
            let mean = grey_values(pixels).map(f64::from).sum::<f64>() / (pixels.len() / 3) as f64;
            let mean = (mean + 0.5).floor();
            pixels.iter_mut().for_each(|v| *v = clamp_u8(mean + enhance * (f64::from(*v) - mean)));
        }
        Op::Sharpness => sharpness(pixels, size, enhance, scratch),
        Op::Rotate => {
            let (sin, cos) = (30.0 * fraction * sign).to_radians().sin_cos();
            let c = s / 2.0;
            // Output (x, y) samples the input at the inverse rotation about the centre.
            affine(pixels, size, [cos, sin, c - cos * c - sin * c, -sin, cos, c + sin * c - cos * c], scratch);
        }
        Op::ShearX => affine(pixels, size, [1.0, 0.3 * fraction * sign, 0.0, 0.0, 1.0, 0.0], scratch),
        Op::ShearY => affine(pixels, size, [1.0, 0.0, 0.0, 0.3 * fraction * sign, 1.0, 0.0], scratch),
        Op::TranslateX => affine(pixels, size, [1.0, 0.0, 0.45 * fraction * sign * s, 0.0, 1.0, 0.0], scratch),
        Op::TranslateY => affine(pixels, size, [1.0, 0.0, 0.0, 0.0, 1.0, 0.45 * fraction * sign * s], scratch),
    }
}

fn clamp_u8(v: f64) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// ITU-R 601-2 luma, as PIL's `convert('L')`.
fn grey(p: &[u8]) -> u8 {
    ((u32::from(p[0]) * 299 + u32::from(p[1]) * 587 + u32::from(p[2]) * 114 + 500) / 1000) as u8
}

fn grey_values(pixels: &[u8]) -> impl Iterator<Item = u8> + '_ {
    pixels.chunks_exact(3).map(grey)
}

fn blend_with_grey(pixels: &mut [u8], factor: f64) {
    for p in pixels.chunks_exact_mut(3) {
        let g = f64::from(grey(p));
        p.iter_mut().for_each(|v| *v = clamp_u8(g + factor * (f64::from(*v) - g)));
    }
}

fn auto_contrast(pixels: &mut [u8]) {
    for channel in 0..3 {
        let values = pixels.iter().skip(channel).step_by(3);
        let (lo, hi) = values.fold((255u8, 0u8), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if hi > lo {
            let scale = 255.0 / f64::from(hi - lo);
            pixels.iter_mut().skip(channel).step_by(3).for_each(|v| *v = clamp_u8(f64::from(*v - lo) * scale));
        }
    }
}

/// PIL's `ImageOps.equalize`, per channel.
fn equalize(pixels: &mut [u8]) {
    for channel in 0..3 {
        let mut histogram = [0usize; 256];
        pixels.iter().skip(channel).step_by(3).for_each(|&v| histogram[v as usize] += 1);
        let last = histogram.iter().rev().find(|&&h| h > 0).copied().unwrap_or(0);
        let step = (histogram.iter().sum::<usize>() - last) / 255;
        if step == 0 {
            continue;
        }
        let mut lut = [0u8; 256];
        let mut n = step / 2;
        for (entry, &count) in lut.iter_mut().zip(&histogram) {
            *entry = (n / step).min(255) as u8;
            n += count;
        }
        pixels.iter_mut().skip(channel).step_by(3).for_each(|v| *v = lut[*v as usize]);
    }
}

/// Blends with PIL's SMOOTH-filtered image (kernel 1 1 1 / 1 5 1 / 1 1 1, ÷13;
/// border pixels kept), as `ImageEnhance.Sharpness`.
fn sharpness(pixels: &mut [u8], size: usize, factor: f64, scratch: &mut Vec<u8>) {
    scratch.clear();
    scratch.extend_from_slice(pixels);
    for y in 1..size.saturating_sub(1) {
        for x in 1..size - 1 {
            for c in 0..3 {
                let at = |yy: usize, xx: usize| u32::from(scratch[(yy * size + xx) * 3 + c]);
                let mut sum = 4 * at(y, x);
                for (dy, dx) in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2), (1, 1)] {
                    sum += at(y + dy - 1, x + dx - 1);
                }
                let smooth = f64::from((sum + 6) / 13);
                let i = (y * size + x) * 3 + c;
                pixels[i] = clamp_u8(smooth + factor * (f64::from(scratch[i]) - smooth));
            }
        }
    }
}

/// Output pixel (x, y) takes input pixel (a x + b y + c, d x + e y + f)
/// (PIL's `Image.transform(AFFINE)` convention), nearest neighbour, grey fill.
fn affine(pixels: &mut [u8], size: usize, m: [f64; 6], scratch: &mut Vec<u8>) {
    scratch.clear();
    scratch.extend_from_slice(pixels);
    for y in 0..size {
        for x in 0..size {
            let (xf, yf) = (x as f64 + 0.5, y as f64 + 0.5);
            let sx = (m[0] * xf + m[1] * yf + m[2]).floor();
            let sy = (m[3] * xf + m[4] * yf + m[5]).floor();
            let out = &mut pixels[(y * size + x) * 3..(y * size + x) * 3 + 3];
            if sx >= 0.0 && sy >= 0.0 && (sx as usize) < size && (sy as usize) < size {
                let i = (sy as usize * size + sx as usize) * 3;
                out.copy_from_slice(&scratch[i..i + 3]);
            } else {
                out.fill(FILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(size: usize) -> Vec<u8> {
        (0..size * size).flat_map(|i| [(i % 256) as u8, (i * 7 % 256) as u8, 100]).collect()
    }

    #[test]
    fn identity_magnitudes_leave_the_image_unchanged() {
        let original = gradient(8);
        let mut scratch = Vec::new();
        for op in [
            Op::Rotate,
            Op::ShearX,
            Op::ShearY,
            Op::TranslateX,
            Op::TranslateY,
            Op::Color,
            Op::Brightness,
            Op::Contrast,
        ] {
            let mut pixels = original.clone();
            apply(op, 0.0, 1.0, &mut pixels, 8, &mut scratch);
            if op == Op::Contrast {
                continue; // factor 1 keeps values; rounding of the mean does not matter then
            }
            assert_eq!(pixels, original, "{op:?}");
        }
    }

    #[test]
    fn point_operations_by_hand() {
        let mut scratch = Vec::new();
        // Solarize at fraction 0.5: threshold 127.5, values >= it are inverted.
        let mut p = vec![10, 127, 128, 200, 255, 0];
        apply(Op::Solarize, 0.5, 1.0, &mut p, 1, &mut scratch);
        assert_eq!(p, vec![10, 127, 127, 55, 0, 0]);
        // Posterize at fraction 1: 4 bits kept.
        let mut p = vec![0xff, 0x17, 0x80];
        apply(Op::Posterize, 1.0, 1.0, &mut p, 1, &mut scratch);
        assert_eq!(p, vec![0xf0, 0x10, 0x80]);
        // Brightness +0.9 at fraction 1: ×1.9, clamped.
        let mut p = vec![10, 100, 200];
        apply(Op::Brightness, 1.0, 1.0, &mut p, 1, &mut scratch);
        assert_eq!(p, vec![19, 190, 255]);
        // AutoContrast stretches each channel to 0..255.
        let mut p = vec![50, 0, 7, 150, 0, 7];
        apply(Op::AutoContrast, 0.0, 1.0, &mut p, 1, &mut scratch);
        assert_eq!(p, vec![0, 0, 7, 255, 0, 7]);
    }

    #[test]
    fn translation_shifts_and_fills_grey() {
        let mut scratch = Vec::new();
        let size = 4;
        let mut p: Vec<u8> = (0..size * size).flat_map(|i| [i as u8; 3]).collect();
        // fraction 1, sign -1: output x samples input x - 0.45·4 = x - 1.8 → floor.
        apply(Op::TranslateX, 1.0, -1.0, &mut p, size, &mut scratch);
        let first_row: Vec<u8> = p[..size * 3].iter().step_by(3).copied().collect();
        assert_eq!(first_row, vec![FILL, FILL, 0, 1]);
    }
}
