//! One epoch of tar shards for one rank: which samples of which shards
//! each reader thread reads, how their outputs are merged, and the bounded
//! shuffle buffer, all decided by (seed, epoch, rank, world, readers)
//! alone so that an epoch is reproducible and can be resumed mid-way.
//!
//! The epoch's stream is the shards in a seeded order, one after the
//! other. Rank r reads the contiguous stretch `[r·L, (r+1)·L)` of it and
//! splits that among its readers the same way, so every sample is read
//! exactly once per epoch. In training `L = ⌈N / world⌉` and the stream
//! wraps around to its start to fill the last stretches: DistributedSampler's
//! padding, which repeats the first `L·world − N` samples of the epoch so
//! that every rank takes as many steps. Validation does not pad: the
//! stretches split N as evenly as they can.
//!
//! The readers' outputs are merged round-robin, reader `i mod T` giving
//! the i-th sample (the stretches are balanced, longer first, so this
//! never waits on an exhausted reader). Samples then pass through a buffer
//! of `shuffle_buffer` samples from which a seeded draw picks the next one;
//! the buffer starts a tenth full and grows by one sample per draw.

use super::error::{DataError, Result};
use super::rng::{sample_rng, Stream};
use super::sources::{read_samples, RawSample, ShardSet};
use crate::distributed::EpochShare;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

/// Samples each reader thread keeps ready for the merge.
const READ_AHEAD: usize = 16;

/// `count` samples of shard `shard` from its `first`-th, whose first is the
/// epoch's `position`-th sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub shard: u32,
    pub first: u64,
    pub count: u64,
    pub position: u64,
}

/// Which samples a rank reads, as one list of segments per reader: its
/// share's stretch of the stream (`EpochShare`, the rule image files
/// follow too), split among `readers` the same way without padding.
pub fn plan(counts: &[u64], order: &[u32], share: EpochShare, readers: usize) -> Vec<Vec<Segment>> {
    let total: u64 = counts.iter().sum();
    debug_assert_eq!(total, share.total, "the share is of these shards");
    let (start, len) = share.stretch();
    let readers = readers.max(1);
    (0..readers)
        .map(|reader| {
            let (offset, count) = EpochShare::new(len, reader, readers, false).stretch();
            if total == 0 {
                return Vec::new();
            }
            segments(counts, order, start + offset, count, total)
        })
        .collect()
}

/// The segments covering positions `[start, start + count)` of the stream of
/// shards in `order`, wrapping around after `total`.
fn segments(counts: &[u64], order: &[u32], start: u64, count: u64, total: u64) -> Vec<Segment> {
    let mut result: Vec<Segment> = Vec::new();
    let (mut position, end) = (start, start + count);
    while position < end {
        let mut within = position % total;
        for &shard in order {
            let size = counts[shard as usize];
            if within < size {
                let take = (size - within).min(end - position);
                result.push(Segment { shard, first: within, count: take, position });
                position += take;
                break;
            }
            within -= size;
        }
    }
    result
}

/// Where a reader stands: in its `segment`-th segment, `done` samples in,
/// the next sample starting at byte `offset` of the shard (known once a
/// sample of the segment was read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReaderPosition {
    pub segment: usize,
    pub done: u64,
    pub offset: Option<u64>,
}

/// A sample waiting in the shuffle buffer, by where to read it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferedSample {
    pub shard: u32,
    /// Where the sample starts; `None` for one that could not be read.
    pub offset: Option<u64>,
    pub position: u64,
}

/// Everything needed to continue a rank's epoch after the samples drawn so
/// far: stored in a checkpoint, one per rank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    pub epoch: u64,
    /// Samples of the rank's epoch: a check that the shards are the ones the position was saved for.
    pub samples: u64,
    /// Samples taken from the readers.
    pub merged: u64,
    /// Samples handed on from the buffer.
    pub drawn: u64,
    pub readers: Vec<ReaderPosition>,
    pub buffered: Vec<BufferedSample>,
}

/// A sample of the epoch, read but not decoded.
#[derive(Debug)]
pub struct StreamItem {
    pub shard: u32,
    /// Its position in the epoch's stream (padding repeats have their own):
    /// its id in the batch and the seed of its augmentation.
    pub position: u64,
    pub key: String,
    /// The sample, or why it could not be read.
    pub content: std::result::Result<RawSample, String>,
}

