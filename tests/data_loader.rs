//! The loader on real JPEGs and on broken files: batch shapes and values,
//! determinism across thread counts, skipping and strict mode, and every
//! colour format becoming RGB, and the shares of an epoch among ranks.

mod common;

use asl::data::sources::{write_synthetic, CocoOptions, CocoSplit, SynthConfig};
use asl::data::transform::{decode_rgb, decode_rgb_into, resize_into, DecodeBuffers, Resizer};
use asl::data::{Dataset, Loader, LoaderConfig, Normalization, Sample, Shard};
use common::coco_mini::coco_mini;
use image::{ImageBuffer, Luma, Rgb, Rgba};
use std::sync::Arc;
use tch::{Device, Kind};

fn loader(dataset: &Arc<Dataset>, config: LoaderConfig) -> Loader {
    Loader::new(Arc::clone(dataset), config).unwrap()
}

#[test]
#[cfg_attr(
    not(asl_coco_mini),
    ignore = "needs ../shared/data/coco-mini, the real COCO slice; absent when this was built"
)]
fn coco_mini_val_becomes_float_nchw_batches() {
    let root = coco_mini();
    let dataset = Arc::new(CocoSplit::find(&root, "val").unwrap().load(&CocoOptions::default()).unwrap());
    let loader = loader(&dataset, LoaderConfig { threads: 2, ..LoaderConfig::evaluation(32, 224) });
    assert_eq!(loader.batches_per_epoch(), 3);
    let mut epoch = loader.epoch(0, 0);
    let mut seen = Vec::new();
    for batch in epoch.by_ref() {
        let batch = batch.unwrap();
        let images = batch.images_tensor(Device::Cpu, &Normalization::none()).unwrap();
        assert_eq!(images.size(), [batch.len() as i64, 3, 224, 224]);
        assert_eq!(images.kind(), Kind::Float);
        assert!(images.min().double_value(&[]) >= 0.0 && images.max().double_value(&[]) <= 1.0);
        assert!(images.std(true).double_value(&[]) > 0.05, "real photos are not flat");
        let targets = batch.targets_tensor(Device::Cpu).unwrap();
        assert_eq!(targets.size(), [batch.len() as i64, 80]);
        for (row, &index) in batch.indices.iter().enumerate() {
            let mut expected = vec![0.0; 80];
            dataset.write_targets(index, &mut expected);
            assert_eq!(Vec::<f32>::try_from(targets.get(row as i64)).unwrap(), expected);
        }
        seen.extend(batch.indices.clone());
    }
    assert_eq!(seen, (0..80).collect::<Vec<_>>(), "validation order is the dataset order");
    assert_eq!(epoch.skipped(), 0, "every real JPEG, the greyscale one included, decodes");
}

#[test]
#[cfg_attr(
    not(asl_coco_mini),
    ignore = "needs ../shared/data/coco-mini, the real COCO slice; absent when this was built"
)]
fn same_seed_same_batches_whatever_the_thread_count() {
    let root = coco_mini();
    let dataset = Arc::new(CocoSplit::find(&root, "train").unwrap().load(&CocoOptions::default()).unwrap());
    let config = LoaderConfig { batch_size: 16, image_size: 96, seed: 7, ..LoaderConfig::default() };
    let first_batches = |threads: usize, epoch: u64| -> Vec<(Vec<usize>, Vec<u8>)> {
        let l = loader(&dataset, LoaderConfig { threads, ..config });
        l.epoch(epoch, 0).take(3).map(|b| b.unwrap()).map(|b| (b.indices.clone(), b.images[..].to_vec())).collect()
    };
    let one = first_batches(1, 0);
    assert_eq!(one, first_batches(2, 0));
    assert_eq!(one, first_batches(3, 0));
    let next_epoch = first_batches(2, 1);
    assert_ne!(one[0].0, next_epoch[0].0, "each epoch reshuffles");
    // Resuming at batch 2 yields exactly the third batch.
    let resumed = loader(&dataset, LoaderConfig { threads: 2, ..config }).epoch(0, 2).next().unwrap().unwrap();
    assert_eq!((resumed.indices.clone(), resumed.images.to_vec()), one[2]);
    assert_eq!(resumed.position, 2);
}

