//! Batches for the device: rayon decodes and augments each batch into
//! reused u8 NHWC buffers while a background thread keeps up to
//! `prefetch` batches ready. Conversion to float NCHW in [0, 1] happens on
//! the target device, which moves 4× fewer bytes than shipping floats.

use super::dataset::Dataset;
use super::error::{DataError, Result};
use super::normalize::Normalization;
use super::rng::{sample_rng, Stream};
use super::transform::{decode_rgb_into, resize_into, AugmentConfig, DecodeBuffers, Resizer};
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use tch::{Device, Kind, Tensor};

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
}

/// Rank `rank` of `world` reads its share of each epoch's order
/// (`asl::distributed::shard`): with `pad`, every rank gets as many
/// samples (training); without, the shares cover the split exactly once.
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
        }
    }
}

impl LoaderConfig {
    /// Deterministic order and no augmentation, for validation and inference.
    pub fn evaluation(batch_size: usize, image_size: u32) -> Self {
        Self { batch_size, image_size, shuffle: false, augment: AugmentConfig::none(), ..Self::default() }
    }
}

/// An image the loader had to leave out of its batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// Dataset index of the sample.
    pub index: usize,
    pub path: PathBuf,
    pub reason: String,
}

type Buffers = (Vec<u8>, Vec<f32>);

/// One batch in host memory. Dropping it hands its buffers back to the loader.
pub struct Batch {
    /// `[len, S, S, 3]` RGB.
    pub images: Vec<u8>,
    /// `[len, K]`: 1 positive, 0 negative, -1 unknown.
    pub targets: Vec<f32>,
    /// Dataset index of each sample in the batch.
    pub indices: Vec<usize>,
    /// Samples of this batch that could not be read (non-strict mode).
    pub skipped: Vec<Skipped>,
    /// Position of the batch within its epoch.
    pub position: usize,
    image_size: usize,
    classes: usize,
    recycle: Option<Sender<Buffers>>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// `[N, 3, S, S]` float on `device`, scaled to [0, 1] and normalised,
    /// channels-last in memory: u8 NHWC travels (4× fewer bytes than
    /// floats) and is permuted there.
    pub fn images_tensor(&self, device: Device, normalization: &Normalization) -> Result<Tensor> {
        let s = self.image_size as i64;
        let host = Tensor::f_from_slice(&self.images[..self.len() * self.image_size * self.image_size * 3])?;
        let on_device = to_device(&host.f_view([self.len() as i64, s, s, 3])?, device)?;
        normalization.apply(on_device.f_to_kind(Kind::Float)?.f_div_scalar(255.0)?.f_permute([0, 3, 1, 2])?)
    }

    /// `[N, K]` float targets on `device` (1 / 0 / -1 unknown).
    pub fn targets_tensor(&self, device: Device) -> Result<Tensor> {
        let host = Tensor::f_from_slice(&self.targets[..self.len() * self.classes])?;
        to_device(&host.f_view([self.len() as i64, self.classes as i64])?, device)
    }
}

/// To a GPU through pinned memory without waiting for the copy (the host
/// buffer is a pinned copy, so the batch's own buffers can be reused at
/// once); on the CPU, as it is.
fn to_device(host: &Tensor, device: Device) -> Result<Tensor> {
    if !device.is_cuda() {
        return Ok(host.f_to_device(device)?);
    }
    Ok(host.f_pin_memory(device)?.f_to_device_(device, host.kind(), true, false)?)
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(recycle) = self.recycle.take() {
            let _ = recycle.send((std::mem::take(&mut self.images), std::mem::take(&mut self.targets)));
        }
    }
}

pub struct Loader {
    dataset: Arc<Dataset>,
    config: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
    /// Whether any target row holds an unknown label (-1).
    partial: bool,
}

impl Loader {
    pub fn new(dataset: Arc<Dataset>, config: LoaderConfig) -> Result<Self> {
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
        let partial = dataset.has_unknown_labels();
        Ok(Self { dataset, config, pool: Arc::new(pool), partial })
    }

    /// Whether the batches' targets hold unknown labels (-1) besides 1 and 0.
    pub fn has_unknown_labels(&self) -> bool {
        self.partial
    }

