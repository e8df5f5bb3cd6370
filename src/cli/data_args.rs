//! What `asl validate` and `asl pack` share about naming a dataset: the
//! source layouts, and a training recipe's `data` section.

use anyhow::Result;
use asl::config::{read_yaml, resolve, Validate};
use asl::data::{DataConfig, SourceKind};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum Source {
    Coco,
    Voc,
    List,
    /// An Open Images download folder: verified labels only.
    Openimages,
    /// WebDataset tar shards (what `asl pack` writes).
    Shards,
}

impl From<Source> for SourceKind {
    fn from(source: Source) -> Self {
        match source {
            Source::Coco => SourceKind::Coco,
            Source::Voc => SourceKind::Voc,
            Source::List => SourceKind::List,
            Source::Openimages => SourceKind::Openimages,
            Source::Shards => SourceKind::Shards,
        }
    }
}

/// The `data` section of a training recipe; its other sections are not read.
#[derive(Default, Serialize, Deserialize)]
struct DataOnly {
    data: DataConfig,
}

impl Validate for DataOnly {
    fn validate(&self) -> asl::config::Result<()> {
        self.data.validate()
    }
}

/// A recipe's `data` section (source, splits, label policies).
pub fn recipe_data(path: &Path) -> Result<DataConfig> {
    Ok(resolve::<DataOnly>(read_yaml(path)?, &[])?.data)
}
