//! K-fold splits of a training split, for out-of-sample predictions (`asl
//! audit`): every image (or, for shards, every shard) gets one of K folds,
//! from a seeded shuffle, so that the folds are as even as they can be and
//! the same for the same seed. `data.fold` trains on every fold but one;
//! the held-out fold is what the fold's model predicts.

use super::dataset::Dataset;
use super::error::{DataError, Result};
use super::rng::{sample_rng, Stream};
use super::sources::ShardSet;
use rand::seq::SliceRandom;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One fold of a K-fold split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FoldConfig {
    /// K, the number of folds (at least 2).
    pub count: usize,
    /// The held-out fold, 0-based: the split keeps every other fold.
    pub index: usize,
    /// Seeds the assignment of images (or shards) to folds.
    pub seed: u64,
}

/// Which part of a split a fold selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoldPart {
    /// Every fold but the held-out one: what the fold trains on.
    Training,
    /// The held-out fold alone: what the fold's model predicts.
    HeldOut,
}

impl FoldConfig {
    /// Each of `items` images' (or shards') fold: position `p` of a seeded
    /// shuffle goes to fold `p mod K`, so fold sizes differ by at most one.
    pub fn assignment(&self, items: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..items).collect();
        order.shuffle(&mut sample_rng(Stream::Folds, self.seed, 0, 0));
        let mut fold = vec![0; items];
        for (position, &item) in order.iter().enumerate() {
            fold[item] = position % self.count;
        }
        fold
    }

    fn check(&self, items: usize, what: &str) -> Result<()> {
        let bad = |message: String| Err(DataError::Option { name: "data.fold", message });
        if self.count < 2 {
            return bad(format!("{} folds: a K-fold split needs at least 2", self.count));
        }
        if self.index >= self.count {
            return bad(format!("fold {} of {} does not exist (folds are 0-based)", self.index, self.count));
        }
        if items < 2 * self.count {
            return bad(format!("{items} {what} cannot make {} folds of at least 2 each", self.count));
        }
        Ok(())
    }

    /// Keeps `part` of `dataset`'s images.
    pub fn select(&self, dataset: &mut Dataset, part: FoldPart) -> Result<()> {
        self.check(dataset.len(), "images")?;
        let fold = self.assignment(dataset.len());
        dataset.retain(|i| (fold[i] == self.index) == (part == FoldPart::HeldOut));
        Ok(())
    }

    /// Keeps `part` of `set`'s shards: a streamed split is divided shard by shard.
    pub fn select_shards(&self, set: &mut ShardSet, part: FoldPart) -> Result<()> {
        self.check(set.shards.len(), "shards")?;
        let fold = self.assignment(set.shards.len());
        let mut index = 0;
        set.shards.retain(|_| {
            index += 1;
            (fold[index - 1] == self.index) == (part == FoldPart::HeldOut)
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_partition_the_items_evenly_and_the_same_way_for_the_same_seed() {
        let fold = FoldConfig { count: 4, index: 0, seed: 3 };
        let assignment = fold.assignment(10);
        let mut sizes = [0; 4];
        assignment.iter().for_each(|&f| sizes[f] += 1);
        assert_eq!(sizes.iter().sum::<usize>(), 10);
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
        assert_eq!(assignment, fold.assignment(10));
        assert_ne!(assignment, FoldConfig { seed: 4, ..fold }.assignment(10), "another seed, other folds");
    }

    #[test]
    fn impossible_folds_are_refused_naming_the_key() {
        let check = |count, index, items| FoldConfig { count, index, seed: 0 }.check(items, "images");
        assert!(check(1, 0, 10).unwrap_err().to_string().contains("at least 2"));
        assert!(check(4, 4, 10).unwrap_err().to_string().contains("fold 4 of 4 does not exist"));
        let few = check(4, 0, 7).unwrap_err().to_string();
        assert!(
            few.starts_with("invalid data option `data.fold`") && few.contains("7 images cannot make 4 folds"),
            "{few}"
        );
        assert!(check(4, 3, 8).is_ok());
    }
}