    pub fn dataset(&self) -> &Dataset {
        &self.dataset
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

    /// The sample order of `epoch`: a seeded shuffle, or dataset order.
    /// With a shard, this process's share of it: the same shuffle on every
    /// rank, then `asl::distributed::shard`'s rule.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.config.shuffle {
            order.shuffle(&mut sample_rng(Stream::Shuffle, self.config.seed, epoch, 0));
        }
        match self.config.shard {
            Some(Shard { rank, world, pad }) => crate::distributed::shard(&order, rank, world, pad),
            None => order,
        }
    }

    /// Samples this process reads per epoch.
    pub fn samples_per_epoch(&self) -> usize {
        let n = self.dataset.len();
        match self.config.shard {
            Some(Shard { rank, world, pad: true }) if world > 0 && rank < world => n.div_ceil(world),
            Some(Shard { rank, world, pad: false }) if world > 0 && rank < world => (n + world - 1 - rank) / world,
            _ => n,
        }
    }

    /// Iterates the batches of `epoch`, starting at batch `start` (for an
    /// exact resume mid-epoch). Work starts at once in the background.
    pub fn epoch(&self, epoch: u64, start: usize) -> EpochIter {
        let order = self.order(epoch);
        let (sender, receiver) = sync_channel(self.config.prefetch.max(1));
        let (recycle_sender, recycle_receiver) = std::sync::mpsc::channel();
        let producer = Producer {
            dataset: Arc::clone(&self.dataset),
            config: self.config,
            pool: Arc::clone(&self.pool),
            order,
            epoch,
            recycle: recycle_sender,
            reuse: Mutex::new(recycle_receiver),
        };
        let batches = self.batches_per_epoch();
        let thread = std::thread::Builder::new()
            .name("asl-loader".into())
            .spawn(move || producer.run(start, batches, sender))
            .map_err(|e| DataError::LoaderStopped { received: 0, expected: batches - start, reason: e.to_string() });
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

struct Producer {
    dataset: Arc<Dataset>,
    config: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
    order: Vec<usize>,
    epoch: u64,
    recycle: Sender<Buffers>,
    reuse: Mutex<Receiver<Buffers>>,
}

thread_local! {
    /// Per worker: decode buffers, the resizer and augmentation scratch, reused across samples.
    static WORKSPACE: RefCell<(DecodeBuffers, Resizer, Vec<u8>)> = RefCell::new(Default::default());
}

impl Producer {
    fn run(self, start: usize, batches: usize, sender: SyncSender<Result<Batch>>) {
        for position in start..batches {
            #[cfg(test)]
            hooks::before_batch(&self.dataset, position);
            let batch = self.build(position);
            let failed = batch.is_err();
            if sender.send(batch).is_err() || failed {
                return;
            }
        }
    }

    fn build(&self, position: usize) -> Result<Batch> {
        let b = self.config.batch_size;
        let indices: Vec<usize> = self.order[position * b..((position + 1) * b).min(self.order.len())].to_vec();
        let size = self.config.image_size as usize;
        let (pixels_per_image, classes) = (size * size * 3, self.dataset.num_classes());
        let (mut images, mut targets) = self.reuse.lock().map(|r| r.try_recv().ok()).ok().flatten().unwrap_or_default();
        images.resize(b * pixels_per_image, 0);
        targets.resize(b * classes, 0.0);
        let outcomes: Vec<Option<Skipped>> = self.pool.install(|| {
            images
                .par_chunks_mut(pixels_per_image)
                .zip(targets.par_chunks_mut(classes))
                .zip(indices.par_iter())
                .map(|((pixels, row), &index)| {
                    self.dataset.write_targets(index, row);
                    // A decoder bug on one file costs that file, not the epoch.
                    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.load(index, pixels)));
                    let reason = match loaded {
                        Ok(Ok(())) => return None,
                        Ok(Err(error)) => error.to_string(),
                        Err(panic) => format!("decoding panicked: {}", panic_message(panic.as_ref())),
                    };
                    Some(Skipped { index, path: self.dataset.path(index), reason })
                })
                .collect()
        });
        if self.config.strict {
            if let Some(skipped) = outcomes.iter().flatten().next() {
                return Err(DataError::Decode { path: skipped.path.clone(), message: skipped.reason.clone() });
            }
        }
        let (kept, skipped) = compact(&mut images, &mut targets, &indices, outcomes, pixels_per_image, classes);
        Ok(Batch {
            images,
            targets,
            indices: kept,
            skipped,
            position,
            image_size: size,
            classes,
            recycle: Some(self.recycle.clone()),
        })
    }

    /// Decodes, resizes and augments sample `index` into `pixels`.
    fn load(&self, index: usize, pixels: &mut [u8]) -> Result<()> {
        let path = self.dataset.path(index);
        #[cfg(test)]
        hooks::before_decode(&path);
        let size = self.config.image_size;
        WORKSPACE.with(|workspace| {
            let (buffers, resizer, scratch) = &mut *workspace.borrow_mut();
            let decoded = decode_rgb_into(&path, buffers)?;
            resize_into(decoded, size, pixels, resizer);
            let mut rng = sample_rng(Stream::Augment, self.config.seed, self.epoch, index as u64);
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
    use super::Dataset;
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

    pub fn before_batch(dataset: &Dataset, position: usize) {
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
