//! Squish-resize to S×S (aspect ratio not kept, as the reference's
//! `transforms.Resize((S, S))`), written straight into the batch buffer.
//!
//! This is Pillow's bilinear `ImagingResample`, step for step: a separable
//! triangle filter widened by the downscale factor (antialiasing),
//! coefficients rounded to 22-bit fixed point, a horizontal pass over the
//! rows the vertical pass needs, then the vertical pass. The output equals
//! PIL's `Image.resize((S, S), BILINEAR)` byte for byte (tested), so asl
//! sees exactly the pixels the Python reference trains on. All tables and
//! the intermediate image live in a [`Resizer`] that is reused, so once
//! warm a resize allocates nothing.

use super::decode::RgbView;

const PRECISION_BITS: u32 = 32 - 8 - 2;
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Filter taps of one output axis.
#[derive(Debug, Default)]
struct Axis {
    /// Per output index: first input index and number of taps.
    bounds: Vec<(usize, usize)>,
    /// `taps` fixed-point weights per output index.
    weights: Vec<i32>,
    taps: usize,
    /// Scratch for the weights before rounding.
    exact: Vec<f64>,
}

impl Axis {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear filter.
    fn compute(&mut self, in_size: usize, out_size: usize) {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = filter_scale;
        self.taps = support.ceil() as usize * 2 + 1;
        self.bounds.clear();
        self.weights.clear();
        self.weights.resize(out_size * self.taps, 0);
        for out in 0..out_size {
            let center = (out as f64 + 0.5) * scale;
            let min = ((center - support + 0.5) as i64).max(0) as usize;
            let max = ((center + support + 0.5) as i64).min(in_size as i64) as usize - min;
            self.exact.clear();
            let inverse = 1.0 / filter_scale;
            self.exact.extend((0..max).map(|x| triangle(((x + min) as f64 - center + 0.5) * inverse)));
            let total: f64 = self.exact.iter().sum();
            for (x, w) in self.exact.iter().enumerate() {
                let w = if total != 0.0 { w / total } else { *w };
                let fixed = w * f64::from(1u32 << PRECISION_BITS);
                self.weights[out * self.taps + x] = if w < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 };
            }
            self.bounds.push((min, max));
        }
    }

    fn taps_of(&self, out: usize) -> (usize, &[i32]) {
        let (min, count) = self.bounds[out];
        (min, &self.weights[out * self.taps..out * self.taps + count])
    }
}

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn clip8(sum: i32) -> u8 {
    if sum >= (1 << PRECISION_BITS) << 8 {
        255
    } else if sum <= 0 {
        0
    } else {
        (sum >> PRECISION_BITS) as u8
    }
}

/// Coefficient tables and the intermediate image, reused across calls.
#[derive(Debug, Default)]
pub struct Resizer {
    horizontal: Axis,
    vertical: Axis,
    rows: Vec<u8>,
    sums: Vec<i32>,
}

