//! Batches for the device: rayon decodes and augments each batch into
//! reused u8 NHWC buffers while a background thread keeps up to
//! `prefetch` batches ready, from image files or from streamed tar shards.
//! [`Batch`] takes them to the device.

use super::batch::{Batch, Buffers, Skipped};
use super::dataset::Dataset;
use super::error::{DataError, Result};
use super::rng::{sample_rng, Stream};
use super::sources::ShardSet;
use super::split::SplitData;
use super::stream::{EpochStream, StreamItem, StreamLayout, StreamPosition};
use super::transform::{decode_rgb_from, decode_rgb_into, resize_into, AugmentConfig, DecodeBuffers, Resizer, RgbView};
use crate::distributed::EpochShare;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub image_size: u32,
    pub shuffle: bool,
    pub drop_last: bool,
    pub augment: AugmentConfig,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
    /// Decode threads; 0 uses every core.
    pub threads: usize,
    /// Fail on an unreadable image instead of skipping it.
    pub strict: bool,
    pub seed: u64,
    /// This process's share of each epoch in a multi-process run.
    pub shard: Option<Shard>,
    /// Tar shards: reader threads per process. Part of the sample order.
    pub readers: usize,
    /// Tar shards: samples held in the shuffle buffer (when shuffling).
    pub shuffle_buffer: usize,
}

/// Rank `rank` of `world` reads its share of each epoch
/// ([`EpochShare`](crate::distributed::EpochShare)): with `pad`, every rank
/// gets as many samples (training); without, the shares cover the split
/// exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
    pub pad: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            image_size: 224,
            shuffle: true,
            drop_last: false,
            augment: AugmentConfig::default(),
            prefetch: 2,
            threads: 0,
            strict: false,
            seed: 0,
            shard: None,
            readers: 2,
            shuffle_buffer: 1000,
        }
    }
}

impl LoaderConfig {
    /// Deterministic order and no augmentation, for validation and inference.
    pub fn evaluation(batch_size: usize, image_size: u32) -> Self {
        Self { batch_size, image_size, shuffle: false, augment: AugmentConfig::none(), ..Self::default() }
    }
}

pub struct Loader {
    data: SplitData,
    config: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
}

impl Loader {
    pub fn new(data: impl Into<SplitData>, config: LoaderConfig) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(DataError::Option { name: "batch_size", message: "must be at least 1".into() });
        }
        if config.image_size == 0 {
            return Err(DataError::Option { name: "image_size", message: "must be at least 1".into() });
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .thread_name(|i| format!("asl-decode-{i}"))
            .build()
            .map_err(|e| DataError::Option { name: "threads", message: e.to_string() })?;
        Ok(Self { data: data.into(), config, pool: Arc::new(pool) })
    }

    /// Whether the batches' targets hold unknown labels (-1) besides 1 and 0.
    pub fn has_unknown_labels(&self) -> bool {
        self.data.has_unknown_labels()
    }

    pub fn data(&self) -> &SplitData {
        &self.data
    }

    pub fn num_classes(&self) -> usize {
        self.data.num_classes()
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.samples_per_epoch(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The sample order of `epoch` for image files: a seeded shuffle, or
    /// dataset order. With a shard, this process's share of it: the same
    /// shuffle on every rank, then its strided positions.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.data.len()).collect();
        if self.config.shuffle {
            order.shuffle(&mut sample_rng(Stream::Shuffle, self.config.seed, epoch, 0));
        }
        match self.config.shard {
            Some(_) => self.share().strided().map(|p| order[p as usize]).collect(),
            None => order,
        }
    }

    /// This process's share of each epoch: the one rule for image files,
    /// for shards (`asl::data::stream` lays them out by it) and for resumed
    /// positions.
    pub fn share(&self) -> EpochShare {
        let total = self.data.len() as u64;
        match self.config.shard {
            Some(Shard { rank, world, pad }) => EpochShare::new(total, rank, world, pad),
            None => EpochShare::alone(total),
        }
    }

    /// Samples this process reads per epoch.
    pub fn samples_per_epoch(&self) -> usize {
        self.share().len() as usize
    }

    /// How this process streams shards.
    fn stream_layout(&self) -> StreamLayout {
        let shard = self.config.shard.unwrap_or(Shard { rank: 0, world: 1, pad: false });
        StreamLayout {
            seed: self.config.seed,
            shuffle: self.config.shuffle,
            rank: shard.rank,
            world: shard.world,
            readers: self.config.readers,
            pad: shard.pad,
            shuffle_buffer: if self.config.shuffle { self.config.shuffle_buffer } else { 0 },
        }
    }

    /// Iterates the batches of `epoch`, starting at batch `start` (for an
    /// exact resume mid-epoch). Work starts at once in the background.
    pub fn epoch(&self, epoch: u64, start: usize) -> EpochIter {
        self.resume_epoch(epoch, start, None)
    }

    /// [`epoch`](Self::epoch), shards continuing from the position a
    /// checkpoint saved after batch `start - 1` (`Batch::resume`).
    /// Without one, the samples before `start` are read again and dropped.
    pub fn resume_epoch(&self, epoch: u64, start: usize, position: Option<&StreamPosition>) -> EpochIter {
        let batches = self.batches_per_epoch();
        let samples = match &self.data {
            SplitData::Files(dataset) => {
                Ok(EpochSamples::Files { dataset: Arc::clone(dataset), order: self.order(epoch) })
            }
            SplitData::Shards(set) => EpochStream::start(set, self.stream_layout(), epoch, position)
                .map(|stream| EpochSamples::Shards { set: Arc::clone(set), stream, skip: position.is_none() }),
        };
        let (sender, receiver) = sync_channel(self.config.prefetch.max(1));
        let (recycle_sender, recycle_receiver) = std::sync::mpsc::channel();
        let stopped = |reason: String| DataError::LoaderStopped { received: 0, expected: batches - start, reason };
        let thread = samples.map_err(|e| stopped(e.to_string())).and_then(|samples| {
            let producer = Producer {
                config: self.config,
                pool: Arc::clone(&self.pool),
                classes: self.data.num_classes(),
                epoch,
                recycle: recycle_sender,
                reuse: Mutex::new(recycle_receiver),
            };
            std::thread::Builder::new()
                .name("asl-loader".into())
                .spawn(move || producer.run(samples, start, batches, sender))
                .map_err(|e| stopped(e.to_string()))
        });
        let (thread, failed) = match thread {
            Ok(handle) => (Some(handle), None),
            Err(error) => (None, Some(error)),
        };
        EpochIter { receiver, thread, failed, expected: batches.saturating_sub(start), received: 0, skipped: 0 }
    }
}