/// How one rank streams an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLayout {
    pub seed: u64,
    pub shuffle: bool,
    pub rank: usize,
    pub world: usize,
    pub readers: usize,
    pub pad: bool,
    pub shuffle_buffer: usize,
}

impl StreamLayout {
    /// The shard order of `epoch`: seeded, or as listed.
    pub fn shard_order(&self, shards: usize, epoch: u64) -> Vec<u32> {
        let mut order: Vec<u32> = (0..shards as u32).collect();
        if self.shuffle {
            order.shuffle(&mut sample_rng(Stream::Shards, self.seed, epoch, 0));
        }
        order
    }

    pub fn plan(&self, set: &ShardSet, epoch: u64) -> Vec<Vec<Segment>> {
        let counts: Vec<u64> = set.shards.iter().map(|s| s.samples).collect();
        let share = EpochShare::new(counts.iter().sum(), self.rank, self.world, self.pad);
        plan(&counts, &self.shard_order(counts.len(), epoch), share, self.readers)
    }
}

/// One rank's epoch as a sequence of samples: reader threads, the
/// round-robin merge and the shuffle buffer.
pub struct EpochStream {
    layout: StreamLayout,
    epoch: u64,
    segments: Vec<Vec<Segment>>,
    readers: Vec<Receiver<StreamItem>>,
    position: StreamPosition,
    buffer: Vec<(StreamItem, Option<u64>)>,
    /// Samples of this rank's epoch.
    total: u64,
}

impl EpochStream {
    /// Starts the readers of `epoch`, from its beginning or from `resume`.
    pub fn start(
        set: &Arc<ShardSet>,
        layout: StreamLayout,
        epoch: u64,
        resume: Option<&StreamPosition>,
    ) -> Result<Self> {
        let segments = layout.plan(set, epoch);
        let total = segments.iter().flatten().map(|s| s.count).sum();
        let position = match resume {
            Some(p) if p.epoch != epoch || p.readers.len() != segments.len() || p.samples != total => {
                return Err(DataError::Option {
                    name: "resume",
                    message: format!(
                        "the saved shard position is for epoch {} with {} readers and {} samples on this rank, not \
                         epoch {} with {} and {total}: were the shards changed?",
                        p.epoch + 1,
                        p.readers.len(),
                        p.samples,
                        epoch + 1,
                        segments.len()
                    ),
                })
            }
            Some(p) => p.clone(),
            None => StreamPosition {
                epoch,
                samples: total,
                merged: 0,
                drawn: 0,
                readers: vec![ReaderPosition::default(); segments.len()],
                buffered: Vec::new(),
            },
        };
        let buffer = reread(set, &position.buffered);
        let readers = segments
            .iter()
            .zip(&position.readers)
            .enumerate()
            .map(|(index, (segments, from))| spawn_reader(Arc::clone(set), segments.clone(), *from, index))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layout, epoch, segments, readers, position, buffer, total })
    }

    /// Samples of this rank's epoch.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Where the epoch stands after the samples handed out so far.
    pub fn position(&self) -> StreamPosition {
        let mut position = self.position.clone();
        position.buffered = self
            .buffer
            .iter()
            .map(|(item, offset)| BufferedSample { shard: item.shard, offset: *offset, position: item.position })
            .collect();
        position
    }

    /// The next sample of the epoch, or `None` after the last.
    pub fn next_item(&mut self) -> Option<StreamItem> {
        let capacity = self.layout.shuffle_buffer.max(1);
        // As WebDataset's `initial`: draws start once a tenth of the buffer is in, and each then takes in two
        // samples until it is full, so that an epoch's first batch does not wait for the whole buffer to load.
        let fill = capacity.min(capacity.div_ceil(10) + self.position.drawn as usize);
        while self.buffer.len() < fill && self.position.merged < self.total {
            let merged = self.merge_one();
            self.buffer.push(merged);
        }
        if self.buffer.is_empty() {
            return None;
        }
        let pick = if capacity == 1 {
            0
        } else {
            let draw = (self.layout.rank as u64) << 48 | self.position.drawn;
            let mut rng = sample_rng(Stream::ShuffleBuffer, self.layout.seed, self.epoch, draw);
            rng.random_range(0..self.buffer.len())
        };
        self.position.drawn += 1;
        Some(self.buffer.swap_remove(pick).0)
    }

    /// The next sample of the round-robin merge, with its start offset.
    fn merge_one(&mut self) -> (StreamItem, Option<u64>) {
        let reader = (self.position.merged % self.readers.len() as u64) as usize;
        self.position.merged += 1;
        let at = &mut self.position.readers[reader];
        let segment = self.segments[reader][at.segment];
        let item = self.readers[reader].recv().unwrap_or_else(|_| StreamItem {
            shard: segment.shard,
            position: segment.position + at.done,
            key: String::new(),
            content: Err("the shard reader thread stopped".into()),
        });
        let (start, end) = item.content.as_ref().map_or((None, None), |s| (Some(s.start), Some(s.end)));
        at.done += 1;
        at.offset = end;
        if at.done == segment.count {
            *at = ReaderPosition { segment: at.segment + 1, done: 0, offset: None };
        }
        (item, start)
    }
}

