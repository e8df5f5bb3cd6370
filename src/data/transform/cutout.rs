//! Cutout as the reference's `CutoutPIL(cutout_factor=0.5)`: a rectangle of
//! half the image's width and height at a uniformly random centre (clipped
//! at the borders), filled with one random colour.

use rand::Rng;

/// `pixels` is a `size × size × 3` RGB image.
pub fn cutout(pixels: &mut [u8], size: usize, factor: f64, rng: &mut impl Rng) {
    let half = ((factor * size as f64 + 0.5) as usize) / 2;
    let (cy, cx) = (rng.random_range(0..size), rng.random_range(0..size));
    let fill: [u8; 3] = [rng.random(), rng.random(), rng.random()];
    // PIL's rectangle includes both corners; clip the far edge to the image.
    let (y0, y1) = (cy.saturating_sub(half), (cy + half).min(size - 1));
    let (x0, x1) = (cx.saturating_sub(half), (cx + half).min(size - 1));
    for y in y0..=y1 {
        let row = &mut pixels[(y * size + x0) * 3..(y * size + x1 + 1) * 3];
        for pixel in row.chunks_exact_mut(3) {
            pixel.copy_from_slice(&fill);
        }
    }
}