/// The batches of one epoch. Dropping it stops the background work. An
/// epoch that ends before all its batches arrived (the loader thread died)
/// ends with an error, never silently short.
pub struct EpochIter {
    receiver: Receiver<Result<Batch>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// An error to yield next: the thread could not start.
    failed: Option<DataError>,
    expected: usize,
    received: usize,
    skipped: usize,
}

impl EpochIter {
    /// Images skipped so far in this epoch.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Why the batches stopped early: the loader thread's panic, if any.
    fn stopped_early(&mut self) -> DataError {
        let reason = match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Err(panic)) => format!("the loader thread panicked: {}", panic_message(panic.as_ref())),
            _ => "the loader thread ended".to_string(),
        };
        DataError::LoaderStopped { received: self.received, expected: self.expected, reason }
    }
}

impl Iterator for EpochIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(error) = self.failed.take() {
            self.expected = self.received;
            return Some(Err(error));
        }
        let Ok(item) = self.receiver.recv() else {
            if self.received < self.expected {
                let error = self.stopped_early();
                self.expected = self.received;
                return Some(Err(error));
            }
            return None;
        };
        match &item {
            Ok(batch) => {
                self.received += 1;
                self.skipped += batch.skipped.len();
            }
            // The producer stops after an error; nothing more is owed.
            Err(_) => self.expected = self.received,
        }
        Some(item)
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// The samples of one epoch, as the producer thread takes them.
enum EpochSamples {
    Files {
        dataset: Arc<Dataset>,
        order: Vec<usize>,
    },
    /// `skip`: a resume without a saved position reads the batches before it again.
    Shards {
        set: Arc<ShardSet>,
        stream: EpochStream,
        skip: bool,
    },
}

/// One sample of a batch, before decoding.
enum Slot<'a> {
    File { dataset: &'a Dataset, index: usize },
    Shard { set: &'a ShardSet, item: StreamItem },
}

impl Slot<'_> {
    /// Its id in the batch: the dataset index, or the position in the epoch.
    fn id(&self) -> usize {
        match self {
            Slot::File { index, .. } => *index,
            Slot::Shard { item, .. } => item.position as usize,
        }
    }

    fn path(&self) -> PathBuf {
        match self {
            Slot::File { dataset, index } => dataset.path(*index),
            Slot::Shard { set, item } => set.sample_path(item.shard, &item.key),
        }
    }
}