/// The buffered samples of a saved position, read again, each by one
/// open and one seek: a cost paid once per resume, not per sample.
fn reread(set: &ShardSet, buffered: &[BufferedSample]) -> Vec<(StreamItem, Option<u64>)> {
    let read_again = |wanted: &BufferedSample| {
        let Some(offset) = wanted.offset else {
            return Err("it could not be read before the run was resumed".to_string());
        };
        let path = &set.shards[wanted.shard as usize].path;
        let mut attempt = 1;
        loop {
            let mut found = None;
            let outcome = read_samples(path, offset, 0, 1, &mut |sample| {
                found = Some(sample);
                false
            });
            let reason = match (found, outcome) {
                (Some(sample), _) => return Ok(sample),
                (None, Err(failure)) => format!("at byte {}: {}", failure.offset, failure.message),
                (None, Ok(())) => format!("no sample at byte {offset}"),
            };
            if attempt == READ_ATTEMPTS {
                return Err(format!("cannot read it again from {} {reason} (read {attempt} times)", path.display()));
            }
            std::thread::sleep(std::time::Duration::from_millis(50 << attempt));
            attempt += 1;
        }
    };
    buffered
        .iter()
        .map(|wanted| {
            let content = read_again(wanted);
            let key = content.as_ref().map_or_else(|_| String::new(), |s| s.key.clone());
            (StreamItem { shard: wanted.shard, position: wanted.position, key, content }, wanted.offset)
        })
        .collect()
}

/// Attempts at reading a stretch of a shard before the samples it still
/// owes are given up: a network file system's passing failure is retried.
const READ_ATTEMPTS: u32 = 4;

/// A thread reading `segments` from `from` into a bounded channel. A read
/// that fails or ends early is retried three times from the sample it
/// stopped at; a shard still damaged (truncated, corrupt) then yields one
/// failed item for each sample it owed, so that the epoch keeps its length.
fn spawn_reader(
    set: Arc<ShardSet>,
    segments: Vec<Segment>,
    from: ReaderPosition,
    index: usize,
) -> Result<Receiver<StreamItem>> {
    let (sender, receiver) = sync_channel(READ_AHEAD);
    std::thread::Builder::new()
        .name(format!("asl-shards-{index}"))
        .spawn(move || {
            for (number, segment) in segments.iter().enumerate().skip(from.segment) {
                let resumed = number == from.segment && from.done > 0;
                let start = match (resumed, from.offset) {
                    (true, Some(offset)) => ReadFrom { offset, skip: 0, done: from.done },
                    (true, None) => ReadFrom { offset: 0, skip: segment.first + from.done, done: from.done },
                    (false, _) => ReadFrom { offset: 0, skip: segment.first, done: 0 },
                };
                if !read_segment(&set, segment, start, &sender) {
                    return;
                }
            }
        })
        .map_err(|e| DataError::Option {
            name: "data.readers",
            message: format!("cannot start a reader thread: {e}"),
        })?;
    Ok(receiver)
}

/// Where a read of a segment starts: byte `offset` of the shard, after
/// skipping `skip` samples by their headers, `done` of the segment's
/// samples already behind it.
#[derive(Debug, Clone, Copy)]
struct ReadFrom {
    offset: u64,
    skip: u64,
    done: u64,
}

