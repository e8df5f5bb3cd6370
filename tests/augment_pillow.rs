//! Every RandAugment operation against the PIL code of
//! `bench/pipeline_baseline.py` (the reference's transforms), byte for byte,
//! at several magnitudes and both signs.

mod common;

use asl::data::transform::{apply_op, decode_rgb, OPS};
use image::{ImageBuffer, Rgb};

const FRACTIONS: [f64; 4] = [0.1, 0.3, 0.7, 1.0];
const SIZES: [u32; 2] = [37, 224];

#[test]
fn randaugment_ops_equal_pillow_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = 7u32;
    for size in SIZES {
        let image = ImageBuffer::from_fn(size, size, |x, y| {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            // A gradient with noise and a narrower range in blue, so AutoContrast and Equalize have work.
            let noise = (state >> 27) as u8;
            Rgb([(x * 255 / size) as u8 ^ noise, (y * 200 / size) as u8 + noise, 60 + ((x + y) % 90) as u8])
        });
        image.save(dir.path().join(format!("{size}.png"))).unwrap();
    }
    // The baseline's `_ops` draws each sign with random.choice; pin it.
    let script = format!(
        "import random, sys\nsys.path.insert(0, 'bench')\nimport pipeline_baseline as pb\nfrom PIL import Image\n\
         for size in {SIZES:?}:\n    img = Image.open('{d}/%d.png' % size).convert('RGB')\n    \
         for i, f in enumerate({FRACTIONS:?}):\n        for sign in (1, -1):\n            random.choice = lambda seq: sign\n            \
         for k, op in enumerate(pb._ops(f, size)):\n                \
         open('{d}/%d_%d_%d_%d.raw' % (size, i, sign, k), 'wb').write(op(img.copy()).tobytes())\n",
        d = dir.path().display()
    );
    common::python::run_python(&["-c", &script]);
    let mut scratch = Vec::new();
    let mut mismatches = Vec::new();
    for size in SIZES {
        let original = decode_rgb(&dir.path().join(format!("{size}.png"))).unwrap().into_raw();
        for (i, fraction) in FRACTIONS.into_iter().enumerate() {
            for sign in [1i32, -1] {
                for (k, op) in OPS.iter().enumerate() {
                    let mut ours = original.clone();
                    apply_op(*op, fraction, f64::from(sign), &mut ours, size as usize, &mut scratch);
                    let pil = std::fs::read(dir.path().join(format!("{size}_{i}_{sign}_{k}.raw"))).unwrap();
                    let differing = ours.iter().zip(&pil).filter(|(a, b)| a != b).count();
                    if differing > 0 || ours.len() != pil.len() {
                        mismatches.push(format!("{op:?} size {size} f {fraction} sign {sign}: {differing} bytes"));
                    }
                }
            }
        }
    }
    assert!(mismatches.is_empty(), "differs from Pillow:\n{}", mismatches.join("\n"));
}
