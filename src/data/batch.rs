//! One batch in host memory as the loader delivers it, and its move to
//! the device: u8 NHWC travels and becomes normalised float NCHW there.

use super::error::Result;
use super::normalize::Normalization;
use super::split::SplitData;
use super::stream::StreamPosition;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use tch::{Device, Kind, Tensor};

/// An image the loader had to leave out of its batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// Dataset index of the sample (for shards, its position in the epoch).
    pub index: usize,
    /// The image file, or `<shard>/<key>`.
    pub path: PathBuf,
    pub reason: String,
}

/// A batch's image and target buffers, handed back for reuse.
pub(super) type Buffers = (Vec<u8>, Vec<f32>);

/// One batch in host memory. Dropping it hands its buffers back to the loader.
pub struct Batch {
    /// `[len, S, S, 3]` RGB.
    pub images: Vec<u8>,
    /// `[len, K]`: 1 positive, 0 negative, -1 unknown.
    pub targets: Vec<f32>,
    /// Dataset index of each sample in the batch; for shards, its position in the epoch.
    pub indices: Vec<usize>,
    /// For shards, each sample's key (empty for image files, which `indices` name).
    pub keys: Vec<String>,
    /// For shards, the shard of each key.
    pub key_shards: Vec<u32>,
    /// For shards, where the epoch stands after this batch: what a checkpoint stores to resume.
    pub resume: Option<StreamPosition>,
    /// Samples of this batch that could not be read (non-strict mode).
    pub skipped: Vec<Skipped>,
    /// Position of the batch within its epoch.
    pub position: usize,
    pub(super) image_size: usize,
    pub(super) classes: usize,
    pub(super) recycle: Option<Sender<Buffers>>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The name each sample goes by in `data`, the split it came from: its
    /// image file, or `<shard>/<key>`.
    pub fn names(&self, data: &SplitData) -> Vec<PathBuf> {
        match data {
            SplitData::Files(dataset) => self.indices.iter().map(|&i| dataset.path(i)).collect(),
            SplitData::Shards(set) => {
                self.key_shards.iter().zip(&self.keys).map(|(&s, k)| set.sample_path(s, k)).collect()
            }
        }
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