/// Sends every sample of `segment` from `from` on; false once the
/// receiver is gone.
fn read_segment(set: &ShardSet, segment: &Segment, mut from: ReadFrom, sender: &SyncSender<StreamItem>) -> bool {
    let path = &set.shards[segment.shard as usize].path;
    let mut attempt = 0;
    // The last sample sent, across attempts: a retry starts after it, so its own failure cannot name it.
    let mut last_sent: Option<String> = None;
    let reason = loop {
        let mut alive = true;
        let mut next = from;
        let outcome = read_samples(path, from.offset, from.skip, segment.count - from.done, &mut |sample| {
            next = ReadFrom { offset: sample.end, skip: 0, done: next.done + 1 };
            last_sent = Some(sample.key.clone());
            let item = StreamItem {
                shard: segment.shard,
                position: segment.position + next.done - 1,
                key: sample.key.clone(),
                content: Ok(sample),
            };
            alive = sender.send(item).is_ok();
            alive
        });
        if !alive {
            return false;
        }
        // Progress since the last failure earns the read its attempts back.
        if next.done > from.done {
            attempt = 0;
        }
        from = next;
        if from.done == segment.count {
            return true;
        }
        attempt += 1;
        let reason = match outcome {
            Err(failure) => format!(
                "{} is damaged at byte {}{}: {}",
                path.display(),
                failure.offset,
                failure
                    .after_key
                    .or_else(|| last_sent.clone())
                    .map(|k| format!(" after sample {k}"))
                    .unwrap_or_default(),
                failure.message
            ),
            Ok(()) => format!(
                "{} ends at byte {} after {} of the {} samples counted for it",
                path.display(),
                from.offset,
                segment.first + from.done,
                segment.first + segment.count
            ),
        };
        if attempt >= READ_ATTEMPTS {
            break format!("{reason} (read {READ_ATTEMPTS} times)");
        }
        std::thread::sleep(std::time::Duration::from_millis(50 << attempt));
    };
    for done in from.done..segment.count {
        let item = StreamItem {
            shard: segment.shard,
            position: segment.position + done,
            key: String::new(),
            content: Err(format!("sample {} lost: {reason}", segment.first + done + 1)),
        };
        if sender.send(item).is_err() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample of every shard, once, across all ranks and readers (no padding).
    #[test]
    fn without_padding_the_ranks_and_readers_cover_each_sample_once() {
        let counts = [5, 0, 3, 7, 1, 4];
        let order = [3, 0, 5, 1, 4, 2];
        for world in 1..5 {
            for readers in 1..4 {
                let mut seen: Vec<(u32, u64)> = Vec::new();
                let mut lengths = Vec::new();
                for rank in 0..world {
                    let share = EpochShare::new(counts.iter().sum(), rank, world, false);
                    let plan = plan(&counts, &order, share, readers);
                    lengths.push(plan.iter().flatten().map(|s| s.count).sum::<u64>());
                    for s in plan.iter().flatten() {
                        seen.extend((s.first..s.first + s.count).map(|i| (s.shard, i)));
                    }
                }
                seen.sort_unstable();
                let all: Vec<(u32, u64)> =
                    (0..6u32).flat_map(|s| (0..counts[s as usize]).map(move |i| (s, i))).collect();
                assert_eq!(seen, all, "world {world}, readers {readers}");
                assert!(lengths.iter().max().unwrap() - lengths.iter().min().unwrap() <= 1);
            }
        }
    }

    /// Padding: every rank reads ⌈N/W⌉, the extra ones repeating the epoch's first samples.
    #[test]
    fn padding_repeats_the_first_samples_of_the_epoch_as_distributed_sampler_does() {
        let (counts, order) = ([4, 3], [1, 0]);
        let positions = |rank| {
            plan(&counts, &order, EpochShare::new(7, rank, 3, true), 2)
                .iter()
                .flatten()
                .flat_map(|s| (0..s.count).map(move |i| (s.shard, s.first + i, s.position + i)))
                .collect::<Vec<_>>()
        };
        assert_eq!(positions(0), [(1, 0, 0), (1, 1, 1), (1, 2, 2)]);
        assert_eq!(positions(1), [(0, 0, 3), (0, 1, 4), (0, 2, 5)]);
        // 7 samples over 3 ranks: 9 slots, the last two repeat the epoch's first two.
        assert_eq!(positions(2), [(0, 3, 6), (1, 0, 7), (1, 1, 8)]);
    }
}