impl Resizer {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Resizes `source` into `destination` (`size × size × 3` bytes).
///
/// Pillow 13 resamples vertically first when the height shrinks by more than
/// twice as many pixels as the width (its PR #9549; the rule was read off its
/// outputs over a grid of sizes); either pass runs over only the rows or
/// columns the other one reads.
pub fn resize_into(source: RgbView, size: u32, destination: &mut [u8], resizer: &mut Resizer) {
    // Integer arithmetic gives the same bytes whatever the vector width, so the
    // passes are also compiled for AVX2 and that copy is used where the CPU has it.
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { resize_avx2(source, size, destination, resizer) };
    }
    resize(source, size, destination, resizer)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn resize_avx2(source: RgbView, size: u32, destination: &mut [u8], resizer: &mut Resizer) {
    resize(source, size, destination, resizer)
}

#[inline(always)]
fn resize(source: RgbView, size: u32, destination: &mut [u8], resizer: &mut Resizer) {
    let (in_w, in_h, out) = (source.width as usize, source.height as usize, size as usize);
    if in_w == out && in_h == out {
        destination.copy_from_slice(source.pixels);
        return;
    }
    let Resizer { horizontal, vertical, rows: band, sums } = resizer;
    horizontal.compute(in_w, out);
    vertical.compute(in_h, out);
    let full = Span { first: 0, len: in_w };
    let shrink = |input: usize| input as i64 - out as i64;
    if in_h > out && shrink(in_h) > 2 * shrink(in_w) {
        // Vertical first, over the columns the horizontal pass reads.
        let columns = horizontal.span();
        band.resize(out * columns.len * 3, 0);
        vertical_pass(source.pixels, in_w, columns, vertical, 0, band, sums);
        horizontal_pass(band, columns, horizontal, destination, out);
    } else if in_w != out {
        // Horizontal first, over the rows the vertical pass reads.
        let rows = vertical.span();
        band.resize(rows.len * out * 3, 0);
        horizontal_pass(
            &source.pixels[rows.first * in_w * 3..(rows.first + rows.len) * in_w * 3],
            full,
            horizontal,
            band,
            out,
        );
        vertical_pass(band, out, Span { first: 0, len: out }, vertical, rows.first, destination, sums);
    } else {
        vertical_pass(source.pixels, in_w, full, vertical, 0, destination, sums);
    }
}

/// A range of input rows or columns.
#[derive(Debug, Clone, Copy)]
struct Span {
    first: usize,
    len: usize,
}

impl Axis {
    /// The input indices any output reads.
    fn span(&self) -> Span {
        let first = self.bounds[0].0;
        let (last_min, last_count) = self.bounds[self.bounds.len() - 1];
        Span { first, len: last_min + last_count - first }
    }
}

/// Resamples each row of `source` (whose rows hold `columns.len` pixels,
/// input columns `columns.first..`) to `out_width` pixels.
#[inline(always)]
fn horizontal_pass(source: &[u8], columns: Span, axis: &Axis, destination: &mut [u8], out_width: usize) {
    let in_stride = columns.len * 3;
    for (row_in, row_out) in source.chunks_exact(in_stride).zip(destination.chunks_exact_mut(out_width * 3)) {
        for (x, pixel) in row_out.chunks_exact_mut(3).enumerate() {
            let (min, weights) = axis.taps_of(x);
            let start = (min - columns.first) * 3;
            let mut acc = [HALF; 3];
            for (p, &w) in row_in[start..start + weights.len() * 3].chunks_exact(3).zip(weights) {
                acc[0] += i32::from(p[0]) * w;
                acc[1] += i32::from(p[1]) * w;
                acc[2] += i32::from(p[2]) * w;
            }
            pixel.copy_from_slice(&acc.map(clip8));
        }
    }
}

/// Resamples the columns `columns` of `source` (rows of `width` pixels; row 0
/// is input row `row_offset`) vertically into `destination`. Each output row
/// is a weighted sum of whole input rows, so the inner loop runs over
/// contiguous bytes.
#[inline(always)]
fn vertical_pass(
    source: &[u8],
    width: usize,
    columns: Span,
    axis: &Axis,
    row_offset: usize,
    destination: &mut [u8],
    sums: &mut Vec<i32>,
) {
    let out_stride = columns.len * 3;
    sums.resize(out_stride, 0);
    for (y, row_out) in destination.chunks_exact_mut(out_stride).take(axis.bounds.len()).enumerate() {
        let (min, weights) = axis.taps_of(y);
        sums.fill(HALF);
        for (i, &w) in weights.iter().enumerate() {
            let start = ((min - row_offset + i) * width + columns.first) * 3;
            for (s, &p) in sums.iter_mut().zip(&source[start..start + out_stride]) {
                *s += i32::from(p) * w;
            }
        }
        for (o, &s) in row_out.iter_mut().zip(sums.iter()) {
            *o = clip8(s);
        }
    }
}
