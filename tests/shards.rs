//! Training from WebDataset tar shards: `asl pack` keeps every label, the
//! ranks and readers read each sample once per epoch, a stopped epoch
//! resumes bit for bit, damaged shards are read past with each loss named,
//! and two torchrun ranks train and validate from shards.

mod common;

use asl::data::pack::{pack_split, write_index, PackOptions};
use asl::data::sources::{write_synthetic, CocoOptions, CocoSplit, Manifest, SynthConfig};
use asl::data::stream::StreamPosition;
use asl::data::transform::{decode_rgb_bytes, MAX_DECODED_BYTES};
use asl::data::{Batch, DataConfig, Loader, LoaderConfig, Shard, SourceKind, Split, SplitData};
use asl::model::Network;
use asl::train::{prepare, Observer, Outcome, RunOptions, TrainConfig, TrainEvent};
use common::coco_mini::coco_mini;
use common::training::{state, text, validate_report, Fixture};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tch::Device;

fn asl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_asl")).current_dir(env!("CARGO_MANIFEST_DIR")).args(args).output().unwrap()
}

/// The synthetic COCO-layout set in `dir/data`, packed into `dir/shards` in shards of about `shard_bytes`.
fn packed_synthetic(dir: &Path, train_images: usize, val_images: usize, shard_bytes: u64) -> PathBuf {
    let data = dir.join("data");
    let config = SynthConfig { train_images, val_images, image_size: 32, classes: 12, ..Default::default() };
    write_synthetic(&data, &config).unwrap();
    let out = dir.join("shards");
    let options = PackOptions { shard_bytes, resize: None, strict: true };
    let mut manifest = Manifest::default();
    let mut classes = Vec::new();
    for split in ["train", "val"] {
        let dataset = CocoSplit::find(&data, split).unwrap().load(&CocoOptions::default()).unwrap();
        manifest.splits.insert(split.into(), pack_split(&dataset, split, &out, &options, &mut |_| {}).unwrap());
        classes = dataset.class_names;
    }
    write_index(&out, &classes, &manifest).unwrap();
    out
}

fn shards_config(path: &Path) -> DataConfig {
    DataConfig { source: SourceKind::Shards, path: Some(path.to_path_buf()), ..DataConfig::default() }
}

fn train_shards(path: &Path) -> SplitData {
    shards_config(path).open_split(Split::Train).unwrap()
}

/// Each sample's key and target row, in the order the loader gives them.
fn keyed_targets(batches: &[Batch], classes: usize) -> Vec<(String, Vec<f32>)> {
    batches
        .iter()
        .flat_map(|b| b.keys.iter().cloned().zip(b.targets[..b.len() * classes].chunks(classes).map(<[f32]>::to_vec)))
        .collect()
}

fn epoch(loader: &Loader, epoch: u64) -> Vec<Batch> {
    loader.epoch(epoch, 0).collect::<Result<_, _>>().unwrap()
}

fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