#[test]
fn drop_last_controls_the_short_batch() {
    let dir = tempfile::tempdir().unwrap();
    let samples: Vec<Sample> = (0..5)
        .map(|i| {
            let path = dir.path().join(format!("{i}.png"));
            ImageBuffer::from_pixel(8, 8, Rgb([i as u8 * 40, 0, 0])).save(&path).unwrap();
            Sample::new(path, vec![i % 2], vec![])
        })
        .collect();
    let dataset = Arc::new(Dataset::from_samples(vec!["a".into(), "b".into()], samples));
    let keep = loader(&dataset, LoaderConfig { batch_size: 2, image_size: 8, ..LoaderConfig::default() });
    assert_eq!(keep.epoch(0, 0).map(|b| b.unwrap().len()).collect::<Vec<_>>(), vec![2, 2, 1]);
    let drop =
        loader(&dataset, LoaderConfig { batch_size: 2, image_size: 8, drop_last: true, ..LoaderConfig::default() });
    assert_eq!(drop.epoch(0, 0).map(|b| b.unwrap().len()).collect::<Vec<_>>(), vec![2, 2]);
}

#[test]
fn unreadable_images_are_skipped_named_and_counted_or_fatal_when_strict() {
    let dir = tempfile::tempdir().unwrap();
    let good = |i: u8| {
        let path = dir.path().join(format!("good{i}.jpg"));
        ImageBuffer::from_pixel(40, 30, Rgb([i.wrapping_mul(25), 100, 200])).save(&path).unwrap();
        path
    };
    let truncated = dir.path().join("truncated.jpg");
    let whole = std::fs::read(good(9)).unwrap();
    std::fs::write(&truncated, &whole[..whole.len() / 3]).unwrap();
    let text = dir.path().join("notes.jpg");
    std::fs::write(&text, "this is not an image").unwrap();
    let missing = dir.path().join("missing.jpg");
    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let paths = [good(0), truncated.clone(), good(1), text.clone(), missing.clone(), good(2), empty.clone()];
    let samples = paths.iter().enumerate().map(|(i, p)| Sample::new(p.clone(), vec![i as u32], vec![])).collect();
    let dataset = Arc::new(Dataset::from_samples((0..7).map(|i| i.to_string()).collect(), samples));

    let config = LoaderConfig { batch_size: 7, image_size: 16, ..LoaderConfig::evaluation(7, 16) };
    let mut epoch = loader(&dataset, config).epoch(0, 0);
    let batch = epoch.next().unwrap().unwrap();
    assert_eq!(batch.indices, vec![0, 2, 5]);
    let targets = batch.targets_tensor(Device::Cpu).unwrap();
    assert_eq!(targets.argmax(1, false).to_kind(Kind::Int64).iter::<i64>().unwrap().collect::<Vec<_>>(), vec![0, 2, 5]);
    let named: Vec<_> = batch.skipped.iter().map(|s| s.path.clone()).collect();
    assert_eq!(named, vec![truncated.clone(), text, missing, empty]);
    assert!(batch.skipped.iter().all(|s| s.reason.contains("cannot decode image")), "{:?}", batch.skipped);
    drop(batch);
    assert_eq!(epoch.skipped(), 4);

    let mut strict = loader(&dataset, LoaderConfig { strict: true, ..config }).epoch(0, 0);
    let err = strict.next().unwrap().err().unwrap().to_string();
    assert!(err.contains("truncated.jpg"), "{err}");
    assert!(strict.next().is_none(), "a strict loader stops at the first error");
}

#[test]
fn every_colour_format_decodes_to_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let grey = dir.path().join("grey.png");
    ImageBuffer::from_pixel(4, 3, Luma([77u8])).save(&grey).unwrap();
    let sixteen = dir.path().join("sixteen.png");
    ImageBuffer::from_pixel(4, 3, Rgb([65535u16, 0, 32896])).save(&sixteen).unwrap();
    let alpha = dir.path().join("alpha.png");
    ImageBuffer::from_pixel(4, 3, Rgba([10u8, 20, 30, 0])).save(&alpha).unwrap();
    let grey_jpeg = dir.path().join("grey.jpg");
    ImageBuffer::from_pixel(8, 8, Luma([128u8])).save(&grey_jpeg).unwrap();
    for (path, expected) in [(&grey, [77, 77, 77]), (&sixteen, [255, 0, 128]), (&alpha, [10, 20, 30])] {
        let rgb = decode_rgb(path).unwrap();
        assert_eq!(rgb.dimensions(), (4, 3));
        assert_eq!(rgb.get_pixel(1, 1).0, expected, "{}", path.display());
    }
    let rgb = decode_rgb(&grey_jpeg).unwrap();
    let p = rgb.get_pixel(3, 3).0;
    assert!(p[0] == p[1] && p[1] == p[2] && (p[0] as i32 - 128).abs() <= 2, "{p:?}");

    // CMYK JPEG, written by PIL.
    let cmyk = dir.path().join("cmyk.jpg");
    common::python::run_python(&[
        "-c",
        &format!("from PIL import Image; Image.new('CMYK', (8, 8), (0, 255, 255, 0)).save('{}')", cmyk.display()),
    ]);
    let p = decode_rgb(&cmyk).unwrap().get_pixel(4, 4).0;
    assert!(p[0] > 200 && p[1] < 60 && p[2] < 60, "CMYK (0, 255, 255, 0) is red, got {p:?}");
}

