//! Per-sample randomness. Each sample's augmentation draws from a
//! generator seeded by (seed, epoch, index) alone, so a seed gives the same
//! batches whatever the thread count or scheduling.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Which consumer a stream is for, so streams never collide.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Augment = 1,
    Shuffle = 2,
    Synthesize = 3,
    /// The shard order of an epoch.
    Shards = 4,
    /// The shuffle buffer's draws.
    ShuffleBuffer = 5,
    /// The assignment of images or shards to K folds.
    Folds = 6,
}

pub fn sample_rng(stream: Stream, seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    key[24] = stream as u8;
    ChaCha8Rng::from_seed(key)
}