#[test]
#[cfg_attr(
    not(asl_coco_mini),
    ignore = "needs ../shared/data/coco-mini, the real COCO slice; absent when this was built"
)]
fn packing_coco_mini_keeps_each_keys_labels_and_verify_finds_a_changed_byte() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shards");
    let packed =
        asl(&["pack", "--data", coco_mini().to_str().unwrap(), "--out", out.to_str().unwrap(), "--shard-mb", "4"]);
    assert!(packed.status.success(), "{}", text(&packed));
    assert!(String::from_utf8_lossy(&packed.stdout).contains("train: 208 samples in"), "{}", text(&packed));

    for (split, loaded) in [(Split::Train, "train"), (Split::Val, "val")] {
        let coco = CocoSplit::find(&coco_mini(), loaded).unwrap().load(&CocoOptions::default()).unwrap();
        let data = shards_config(&out).open_split(split).unwrap();
        assert_eq!(data.class_names(), &coco.class_names[..]);
        let config = LoaderConfig { threads: 2, readers: 2, ..LoaderConfig::evaluation(32, 32) };
        let loader = Loader::new(data, config).unwrap();
        let from_shards: BTreeMap<String, Vec<f32>> = keyed_targets(&epoch(&loader, 0), 80).into_iter().collect();
        let mut row = vec![0.0; 80];
        let from_coco: BTreeMap<String, Vec<f32>> = (0..coco.len())
            .map(|i| {
                coco.write_targets(i, &mut row);
                (stem(&coco.path(i)), row.clone())
            })
            .collect();
        assert_eq!(from_shards.len(), coco.len());
        assert_eq!(from_shards, from_coco, "{loaded}: labels per key differ");
    }
    // The image members are the source files' bytes.
    let listing = Command::new("tar").arg("tf").arg(out.join("val-000000.tar")).output().unwrap().stdout;
    let first = String::from_utf8(listing).unwrap().lines().next().unwrap().to_string();
    let member = Command::new("tar").arg("xOf").arg(out.join("val-000000.tar")).arg(&first).output().unwrap();
    assert_eq!(member.stdout, std::fs::read(coco_mini().join("val2017").join(&first)).unwrap());

    // Pre-resized to a short side of 96: re-encoded, the labels as they were.
    let resized = dir.path().join("resized");
    let packed =
        asl(&["pack", "--data", coco_mini().to_str().unwrap(), "--out", resized.to_str().unwrap(), "--resize", "96"]);
    assert!(packed.status.success(), "{}", text(&packed));
    let data = shards_config(&resized).open_split(Split::Val).unwrap();
    let loader = Loader::new(data, LoaderConfig { threads: 2, ..LoaderConfig::evaluation(32, 32) }).unwrap();
    let relabelled: BTreeMap<String, Vec<f32>> = keyed_targets(&epoch(&loader, 0), 80).into_iter().collect();
    let originals = shards_config(&out).open_split(Split::Val).unwrap();
    let loader = Loader::new(originals, LoaderConfig { threads: 2, ..LoaderConfig::evaluation(32, 32) }).unwrap();
    assert_eq!(relabelled, keyed_targets(&epoch(&loader, 0), 80).into_iter().collect());
    let shard = resized.join("val-000000.tar");
    let stored = Command::new("tar").arg("xOf").arg(&shard).arg(&first).output().unwrap().stdout;
    let mut pixels = Vec::new();
    let (width, height) = decode_rgb_bytes(&stored, &mut pixels, MAX_DECODED_BYTES).unwrap();
    let original = image::image_dimensions(coco_mini().join("val2017").join(&first)).unwrap();
    assert_eq!(width.min(height), 96);
    let aspect = |w: u32, h: u32| f64::from(w) / f64::from(h);
    assert!((aspect(width, height) - aspect(original.0, original.1)).abs() < 0.02, "{width}×{height} vs {original:?}");

    let verified = asl(&["pack", "--verify", out.to_str().unwrap()]);
    assert!(verified.status.success(), "{}", text(&verified));
    let shard = out.join("train-000001.tar");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[5000] ^= 1;
    std::fs::write(&shard, bytes).unwrap();
    let verified = asl(&["pack", "--verify", out.to_str().unwrap()]);
    assert!(!verified.status.success());
    assert!(text(&verified).contains(&format!("MISMATCH {}: SHA-256 is", shard.display())), "{}", text(&verified));
}

