//! A split as the loader reads it: an index of image files known up front,
//! or tar shards streamed front to back.

use super::dataset::Dataset;
use super::sources::ShardSet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum SplitData {
    Files(Arc<Dataset>),
    Shards(Arc<ShardSet>),
}

impl SplitData {
    pub fn class_names(&self) -> &[String] {
        match self {
            Self::Files(d) => &d.class_names,
            Self::Shards(s) => &s.class_names,
        }
    }

    pub fn num_classes(&self) -> usize {
        self.class_names().len()
    }

    /// Samples in the split.
    pub fn len(&self) -> usize {
        match self {
            Self::Files(d) => d.len(),
            Self::Shards(s) => s.len() as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether targets can hold unknown labels (-1) besides 1 and 0.
    pub fn has_unknown_labels(&self) -> bool {
        match self {
            Self::Files(d) => d.has_unknown_labels(),
            Self::Shards(s) => s.partial,
        }
    }

    /// What the source left out or had to work out, for the run's log.
    pub fn notes(&self) -> &[String] {
        match self {
            Self::Files(d) => &d.notes,
            Self::Shards(s) => &s.notes,
        }
    }

    /// What the epoch's layout depends on: which samples, in which files
    /// or shards, in which order.
    pub fn fingerprint(&self) -> SplitFingerprint {
        let mut hash = Sha256::new();
        let shards = match self {
            Self::Files(d) => {
                d.listed_names().for_each(|name| hash.update([name, b"\0"].concat()));
                Vec::new()
            }
            Self::Shards(s) => s
                .shards
                .iter()
                .map(|shard| {
                    let name = shard.path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                    hash.update(format!("{name}\0{}\0", shard.samples));
                    (name, shard.samples)
                })
                .collect(),
        };
        let digest = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        SplitFingerprint { samples: self.len() as u64, digest, shards }
    }

    /// A one-line account: sample count, and where they come from.
    pub fn describe(&self) -> String {
        match self {
            Self::Files(d) => format!("{} images", d.len()),
            Self::Shards(s) => format!("{} samples in {} shards", s.len(), s.shards.len()),
        }
    }
}

impl From<Arc<Dataset>> for SplitData {
    fn from(dataset: Arc<Dataset>) -> Self {
        Self::Files(dataset)
    }
}

impl From<Dataset> for SplitData {
    fn from(dataset: Dataset) -> Self {
        Self::Files(Arc::new(dataset))
    }
}

impl From<ShardSet> for SplitData {
    fn from(set: ShardSet) -> Self {
        Self::Shards(Arc::new(set))
    }
}

/// Which samples a split holds, for telling whether a checkpoint taken in
/// the middle of an epoch can be continued on the data at hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitFingerprint {
    pub samples: u64,
    /// SHA-256 of the image paths (under the dataset root) or of the shard names and their counts.
    pub digest: String,
    /// Shards: each one's file name and sample count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<(String, u64)>,
}

impl SplitFingerprint {
    /// What changed from `before` to `self`, in words, or `None`.
    pub fn change_from(&self, before: &SplitFingerprint) -> Option<String> {
        if self == before {
            return None;
        }
        if self.samples != before.samples {
            return Some(format!("{} samples there, {} here", before.samples, self.samples));
        }
        let names = |f: &SplitFingerprint| f.shards.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        if !self.shards.is_empty() || !before.shards.is_empty() {
            if let Some((was, now)) = before.shards.iter().zip(&self.shards).find(|(a, b)| a != b) {
                return Some(format!("shard {} of {} samples there, {} of {} here", was.0, was.1, now.0, now.1));
            }
            if names(self) != names(before) {
                return Some(format!("{} shards there, {} here", before.shards.len(), self.shards.len()));
            }
        }
        Some(format!(
            "the same number of samples ({}) but another file list (digest {} there, {} here)",
            self.samples,
            &before.digest[..12.min(before.digest.len())],
            &self.digest[..12.min(self.digest.len())]
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Sample;

    fn files(names: &[&str]) -> SplitData {
        let samples = names.iter().map(|n| Sample::new(n.into(), vec![0], vec![])).collect();
        Dataset::from_samples(vec!["a".into()], samples).into()
    }

    #[test]
    fn a_changed_file_list_or_count_is_named() {
        let before = files(&["x.jpg", "y.jpg"]).fingerprint();
        assert_eq!(files(&["x.jpg", "y.jpg"]).fingerprint().change_from(&before), None);
        let more = files(&["x.jpg", "y.jpg", "z.jpg"]).fingerprint().change_from(&before).unwrap();
        assert_eq!(more, "2 samples there, 3 here");
        let other = files(&["x.jpg", "w.jpg"]).fingerprint().change_from(&before).unwrap();
        assert!(other.starts_with("the same number of samples (2) but another file list"), "{other}");
        // The file list, not its concatenation: names that run together differently differ.
        assert_ne!(files(&["ab", "c"]).fingerprint(), files(&["a", "bc"]).fingerprint());
    }
}
