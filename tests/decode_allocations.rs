//! Counts heap allocations on the per-sample hot path once a worker's
//! buffers are warm, with a counting allocator: resize and augment must
//! allocate nothing. Decoding reuses its file and pixel buffers, but the
//! upstream decoders allocate their own short-lived working memory, so its
//! count is printed, not asserted. Counts are per thread, so the tests may
//! run in parallel.

mod common;

use asl::data::sources::{write_synthetic, SynthConfig};
use asl::data::transform::{decode_rgb_into, resize_into, AugmentConfig, DecodeBuffers, Resizer};
use asl::data::{sample_rng, Stream};
use image::{ImageBuffer, LumaA, Rgb, Rgba};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

struct Counting;

thread_local! {
    // Const-initialised and without a destructor, so reading them never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static BYTES: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        BYTES.with(|b| b.set(b.get() + layout.size()));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counters() -> (usize, usize) {
    (ALLOCATIONS.with(Cell::get), BYTES.with(Cell::get))
}

/// Mean allocations per image in decode, resize and augment, and decode's
/// bytes, over a second pass through `paths` with the buffers of the first.
fn warm_allocations(paths: &[PathBuf]) -> ([f64; 3], f64) {
    let (mut buffers, mut resizer, mut scratch) = (DecodeBuffers::default(), Resizer::new(), Vec::new());
    let mut pixels = vec![0u8; 224 * 224 * 3];
    let augment = AugmentConfig::default();
    let mut pass = || {
        let (mut stages, mut decode_bytes) = ([0usize; 3], 0);
        for (i, path) in paths.iter().enumerate() {
            let (a, bytes) = counters();
            let image = decode_rgb_into(path, &mut buffers).unwrap();
            let (b, after_decode) = counters();
            decode_bytes += after_decode - bytes;
            resize_into(image, 224, &mut pixels, &mut resizer);
            let (c, _) = counters();
            augment.apply(&mut pixels, 224, &mut scratch, &mut sample_rng(Stream::Augment, 0, 0, i as u64));
            let (d, _) = counters();
            stages[0] += b - a;
            stages[1] += c - b;
            stages[2] += d - c;
        }
        (stages.map(|s| s as f64 / paths.len() as f64), decode_bytes as f64 / paths.len() as f64)
    };
    pass();
    pass()
}

fn assert_allocation_free(kind: &str, paths: &[PathBuf]) {
    let ([decode, resize, augment], decode_bytes) = warm_allocations(paths);
    println!(
        "{kind}: allocations per image once warm: decode {decode:.1} ({decode_bytes:.0} bytes), resize {resize:.1}, \
         augment {augment:.1}"
    );
    assert_eq!(resize, 0.0, "{kind}: resize allocates");
    assert_eq!(augment, 0.0, "{kind}: augmentation allocates");
}

fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths
}

#[test]
#[cfg_attr(
    not(asl_coco_mini),
    ignore = "needs ../shared/data/coco-mini, the real COCO slice; absent when this was built"
)]
fn warm_resize_and_augment_allocate_nothing_on_real_jpegs() {
    let root = common::coco_mini::coco_mini();
    assert_allocation_free("coco-mini val JPEGs", &sorted_files(&root.join("val2017")));
}

#[test]
fn warm_resize_and_augment_allocate_nothing_on_pngs() {
    // The built-in synthetic set (RGB), plus alpha, grey-alpha and 16-bit
    // files of other sizes, interleaved.
    let dir = tempfile::tempdir().unwrap();
    write_synthetic(dir.path(), &SynthConfig { train_images: 12, val_images: 1, ..Default::default() }).unwrap();
    let mut paths = sorted_files(&dir.path().join("train"));
    for i in 0..4u32 {
        let (w, h) = (50 + 37 * i, 90 - 11 * i);
        let others = dir.path().join(format!("other{i}"));
        std::fs::create_dir(&others).unwrap();
        let rgba = ImageBuffer::from_fn(w, h, |x, y| Rgba([x as u8, y as u8, (x * y) as u8, 200]));
        let grey = ImageBuffer::from_fn(h, w, |x, y| LumaA([(x + y) as u8, 7]));
        let sixteen = ImageBuffer::from_fn(w, w, |x, y| Rgb([(x * 300) as u16, (y * 500) as u16, 65535]));
        for (name, result) in [
            ("rgba.png", rgba.save(others.join("rgba.png"))),
            ("grey_alpha.png", grey.save(others.join("grey_alpha.png"))),
            ("sixteen.png", sixteen.save(others.join("sixteen.png"))),
        ] {
            result.unwrap();
            paths.insert(3 * i as usize, others.join(name));
        }
    }
    assert_allocation_free("PNGs", &paths);
}
