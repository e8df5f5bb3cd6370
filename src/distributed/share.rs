//! The one rule for a rank's share of an epoch, for image files, for
//! shards and for the sample counts a resumed position is checked against,
//! so that the three can never disagree. It is `DistributedSampler`'s: with
//! `pad` (training), every rank reads `⌈N / W⌉` samples and the epoch's
//! first `⌈N / W⌉·W − N` are read twice, so that every rank takes as many
//! steps; without (validation), the shares cover the epoch exactly once and
//! differ by at most one sample, the first ranks taking the extra ones.
//!
//! Image files take positions `r, r + W, r + 2W, …` of the epoch's order,
//! so that a step's global batch holds the images one process's batch
//! would; shards, which are read front to back, take the contiguous stretch
//! of the same length.

/// Rank `rank` of `world`'s share of an epoch of `total` samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochShare {
    pub total: u64,
    pub rank: usize,
    pub world: usize,
    pub pad: bool,
}

impl EpochShare {
    pub fn new(total: u64, rank: usize, world: usize, pad: bool) -> Self {
        let world = world.max(1);
        assert!(rank < world, "rank {rank} of a world of {world}");
        Self { total, rank, world, pad }
    }

    /// The whole epoch, for one process.
    pub fn alone(total: u64) -> Self {
        Self::new(total, 0, 1, false)
    }

    /// Samples this rank reads in the epoch.
    pub fn len(&self) -> u64 {
        let (world, rank) = (self.world as u64, self.rank as u64);
        if self.pad {
            self.total.div_ceil(world)
        } else {
            (self.total + world - 1 - rank) / world
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image files: the positions of the epoch's order this rank reads,
    /// every `world`-th from its rank, wrapping to the start when padded.
    pub fn strided(&self) -> impl Iterator<Item = u64> {
        let (world, rank, total, len) = (self.world as u64, self.rank as u64, self.total.max(1), self.len());
        (0..len).map(move |i| (rank + i * world) % total)
    }

    /// Shards: `(start, len)` of the contiguous stretch of the epoch's
    /// stream this rank reads; positions past the end wrap to its start.
    pub fn stretch(&self) -> (u64, u64) {
        let (world, rank, len) = (self.world as u64, self.rank as u64, self.len());
        if self.pad {
            return (rank * len, len);
        }
        let (base, extra) = (self.total / world, self.total % world);
        (rank * base + rank.min(extra), len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_and_stretches_have_the_length_of_the_one_rule_and_cover_the_epoch() {
        for total in 0..23u64 {
            for world in 1..6 {
                for pad in [false, true] {
                    let mut strided: Vec<u64> = Vec::new();
                    let mut stretched: Vec<u64> = Vec::new();
                    for rank in 0..world {
                        let share = EpochShare::new(total, rank, world, pad);
                        let positions: Vec<u64> = share.strided().collect();
                        assert_eq!(positions.len() as u64, share.len());
                        strided.extend(positions);
                        let (start, len) = share.stretch();
                        assert_eq!(len, share.len());
                        stretched.extend((start..start + len).map(|p| p % total.max(1)));
                    }
                    if total == 0 {
                        assert!(strided.is_empty() && stretched.is_empty());
                        continue;
                    }
                    let expected_len = if pad { total.div_ceil(world as u64) * world as u64 } else { total };
                    assert_eq!(strided.len() as u64, expected_len, "N {total} W {world} pad {pad}");
                    for list in [&mut strided, &mut stretched] {
                        list.sort_unstable();
                        list.dedup();
                        assert_eq!(*list, (0..total).collect::<Vec<_>>(), "N {total} W {world} pad {pad}");
                    }
                }
            }
        }
    }

    #[test]
    fn padding_repeats_the_epochs_start_as_distributed_sampler_does() {
        let strided: Vec<Vec<u64>> = (0..3).map(|r| EpochShare::new(10, r, 3, true).strided().collect()).collect();
        assert_eq!(strided, [vec![0, 3, 6, 9], vec![1, 4, 7, 0], vec![2, 5, 8, 1]]);
        let plain: Vec<Vec<u64>> = (0..3).map(|r| EpochShare::new(10, r, 3, false).strided().collect()).collect();
        assert_eq!(plain, [vec![0, 3, 6, 9], vec![1, 4, 7], vec![2, 5, 8]]);
        let stretches: Vec<(u64, u64)> = (0..3).map(|r| EpochShare::new(10, r, 3, false).stretch()).collect();
        assert_eq!(stretches, [(0, 4), (4, 3), (7, 3)]);
        assert_eq!(EpochShare::new(7, 2, 3, true).stretch(), (6, 3), "positions 6, 7 and 8: 7 and 8 wrap to 0 and 1");
    }
}