#[test]
fn resize_equals_pillow_bilinear_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = [
        (640u32, 480u32),
        (100, 300),
        (224, 224),
        (50, 50),
        (1000, 333),
        (224, 500),
        (500, 224),
        (37, 1200),
        (300, 300),
        (481, 640),
        (300, 400),
        (260, 312),
        (448, 672),
        (100, 200),
    ];
    let mut state = 12345u32;
    for (i, (w, h)) in sizes.iter().enumerate() {
        let image = ImageBuffer::from_fn(*w, *h, |x, y| {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            // Smooth gradients plus noise, like photos.
            Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, (state >> 24) as u8])
        });
        image.save(dir.path().join(format!("{i}.png"))).unwrap();
    }
    let script = format!(
        "from PIL import Image\nfor i in range({n}):\n    for s in (224, 37):\n        \
         Image.open('{d}/%d.png' % i).convert('RGB').resize((s, s), Image.BILINEAR).save('{d}/%d_pil%d.png' % (i, s))",
        n = sizes.len(),
        d = dir.path().display()
    );
    common::python::run_python(&["-c", &script]);
    let (mut buffers, mut resizer) = (DecodeBuffers::default(), Resizer::new());
    for (i, size) in sizes.iter().enumerate() {
        for s in [224u32, 37] {
            let source = decode_rgb_into(&dir.path().join(format!("{i}.png")), &mut buffers).unwrap();
            let mut ours = vec![0u8; (s * s * 3) as usize];
            resize_into(source, s, &mut ours, &mut resizer);
            let pil = decode_rgb(&dir.path().join(format!("{i}_pil{s}.png"))).unwrap().into_raw();
            let first = ours.iter().zip(&pil).position(|(a, b)| a != b);
            assert_eq!(first, None, "image {i} {size:?} → {s}: first byte that differs from Pillow");
        }
    }
}

#[test]
fn rank_shards_cover_every_image_once_per_epoch_in_a_deterministic_order() {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic(dir.path(), &SynthConfig { train_images: 48, val_images: 1, ..Default::default() }).unwrap();
    let dataset = Arc::new(CocoSplit::find(dir.path(), "train").unwrap().load(&CocoOptions::default()).unwrap());
    let sharded = |rank, world, pad| LoaderConfig {
        batch_size: 8,
        image_size: 16,
        threads: 2,
        shard: Some(Shard { rank, world, pad }),
        ..LoaderConfig::default()
    };
    let whole = loader(&dataset, LoaderConfig { batch_size: 8, image_size: 16, ..LoaderConfig::default() });
    for epoch in 0..2 {
        for world in [2, 3] {
            // What the ranks read, batch by batch, through the real pipeline.
            let seen: Vec<Vec<usize>> = (0..world)
                .map(|rank| {
                    let ranked = loader(&dataset, sharded(rank, world, true));
                    assert_eq!(ranked.batches_per_epoch(), 48 / world / 8);
                    ranked.epoch(epoch, 0).flat_map(|b| b.unwrap().indices.clone()).collect()
                })
                .collect();
            let mut all: Vec<usize> = seen.concat();
            all.sort_unstable();
            assert_eq!(all, (0..48).collect::<Vec<_>>(), "epoch {epoch}, {world} ranks: each image once");
            // Rank r reads positions r, r + world, … of the single-process order: deterministic.
            let order = whole.order(epoch);
            for (rank, indices) in seen.iter().enumerate() {
                let expected: Vec<usize> = order.iter().skip(rank).step_by(world).copied().collect();
                assert_eq!(indices, &expected);
            }
        }
    }
    // 48 images among 5 ranks: padded to 50 by repeating the order's first 2.
    let order = whole.order(0);
    let padded: Vec<Vec<usize>> = (0..5).map(|r| loader(&dataset, sharded(r, 5, true)).order(0)).collect();
    assert!(padded.iter().all(|p| p.len() == 10));
    assert_eq!((padded[3][9], padded[4][9]), (order[0], order[1]));
    // Validation shards are not padded: 48 among 5 is 10, 10, 10, 9, 9.
    let lengths: Vec<usize> = (0..5).map(|r| loader(&dataset, sharded(r, 5, false)).samples_per_epoch()).collect();
    assert_eq!(lengths, [10, 10, 10, 9, 9]);
}