struct Producer {
    config: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
    classes: usize,
    epoch: u64,
    recycle: Sender<Buffers>,
    reuse: Mutex<Receiver<Buffers>>,
}

thread_local! {
    /// Per worker: decode buffers, the resizer and augmentation scratch, reused across samples.
    static WORKSPACE: RefCell<(DecodeBuffers, Resizer, Vec<u8>)> = RefCell::new(Default::default());
}

impl Producer {
    fn run(self, mut samples: EpochSamples, start: usize, batches: usize, sender: SyncSender<Result<Batch>>) {
        let b = self.config.batch_size;
        if let EpochSamples::Shards { stream, skip: true, .. } = &mut samples {
            (0..start * b).for_each(|_| drop(stream.next_item()));
        }
        for position in start..batches {
            #[cfg(test)]
            hooks::before_batch(&samples, position);
            let batch = match &mut samples {
                EpochSamples::Files { dataset, order } => {
                    let indices = &order[position * b..((position + 1) * b).min(order.len())];
                    let slots = indices.iter().map(|&index| Slot::File { dataset, index }).collect();
                    self.build(slots, position, None)
                }
                EpochSamples::Shards { set, stream, .. } => {
                    let slots = std::iter::from_fn(|| stream.next_item()).take(b).map(|item| Slot::Shard { set, item });
                    let slots: Vec<Slot> = slots.collect();
                    self.build(slots, position, Some(stream.position()))
                }
            };
            let failed = batch.is_err();
            if sender.send(batch).is_err() || failed {
                return;
            }
        }
    }

    fn build(&self, slots: Vec<Slot>, position: usize, resume: Option<StreamPosition>) -> Result<Batch> {
        let b = self.config.batch_size;
        let size = self.config.image_size as usize;
        let (pixels_per_image, classes) = (size * size * 3, self.classes);
        let (mut images, mut targets) = self.reuse.lock().map(|r| r.try_recv().ok()).ok().flatten().unwrap_or_default();
        images.resize(b * pixels_per_image, 0);
        targets.resize(b * classes, 0.0);
        let outcomes: Vec<Option<Skipped>> = self.pool.install(|| {
            images
                .par_chunks_mut(pixels_per_image)
                .zip(targets.par_chunks_mut(classes))
                .zip(slots.par_iter())
                .map(|((pixels, row), slot)| {
                    // A decoder bug on one file costs that file, not the epoch.
                    let loaded =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.load(slot, pixels, row)));
                    let reason = match loaded {
                        Ok(Ok(())) => return None,
                        Ok(Err(reason)) => reason,
                        Err(panic) => format!("decoding panicked: {}", panic_message(panic.as_ref())),
                    };
                    Some(Skipped { index: slot.id(), path: slot.path(), reason })
                })
                .collect()
        });
        if self.config.strict {
            if let Some(skipped) = outcomes.iter().flatten().next() {
                return Err(DataError::Decode { path: skipped.path.clone(), message: skipped.reason.clone() });
            }
        }
        let (key_shards, keys) = (slots.iter().zip(&outcomes))
            .filter_map(|(slot, outcome)| match slot {
                Slot::Shard { item, .. } if outcome.is_none() => Some((item.shard, item.key.clone())),
                _ => None,
            })
            .unzip();
        let ids: Vec<usize> = slots.iter().map(Slot::id).collect();
        let (kept, skipped) = compact(&mut images, &mut targets, &ids, outcomes, pixels_per_image, classes);
        Ok(Batch {
            images,
            targets,
            indices: kept,
            keys,
            key_shards,
            resume,
            skipped,
            position,
            image_size: size,
            classes,
            recycle: Some(self.recycle.clone()),
        })
    }

    /// Writes a slot's targets and decodes, resizes and augments its image into `pixels`.
    fn load(&self, slot: &Slot, pixels: &mut [u8], row: &mut [f32]) -> std::result::Result<(), String> {
        let size = self.config.image_size;
        WORKSPACE.with(|workspace| {
            let (buffers, resizer, scratch) = &mut *workspace.borrow_mut();
            let decoded: RgbView = match slot {
                Slot::File { dataset, index } => {
                    dataset.write_targets(*index, row);
                    let path = dataset.path(*index);
                    #[cfg(test)]
                    hooks::before_decode(&path);
                    decode_rgb_into(&path, buffers).map_err(|e| e.to_string())?
                }
                Slot::Shard { set, item } => {
                    let raw = item.content.as_ref().map_err(Clone::clone)?;
                    let (image, mut sample) = raw.parse(set)?;
                    if let Some(overrides) = &set.overrides {
                        overrides
                            .apply_to_sample(&set.sample_path(item.shard, &raw.key).display().to_string(), &mut sample);
                    }
                    sample.write_targets(set.unlisted, row);
                    decode_rgb_from(image, buffers).map_err(|message| format!("cannot decode the image: {message}"))?
                }
            };
            resize_into(decoded, size, pixels, resizer);
            let mut rng = sample_rng(Stream::Augment, self.config.seed, self.epoch, slot.id() as u64);
            self.config.augment.apply(pixels, size as usize, scratch, &mut rng);
            Ok(())
        })
    }
}