#[test]
fn two_ranks_of_two_readers_read_every_key_exactly_once_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    // 101 samples in shards of a few each, so that shards split between ranks and readers.
    let shards = packed_synthetic(dir.path(), 101, 1, 12_000);
    let data = train_shards(&shards);
    let SplitData::Shards(set) = &data else { panic!("not shards") };
    assert!(set.shards.len() >= 8, "{} shards", set.shards.len());
    let keys_of = |rank: usize, pad: bool, epoch_number: u64| {
        let config = LoaderConfig {
            batch_size: 8,
            image_size: 16,
            threads: 2,
            readers: 2,
            shuffle_buffer: 16,
            seed: 7,
            shard: Some(Shard { rank, world: 2, pad }),
            ..LoaderConfig::default()
        };
        let batches = epoch(&Loader::new(data.clone(), config).unwrap(), epoch_number);
        assert!(batches.iter().all(|b| b.skipped.is_empty()));
        batches.iter().flat_map(|b| b.keys.clone()).collect::<Vec<String>>()
    };
    let all: Vec<String> = (0..101).map(|i| format!("{i:06}")).collect();
    let mut orders = Vec::new();
    for epoch_number in 0..2 {
        let (a, b) = (keys_of(0, false, epoch_number), keys_of(1, false, epoch_number));
        assert_eq!((a.len(), b.len()), (51, 50));
        let mut union = [a.clone(), b].concat();
        union.sort();
        assert_eq!(union, all, "epoch {epoch_number}: not every key exactly once");
        orders.push(a);
    }
    assert_ne!(orders[0], orders[1], "the order does not change between epochs");
    assert_eq!(keys_of(0, false, 1), orders[1], "the order is not reproducible");

    // Training pads as DistributedSampler does: 51 each, one sample of the epoch read twice.
    let (a, b) = (keys_of(0, true, 0), keys_of(1, true, 0));
    assert_eq!((a.len(), b.len()), (51, 51));
    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
    a.iter().chain(&b).for_each(|k| *counts.entry(k).or_default() += 1);
    assert_eq!(counts.len(), 101);
    assert_eq!(counts.values().filter(|&&c| c == 2).count(), 1);

    // Without a manifest the shards are counted from their headers, and the run's log says so.
    std::fs::remove_file(shards.join("manifest.json")).unwrap();
    let counted = train_shards(&shards);
    let SplitData::Shards(counted_set) = &counted else { panic!("not shards") };
    let counts = |s: &asl::data::sources::ShardSet| s.shards.iter().map(|f| f.samples).collect::<Vec<_>>();
    assert_eq!(counts(counted_set), counts(set));
    assert!(counted.notes()[0].contains("counted by reading their headers"), "{:?}", counted.notes());
}

/// Synthetic sample keys come from ids in the annotation; the test above relies on their form.
#[test]
fn synthetic_keys_are_zero_padded_ids() {
    let dir = tempfile::tempdir().unwrap();
    let shards = packed_synthetic(dir.path(), 3, 1, 1 << 20);
    let listing = Command::new("tar").arg("tf").arg(shards.join("train-000000.tar")).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout),
        "000000.png\n000000.json\n000001.png\n000001.json\n000002.png\n000002.json\n"
    );
}

#[test]
fn a_loader_resumed_from_a_saved_position_gives_the_same_batches_as_one_that_ran_on() {
    let dir = tempfile::tempdir().unwrap();
    let shards = packed_synthetic(dir.path(), 90, 1, 15_000);
    let data = train_shards(&shards);
    let config = LoaderConfig {
        batch_size: 8,
        image_size: 16,
        threads: 2,
        readers: 3,
        shuffle_buffer: 20,
        seed: 3,
        shard: Some(Shard { rank: 1, world: 2, pad: true }),
        ..LoaderConfig::default()
    };
    let loader = Loader::new(data.clone(), config).unwrap();
    let whole = epoch(&loader, 2);
    assert_eq!(whole.len(), 6);
    for stop in [1, 3] {
        let saved: StreamPosition = whole[stop - 1].resume.clone().unwrap();
        assert!(!saved.buffered.is_empty(), "nothing was waiting in the shuffle buffer");
        let saved: StreamPosition = serde_json::from_str(&serde_json::to_string(&saved).unwrap()).unwrap();
        let fresh = Loader::new(data.clone(), config).unwrap();
        let other = StreamPosition { samples: saved.samples + 1, ..saved.clone() };
        let error = fresh.resume_epoch(2, stop, Some(&other)).find_map(Result::err).unwrap().to_string();
        assert!(error.contains("were the shards changed?"), "{error}");
        let rest: Vec<Batch> = fresh.resume_epoch(2, stop, Some(&saved)).collect::<Result<_, _>>().unwrap();
        // Without a saved position, the batches before are read again and dropped: the same batches too.
        let replayed: Vec<Batch> = fresh.epoch(2, stop).collect::<Result<_, _>>().unwrap();
        for tail in [&rest, &replayed] {
            assert_eq!(tail.len(), whole.len() - stop);
            for (a, b) in tail.iter().zip(&whole[stop..]) {
                assert_eq!((&a.keys, &a.indices, a.position), (&b.keys, &b.indices, b.position));
                assert!(a.images == b.images && a.targets == b.targets, "batch {} differs", b.position);
            }
        }
    }
}

