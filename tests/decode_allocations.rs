//! Counts heap allocations on the per-sample hot path (decode, resize,
//! augment) once the worker's buffers are warm, with a counting allocator.

mod common;

use asl::data::transform::{decode_rgb_into, resize_into, AugmentConfig, DecodeBuffers, Resizer};
use asl::data::{sample_rng, Stream};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        BYTES.fetch_add(layout.size(), Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn warm_hot_path_allocations_on_real_jpegs() {
    let Some(root) = common::coco_mini::coco_mini() else { return };
    let mut paths: Vec<_> = std::fs::read_dir(root.join("val2017")).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    let (mut buffers, mut resizer, mut scratch) = (DecodeBuffers::default(), Resizer::new(), Vec::new());
    let mut pixels = vec![0u8; 224 * 224 * 3];
    let augment = AugmentConfig::default();
    let mut pass = || {
        let (mut stages, mut decode_bytes) = ([0usize; 3], 0);
        for (i, path) in paths.iter().enumerate() {
            let (a, bytes) = (ALLOCATIONS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
            let image = decode_rgb_into(path, &mut buffers).unwrap();
            let b = ALLOCATIONS.load(Ordering::SeqCst);
            decode_bytes += BYTES.load(Ordering::SeqCst) - bytes;
            resize_into(image, 224, &mut pixels, &mut resizer);
            let c = ALLOCATIONS.load(Ordering::SeqCst);
            augment.apply(&mut pixels, 224, &mut scratch, &mut sample_rng(Stream::Augment, 0, 0, i as u64));
            let d = ALLOCATIONS.load(Ordering::SeqCst);
            stages[0] += b - a;
            stages[1] += c - b;
            stages[2] += d - c;
        }
        (stages.map(|s| s as f64 / paths.len() as f64), decode_bytes as f64 / paths.len() as f64)
    };
    pass();
    let ([decode, resize, augment], decode_bytes) = pass();
    println!(
        "allocations per image once warm: decode {decode:.1} ({:.1} KiB), resize {resize:.1}, augment {augment:.1}",
        decode_bytes / 1024.0
    );
    // File bytes and decoded pixels are reused: what remains in decoding is opening the file
    // and the JPEG decoder's own small tables. Resize and augmentation reuse everything.
    assert!(decode <= 8.0, "decode allocates {decode} times per image");
    assert_eq!(resize, 0.0);
    assert_eq!(augment, 0.0);
}
