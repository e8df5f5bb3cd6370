//! RandAugment (Cubuk et al.) on a square RGB8 image, in place: `num_ops`
//! operations drawn uniformly from the standard list, each applied with
//! probability `probability`, at magnitude `magnitude` of 30 (torchvision's
//! scale). Geometric operations sample nearest-neighbour and fill with
//! grey 128, as the ASL reference's RandAugment does.
//!
//! Each operation reproduces the PIL call `bench/pipeline_baseline.py` makes
//! (ImageOps, ImageEnhance, `Image.transform`, `Image.rotate`) byte for byte,
//! including Pillow's float32 blends, fixed-point affine stepping and
//! truncations (tested against Pillow).

use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RandAugmentConfig {
    /// Ops drawn per image.
    pub num_ops: usize,
    /// Strength on torchvision's scale, 0..=30; 9 is the common default.
    pub magnitude: f64,
    /// Probability that each drawn op is applied.
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
    // The float rounding and flooring below are libm calls on baseline
    // x86-64 but single instructions with SSE4.1, which AVX2 implies; the
    // results are the same bits either way.
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { apply_avx2(op, fraction, sign, pixels, size, scratch) };
    }
    apply_portable(op, fraction, sign, pixels, size, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn apply_avx2(op: Op, fraction: f64, sign: f64, pixels: &mut [u8], size: usize, scratch: &mut Vec<u8>) {
    apply_portable(op, fraction, sign, pixels, size, scratch)
}

#[inline(always)]
fn apply_portable(op: Op, fraction: f64, sign: f64, pixels: &mut [u8], size: usize, scratch: &mut Vec<u8>) {
    // ImageEnhance factors reach Pillow's C code as 32-bit floats.
    let enhance = (1.0 + 0.9 * fraction * sign) as f32;
    let s = size as f64;
    match op {
        Op::AutoContrast => auto_contrast(pixels),
        Op::Equalize => equalize(pixels),
        Op::Solarize => {
            // ImageOps.solarize(img, int(255 * (1 - f))): values at or above the threshold are inverted.
            let threshold = (255.0 * (1.0 - fraction)) as i64;
            map_values(pixels, |v| if i64::from(v) < threshold { v } else { 255 - v });
        }
        Op::Posterize => {
            // Python's round() takes ties to even.
            let bits = 8 - (4.0 * fraction).round_ties_even() as u32;
            let mask = !((1u16 << (8 - bits)) - 1) as u8;
            pixels.iter_mut().for_each(|v| *v &= mask);
        }
        Op::Brightness => map_values(pixels, |v| blend(0, v, enhance)),
        Op::Color => {
            for p in pixels.chunks_exact_mut(3) {
                let g = grey(p);
                p.iter_mut().for_each(|v| *v = blend(g, *v, enhance));
            }
        }
        Op::Contrast => {
            let sum: u64 = pixels.chunks_exact(3).map(|p| u64::from(grey(p))).sum();
            let mean = (sum as f64 / (pixels.len() / 3) as f64 + 0.5) as u8;
            map_values(pixels, |v| blend(mean, v, enhance));
        }
        Op::Sharpness => sharpness(pixels, size, enhance, scratch),
        Op::Rotate => {
            // Image.rotate(angle, fillcolor=FILL) builds this matrix and resamples with it.
            let degrees = (30.0 * fraction * sign).rem_euclid(360.0);
            if degrees == 0.0 {
                return;
            }
            let angle = -degrees.to_radians();
            let round15 = |v: f64| (v * 1e15).round() / 1e15;
            let (cos, sin) = (round15(angle.cos()), round15(angle.sin()));
            let (a, b, d, e) = (cos, sin, -sin, cos);
            let (cx, cy) = (s / 2.0, s / 2.0);
            let c = a * -cx + b * -cy + 0.0 + cx;
            let f = d * -cx + e * -cy + 0.0 + cy;
            affine(pixels, size, [a, b, c, d, e, f], scratch);
        }
        Op::ShearX => affine(pixels, size, [1.0, 0.3 * fraction * sign, 0.0, 0.0, 1.0, 0.0], scratch),
        Op::ShearY => affine(pixels, size, [1.0, 0.0, 0.0, 0.3 * fraction * sign, 1.0, 0.0], scratch),
        Op::TranslateX => affine(pixels, size, [1.0, 0.0, 0.45 * fraction * sign * s, 0.0, 1.0, 0.0], scratch),
        Op::TranslateY => affine(pixels, size, [1.0, 0.0, 0.0, 0.0, 1.0, 0.45 * fraction * sign * s], scratch),
    }
}

/// Applies a per-value function through a 256-entry table: 256 evaluations
/// instead of one per byte.
#[inline(always)]
fn map_values(pixels: &mut [u8], f: impl Fn(u8) -> u8) {
    let table: [u8; 256] = std::array::from_fn(|v| f(v as u8));
    pixels.iter_mut().for_each(|v| *v = table[*v as usize]);
}

/// Pillow's `ImagingBlend(degenerate, image, alpha)`, which every
/// ImageEnhance class uses: float32 arithmetic, truncated, and clipped when
/// `alpha` extrapolates (a saturating cast does both).
#[inline(always)]
fn blend(degenerate: u8, value: u8, alpha: f32) -> u8 {
    (f32::from(degenerate) + alpha * (f32::from(value) - f32::from(degenerate))) as u8
}

/// ITU-R 601-2 luma in Pillow's 16-bit fixed point (`convert('L')`).
#[inline(always)]
fn grey(p: &[u8]) -> u8 {
    ((u32::from(p[0]) * 19595 + u32::from(p[1]) * 38470 + u32::from(p[2]) * 7471 + 0x8000) >> 16) as u8
}

/// Per-channel histograms in one pass over the pixels.
#[inline(always)]
fn channel_histograms(pixels: &[u8]) -> [[u32; 256]; 3] {
    let mut histograms = [[0u32; 256]; 3];
    for p in pixels.chunks_exact(3) {
        histograms[0][p[0] as usize] += 1;
        histograms[1][p[1] as usize] += 1;
        histograms[2][p[2] as usize] += 1;
    }
    histograms
}

#[inline(always)]
fn map_channels(pixels: &mut [u8], tables: &[[u8; 256]; 3]) {
    for p in pixels.chunks_exact_mut(3) {
        p[0] = tables[0][p[0] as usize];
        p[1] = tables[1][p[1] as usize];
        p[2] = tables[2][p[2] as usize];
    }
}

/// PIL's `ImageOps.autocontrast` (no cutoff): each channel's range stretched
/// to 0..255, truncating.
#[inline(always)]
fn auto_contrast(pixels: &mut [u8]) {
    let tables = channel_histograms(pixels).map(|histogram| {
        let lo = histogram.iter().position(|&h| h > 0).unwrap_or(0);
        let hi = histogram.iter().rposition(|&h| h > 0).unwrap_or(0);
        if hi <= lo {
            return std::array::from_fn(|v| v as u8);
        }
        let scale = 255.0 / (hi - lo) as f64;
        let offset = -(lo as f64) * scale;
        std::array::from_fn(|v| ((v as f64 * scale + offset) as i64).clamp(0, 255) as u8)
    });
    map_channels(pixels, &tables);
}

/// PIL's `ImageOps.equalize`, per channel.
#[inline(always)]
fn equalize(pixels: &mut [u8]) {
    let tables = channel_histograms(pixels).map(|histogram| {
        let last = histogram.iter().rev().find(|&&h| h > 0).copied().unwrap_or(0) as usize;
        let step = (histogram.iter().map(|&h| h as usize).sum::<usize>() - last) / 255;
        let mut table: [u8; 256] = std::array::from_fn(|v| v as u8);
        if step > 0 {
            let mut n = step / 2;
            for (entry, &count) in table.iter_mut().zip(&histogram) {
                *entry = (n / step).min(255) as u8;
                n += count as usize;
            }
        }
        table
    });
    map_channels(pixels, &tables);
}

/// `ImageEnhance.Sharpness`: blends with PIL's SMOOTH filter (kernel
/// 1 1 1 / 1 5 1 / 1 1 1 over 13, border pixels kept), summed in float32 in
/// Pillow's order (row below, centre row, row above; +0.5, truncated).
#[inline(always)]
fn sharpness(pixels: &mut [u8], size: usize, factor: f32, scratch: &mut Vec<u8>) {
    if size < 3 {
        return;
    }
    scratch.clear();
    scratch.extend_from_slice(pixels);
    let (edge, centre) = (1.0f32 / 13.0, 5.0f32 / 13.0);
    let stride = size * 3;
    let inner = stride - 6;
    let row_sum = |row: &[u8], i: usize, middle: f32| {
        f32::from(row[i]) * edge + f32::from(row[i + 3]) * middle + f32::from(row[i + 6]) * edge
    };
    for y in 1..size - 1 {
        let (above, row, below) = (&scratch[(y - 1) * stride..], &scratch[y * stride..], &scratch[(y + 1) * stride..]);
        let out = &mut pixels[y * stride + 3..y * stride + 3 + inner];
        for (i, o) in out.iter_mut().enumerate() {
            let mut smooth = 0.5f32;
            smooth += row_sum(below, i, edge);
            smooth += row_sum(row, i, centre);
            smooth += row_sum(above, i, edge);
            *o = blend(smooth as u8, row[i + 3], factor);
        }
    }
}

/// Pillow's `Image.transform(AFFINE, m, NEAREST, fillcolor=FILL)`: output
/// pixel (x, y) takes input pixel (a x + b y + c, d x + e y + f) at pixel
/// centres. Pure scaling/translation (b = d = 0) steps in doubles; anything
/// else in 16.16 fixed point, as Pillow does for images under 32768 pixels.
#[inline(always)]
fn affine(pixels: &mut [u8], size: usize, m: [f64; 6], scratch: &mut Vec<u8>) {
    scratch.clear();
    scratch.extend_from_slice(pixels);
    let inside = |v: i64| v >= 0 && (v as usize) < size;
    let source = |x: i64, y: i64| (y as usize * size + x as usize) * 3;
    if m[1] == 0.0 && m[3] == 0.0 {
        // Pillow's COORD: -1 below zero, else truncation.
        let coord = |v: f64| if v < 0.0 { -1 } else { v as i64 };
        let mut yo = m[5] + m[4] * 0.5;
        for row in pixels.chunks_exact_mut(size * 3) {
            let yin = coord(yo);
            let mut xo = m[2] + m[0] * 0.5;
            for out in row.chunks_exact_mut(3) {
                let xin = coord(xo);
                if inside(xin) && inside(yin) {
                    out.copy_from_slice(&scratch[source(xin, yin)..source(xin, yin) + 3]);
                } else {
                    out.fill(FILL);
                }
                xo += m[0];
            }
            yo += m[4];
        }
        return;
    }
    let fix = |v: f64| (v * 65536.0 + 0.5).floor() as i32;
    let (a0, a1, a3, a4) = (fix(m[0]), fix(m[1]), fix(m[3]), fix(m[4]));
    let mut a2 = fix(m[2] + m[0] * 0.5 + m[1] * 0.5);
    let mut a5 = fix(m[5] + m[3] * 0.5 + m[4] * 0.5);
    for row in pixels.chunks_exact_mut(size * 3) {
        let (mut xx, mut yy) = (a2, a5);
        for out in row.chunks_exact_mut(3) {
            let (xin, yin) = (i64::from(xx >> 16), i64::from(yy >> 16));
            if inside(xin) && inside(yin) {
                out.copy_from_slice(&scratch[source(xin, yin)..source(xin, yin) + 3]);
            } else {
                out.fill(FILL);
            }
            xx = xx.wrapping_add(a0);
            yy = yy.wrapping_add(a3);
        }
        a2 = a2.wrapping_add(a1);
        a5 = a5.wrapping_add(a4);
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
            // Contrast at factor 1 blends towards the rounded grey mean with
            // weight 0: x = mean + 1·(x − mean) is exact in float32.
            assert_eq!(pixels, original, "{op:?}");
        }
    }

    #[test]
    fn point_operations_by_hand() {
        let mut scratch = Vec::new();
        // Solarize at fraction 0.5: threshold int(127.5) = 127, values >= it are inverted.
        let mut p = vec![10, 127, 128, 200, 255, 0];
        apply(Op::Solarize, 0.5, 1.0, &mut p, 1, &mut scratch);
        assert_eq!(p, vec![10, 128, 127, 55, 0, 0]);
        // Posterize at fraction 1: 4 bits kept.
        let mut p = vec![0xff, 0x17, 0x80];
        apply(Op::Posterize, 1.0, 1.0, &mut p, 1, &mut scratch);
        assert_eq!(p, vec![0xf0, 0x10, 0x80]);
        // Brightness +0.9 at fraction 1: ×1.9 in float32, truncated, clipped. 1.9f32 is
        // 1.89999998, but 10 × it rounds to exactly 19.0 in float32 (and 100 × it to 190.0).
        let mut p = vec![10, 100, 200];
        apply(Op::Brightness, 1.0, 1.0, &mut p, 1, &mut scratch);
        assert_eq!(p, vec![19, 190, 255]);
        // Contrast at factor 0.1 (fraction 1, sign -1) towards the grey mean 100: 100 + 0.1 × 100 = 110.
        let mut p = vec![200, 200, 200, 0, 0, 0];
        apply(Op::Contrast, 1.0, -1.0, &mut p, 1, &mut scratch);
        assert_eq!(p, vec![110, 110, 110, 90, 90, 90]);
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
