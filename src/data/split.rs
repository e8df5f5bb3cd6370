//! A split as the loader reads it: an index of image files known up front,
//! or tar shards streamed front to back.

use super::dataset::Dataset;
use super::sources::ShardSet;
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