/// Moves the samples that loaded to the front of the buffers, keeping order.
fn compact(
    images: &mut [u8],
    targets: &mut [f32],
    indices: &[usize],
    outcomes: Vec<Option<Skipped>>,
    pixels_per_image: usize,
    classes: usize,
) -> (Vec<usize>, Vec<Skipped>) {
    let (mut kept, mut skipped) = (Vec::with_capacity(indices.len()), Vec::new());
    for (slot, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Some(s) => skipped.push(s),
            None => {
                let to = kept.len();
                if to != slot {
                    images.copy_within(slot * pixels_per_image..(slot + 1) * pixels_per_image, to * pixels_per_image);
                    targets.copy_within(slot * classes..(slot + 1) * classes, to * classes);
                }
                kept.push(indices[slot]);
            }
        }
    }
    (kept, skipped)
}

/// Panics injected by this module's tests, to check that the loader turns
/// them into a skipped image or an error instead of a short epoch.
#[cfg(test)]
mod hooks {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    pub static PANIC_DECODING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    /// (first sample of the dataset, batch position).
    pub static PANIC_AT_BATCH: Mutex<Vec<(PathBuf, usize)>> = Mutex::new(Vec::new());

    pub fn before_decode(path: &Path) {
        if PANIC_DECODING.lock().unwrap().iter().any(|p| p == path) {
            panic!("injected decoder panic");
        }
    }

    pub fn before_batch(samples: &super::EpochSamples, position: usize) {
        let super::EpochSamples::Files { dataset, .. } = samples else { return };
        let first = dataset.path(0);
        if PANIC_AT_BATCH.lock().unwrap().iter().any(|(p, b)| *p == first && *b == position) {
            panic!("injected loader panic at batch {position}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sources::{write_synthetic, CocoOptions, CocoSplit, SynthConfig};

    fn synthetic(dir: &std::path::Path) -> Arc<Dataset> {
        write_synthetic(dir, &SynthConfig { train_images: 40, val_images: 1, ..Default::default() }).unwrap();
        Arc::new(CocoSplit::find(dir, "train").unwrap().load(&CocoOptions::default()).unwrap())
    }

    fn loader(dataset: &Arc<Dataset>) -> Loader {
        let config = LoaderConfig { batch_size: 8, image_size: 32, threads: 2, ..LoaderConfig::default() };
        Loader::new(Arc::clone(dataset), config).unwrap()
    }

    #[test]
    fn a_panicking_decode_skips_that_image_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let dataset = synthetic(dir.path());
        let victim = dataset.path(3);
        hooks::PANIC_DECODING.lock().unwrap().push(victim.clone());
        let batches: Vec<Batch> = loader(&dataset).epoch(0, 0).collect::<Result<_>>().unwrap();
        let skipped: Vec<&Skipped> = batches.iter().flat_map(|b| &b.skipped).collect();
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].path, victim);
        assert_eq!(skipped[0].reason, "decoding panicked: injected decoder panic");
        assert_eq!(batches.iter().map(Batch::len).sum::<usize>(), 39);
    }

    #[test]
    fn a_dead_loader_thread_ends_the_epoch_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let dataset = synthetic(dir.path());
        hooks::PANIC_AT_BATCH.lock().unwrap().push((dataset.path(0), 2));
        let results: Vec<Result<Batch>> = loader(&dataset).epoch(0, 0).collect();
        assert_eq!(results.len(), 3);
        assert!(results[..2].iter().all(Result::is_ok));
        let message = results[2].as_ref().err().unwrap().to_string();
        assert_eq!(
            message,
            "the loader delivered 2 of 5 batches of this epoch: the loader thread panicked: injected loader panic at batch 2"
        );
    }
}