/// Stops the run after its `stop_after`-th batch, as a signal would.
struct StopAfter {
    batches: usize,
    stop_after: usize,
    stop: Arc<AtomicBool>,
}

impl Observer for StopAfter {
    fn on_event(&mut self, event: &TrainEvent<'_>) {
        if let TrainEvent::BatchTrained = event {
            self.batches += 1;
            if self.batches == self.stop_after {
                self.stop.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// `asl pack` of the fixture's synthetic data into shards of `shard_mb`, beside it.
fn pack_fixture(f: &Fixture, shard_mb: &str) -> PathBuf {
    let (data, shards) = (f.dir.path().join("data"), f.dir.path().join("shards"));
    let packed =
        asl(&["pack", "--data", data.to_str().unwrap(), "--out", shards.to_str().unwrap(), "--shard-mb", shard_mb]);
    assert!(packed.status.success(), "{}", text(&packed));
    shards
}

fn model_tensors(checkpoint: &Path) -> Vec<(String, tch::Tensor)> {
    ["model.pt", "ema.pt"]
        .iter()
        .flat_map(|file| Network::load(&checkpoint.join(file), Device::Cpu).unwrap().named_tensors().unwrap())
        .collect()
}

#[test]
fn training_stopped_mid_epoch_resumes_bit_for_bit_from_the_saved_reader_positions() {
    let f = Fixture::with_images(96, 16);
    let shards = pack_fixture(&f, "0.01");
    let mut sets = f.library_sets(&["data.source=shards", "data.shuffle_buffer=24", "data.readers=2"]);
    sets.retain(|s| !s.starts_with("data.path="));
    sets.push(format!("data.path={}", shards.display()));
    let config = TrainConfig::load(Path::new("configs/demo.yaml"), &sets).unwrap();

    let whole = f.runs().join("whole");
    let options = RunOptions { run_dir: whole.clone(), ..RunOptions::default() };
    let mut trainer = prepare(config.clone(), options, &mut ()).unwrap();
    assert!(matches!(trainer.run(&mut ()).unwrap(), Outcome::Finished { .. }));

    // 96 samples in batches of 16: 6 an epoch; a stop asked for during epoch 2.
    let stopped = f.runs().join("stopped");
    let stop = Arc::new(AtomicBool::new(false));
    let mut observer = StopAfter { batches: 0, stop_after: 8, stop: Arc::clone(&stop) };
    let options = RunOptions { run_dir: stopped.clone(), stop, ..RunOptions::default() };
    let mut trainer = prepare(config.clone(), options, &mut observer).unwrap();
    assert!(matches!(trainer.run(&mut observer).unwrap(), Outcome::Interrupted { .. }));
    drop(trainer);
    let saved = state(&stopped);
    assert!(saved.epoch == 1 && (1..6).contains(&saved.batch_in_epoch), "not mid-epoch 2: {saved:?}");
    assert_eq!(saved.stream.len(), 1, "no reader positions in the checkpoint");
    assert!(!saved.stream[0].buffered.is_empty() && saved.stream[0].readers.len() == 2, "{:?}", saved.stream[0]);

    let options = RunOptions {
        run_dir: stopped.clone(),
        resume: Some(stopped.join("checkpoints/last")),
        ..RunOptions::default()
    };
    let mut trainer = prepare(config, options, &mut ()).unwrap();
    assert!(matches!(trainer.run(&mut ()).unwrap(), Outcome::Finished { .. }));
    let (a, b) = (model_tensors(&whole.join("checkpoints/last")), model_tensors(&stopped.join("checkpoints/last")));
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x.equal(y), "{name} differs after the resume");
    }
    let (x, y) = (state(&whole), state(&stopped));
    assert_eq!(x.history[1].train_loss.to_bits(), y.history[1].train_loss.to_bits());
    assert!(y.stream.is_empty(), "an epoch-end checkpoint keeps reader positions");
}

/// A tar member: name and bytes.
fn append(builder: &mut tar::Builder<Vec<u8>>, name: &str, bytes: &[u8]) {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, name, bytes).unwrap();
}

#[test]
fn a_damaged_shard_is_read_past_with_each_lost_sample_named_and_strict_stops_at_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let shards = packed_synthetic(dir.path(), 6, 1, 1 << 20);
    let good = shards.join("train-000000.tar");
    let png = Command::new("tar").arg("xOf").arg(&good).arg("000001.png").output().unwrap().stdout;
    let classes = std::fs::read_to_string(shards.join("classes.txt")).unwrap();
    let class = classes.lines().next().unwrap();
    let labels = format!(r#"{{"labels": ["{class}"]}}"#);
    let mut builder = tar::Builder::new(Vec::new());
    append(&mut builder, "a.png", &png);
    append(&mut builder, "a.json", labels.as_bytes());
    append(&mut builder, "b.png", b"\x89PNG\r\n\x1a\n not really a PNG");
    append(&mut builder, "b.json", labels.as_bytes());
    append(&mut builder, "c.png", &png);
    append(&mut builder, "d.png", &png);
    append(&mut builder, "d.json", br#"{"labels": ["unicorn"]}"#);
    append(&mut builder, "e.png", &png);
    append(&mut builder, "e.json", labels.as_bytes());
    append(&mut builder, "f.png", &png);
    append(&mut builder, "f.json", labels.as_bytes());
    let bytes = builder.into_inner().unwrap();
    // Cut in the middle of f.png: f and the two samples the manifest promises after it are lost.
    let cut = bytes.len() - 1024 - 512 - 512 - png.len() / 2;
    let damaged = shards.join("train-000001.tar");
    std::fs::write(&damaged, &bytes[..cut]).unwrap();
    let mut manifest = Manifest::read(&shards.join("manifest.json")).unwrap();
    let train = manifest.splits.get_mut("train").unwrap();
    train.shards.push(asl::data::sources::ShardEntry {
        name: "train-000001.tar".into(),
        samples: 8,
        bytes: 0,
        sha256: String::new(),
    });
    train.samples += 8;
    std::fs::write(shards.join("manifest.json"), serde_json::to_string(&manifest).unwrap()).unwrap();

    let config = LoaderConfig { threads: 2, readers: 1, ..LoaderConfig::evaluation(4, 16) };
    let loader = Loader::new(train_shards(&shards), config).unwrap();
    let batches = epoch(&loader, 0);
    assert_eq!(batches.iter().map(Batch::len).sum::<usize>(), 6 + 2, "the good samples, a and e, are not all there");
    let skipped: Vec<(String, String)> = batches
        .iter()
        .flat_map(|b| &b.skipped)
        .map(|s| (s.path.strip_prefix(&shards).unwrap().display().to_string(), s.reason.clone()))
        .collect();
    assert_eq!(skipped.len(), 6, "{skipped:#?}");
    assert_eq!(skipped[0].0, "train-000001.tar/b");
    assert!(skipped[0].1.starts_with("cannot decode the image"), "{skipped:#?}");
    assert_eq!(skipped[1], ("train-000001.tar/c".into(), "no labels member (.json or .cls)".into()));
    assert_eq!(skipped[2], ("train-000001.tar/d".into(), "label `unicorn` is not in the classes".into()));
    for (number, (path, reason)) in (6..=8).zip(&skipped[3..]) {
        assert_eq!(path, "train-000001.tar");
        let lost = format!("sample {number} lost: {} is damaged at byte", damaged.display());
        assert!(reason.starts_with(&lost), "{reason}");
        // The cut member's header claims more bytes than the file holds: refused before it is read.
        assert!(reason.contains("after sample e: member f.png claims"), "{reason}");
        assert!(reason.ends_with("(read 4 times)"), "retried before it was given up: {reason}");
    }

    let strict = Loader::new(train_shards(&shards), LoaderConfig { strict: true, ..config }).unwrap();
    let error = strict.epoch(0, 0).find_map(Result::err).unwrap().to_string();
    assert!(error.contains("train-000001.tar/b") && error.contains("cannot decode the image"), "{error}");

    // A shard the pattern names but that is not there stops the run before it starts.
    let pattern = shards.join("train-{000000..000002}.tar");
    let error = shards_config(&pattern).open_split(Split::Train).unwrap_err().to_string();
    let missing = shards.join("train-000002.tar");
    assert_eq!(error, format!("shard {} (from the pattern {}) does not exist", missing.display(), pattern.display()));
    // A pattern names one split: validation does not silently read the training shards.
    let training = shards.join("train-{000000..000001}.tar");
    assert!(shards_config(&training).open_split(Split::Train).is_ok());
    let error = shards_config(&training).open_split(Split::Val).unwrap_err().to_string();
    assert!(error.starts_with("invalid data option `data.val_path`"), "{error}");
}

/// `torchrun` with 2 workers training run `name` of `f` from `shards` for 3 epochs.
fn torchrun_on_shards(f: &Fixture, shards: &Path, name: &str) -> Command {
    let torchrun = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/torchrun");
    let mut command = Command::new(&torchrun);
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("OMP_NUM_THREADS", "1")
        .args(["--standalone", "--nproc-per-node=2", "--no-python", env!("CARGO_BIN_EXE_asl"), "train"])
        .args(["--config", "configs/demo.yaml", "--no-progress", "--auto-resume", "--runs"])
        .arg(f.runs())
        .args(["--data", shards.to_str().unwrap()]);
    let run = ["data.source=shards", "train.epochs=3", "schedule.scheduled_epochs=3", "data.val_batch_size=16"];
    for set in f.sets(name).iter().filter(|s| !s.starts_with("data.path=")).map(String::as_str).chain(run) {
        command.args(["--set", set]);
    }
    command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    command
}

#[test]
fn two_torchrun_ranks_train_on_shards_validate_from_shards_and_resume_a_preempted_epoch_bit_for_bit() {
    // 384 samples in global batches of 16: 24 steps an epoch, long enough for a signal to land inside one.
    let f = Fixture::with_images(384, 40);
    let shards = pack_fixture(&f, "0.02");
    let output = torchrun_on_shards(&f, &shards, "reference").output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("384 samples in") && stdout.contains("2 processes"), "{stdout}");
    let reference = f.runs().join("reference");
    let history = state(&reference).history;
    assert_eq!(history.len(), 3);
    // The validation the two ranks gathered is the whole split's: one process scoring it alone agrees.
    // No --source: the checkpoint's config says shards; --split says which.
    let report = validate_report(&reference.join("checkpoints/last"), &shards, &["--split", "val"]);
    let origins = report["data"].as_str().unwrap();
    assert!(
        origins.starts_with("data: source shards (the checkpoint's ") && origins.contains("split val (--split)"),
        "{origins}"
    );
    let alone = report["average_precision"]["map"].as_f64().unwrap();
    assert!((alone - history[2].map.unwrap()).abs() < 1e-4, "validate {alone}, training {:?}", history[2].map);
    assert_eq!(report["images"].as_u64(), Some(40));

    // SIGTERM to both workers at step 30, inside epoch 2 (24 steps an epoch): both ranks stop after step 31
    // and checkpoint their readers' positions, and the same command continues to the reference's bits.
    let stopped = torchrun_on_shards(&f, &shards, "preempted").env("ASL_FAULT", "SIGTERM@step=30").output().unwrap();
    assert!(text(&stopped).contains("stopped on request"), "{}", text(&stopped));
    let at_stop = state(&f.runs().join("preempted"));
    assert_eq!((at_stop.epoch, at_stop.batch_in_epoch, at_stop.optimizer_step), (1, 7, 31), "{at_stop:?}");
    assert_eq!(at_stop.stream.len(), 2, "one position per rank");
    assert_ne!(at_stop.stream[0], at_stop.stream[1]);
    let resumed = torchrun_on_shards(&f, &shards, "preempted").output().unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed));
    let (a, b) = (
        model_tensors(&reference.join("checkpoints/last")),
        model_tensors(&f.runs().join("preempted/checkpoints/last")),
    );
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x.equal(y), "{name} differs after the preemption");
    }
}
