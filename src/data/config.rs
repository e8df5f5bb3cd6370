//! The `data` section of a run's config, and turning it into datasets and
//! loader settings.

use super::error::{DataError, Result};
use super::folds::{FoldConfig, FoldPart};
use super::labels::Unlisted;
use super::loader::{LoaderConfig, Shard};
use super::overrides::LabelOverrides;
use super::sources::{
    load_list, load_voc, CocoOptions, CocoSplit, CrowdPolicy, DifficultPolicy, ListOptions, OpenImagesOptions,
    OpenImagesSplit, ShardOptions, ShardSet,
};
use super::split::SplitData;
use super::transform::AugmentConfig;
use super::Dataset;
use crate::config::{at_least_one, key_error, Validate};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// COCO layout (also what `asl synth` writes).
    #[default]
    Coco,
    /// `VOCdevkit/VOC2007` layout.
    Voc,
    /// CSV/TSV list (`path,labels[,negatives][,unknown]`).
    List,
    /// An Open Images download folder (V6 or V7 file names): human-verified labels, unlisted ones unknown.
    Openimages,
    /// WebDataset tar shards (what `asl pack` writes), streamed: a directory holding `<split>-*.tar`, a brace
    /// pattern (`train-{000000..000127}.tar`) or a file listing shard paths.
    Shards,
}

/// How validation scores a label that is not verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnknownInValidation {
    /// Leave it out: mAP over verified labels, per class with a verified positive (the Open Images protocol).
    #[default]
    Skip,
    /// Count it as a negative, as if the split were fully annotated.
    Negative,
}

/// Where the images come from and how they are batched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// coco (also the layout `asl synth` writes), voc, list, openimages or shards.
    pub source: SourceKind,
    /// Dataset root (COCO, VOC, a directory of shards), list file or shard pattern; usually given as --data.
    pub path: Option<PathBuf>,
    /// For lists: the validation list file. For shards: the validation shards, if not `<val_split>-*.tar` beside
    /// the training ones.
    pub val_path: Option<PathBuf>,
    /// Shards: the class names, one per line, if not the classes.txt beside the shards.
    pub classes: Option<PathBuf>,
    /// Shards: reader threads per process, each reading its own shards front to back. Part of the sample order.
    pub readers: usize,
    /// Shards: samples held in the training shuffle buffer (memory grows with it: one encoded image each).
    pub shuffle_buffer: usize,
    /// Training split: COCO reads annotations/instances_<split>.json and <split>/ (train finds train2017 or
    /// train2014); VOC reads ImageSets/Main/<split>.txt.
    pub train_split: String,
    /// Validation split, named as train_split.
    pub val_split: String,
    /// Square input side S: images are squished to S×S, not cropped.
    pub image_size: u32,
    /// Images per batch.
    pub batch_size: usize,
    /// Validation batch size; null uses twice batch_size (validation keeps no activations for a backward pass).
    pub val_batch_size: Option<usize>,
    /// Decode threads; 0 uses every core.
    pub threads: usize,
    /// Batches prepared ahead of the trainer.
    pub prefetch: usize,
    /// Stop at the first unreadable image instead of skipping it with a warning.
    pub strict: bool,
    /// Drop the last, smaller batch of each epoch.
    pub drop_last: bool,
    /// COCO: drop images without annotations (the reference does); false keeps them as all-negative.
    pub drop_unannotated: bool,
    /// COCO iscrowd instances: include, exclude or unknown.
    pub crowd: CrowdPolicy,
    /// VOC difficult objects: include, exclude or unknown.
    pub difficult: DifficultPolicy,
    /// Lists: the separator between labels.
    pub label_separator: char,
    /// Lists, and shards without a manifest: what a class a sample does not name is, negative (fully
    /// annotated) or unknown (partial labels). Open Images is always unknown.
    pub unlisted: Unlisted,
    /// Open Images: machine-generated labels with at least this confidence join the human-verified ones as
    /// positives; null leaves them out.
    pub machine_label_threshold: Option<f32>,
    /// Validation of partially labelled data: skip unverified labels (the Open Images protocol) or count them
    /// as negatives.
    pub unknown_in_validation: UnknownInValidation,
    /// Training augmentation, applied after the resize (validation has none).
    pub augment: AugmentConfig,
    /// Train on every fold of a K-fold split of the training split but one ({count, index, seed}); `asl audit`
    /// sets it for each of its folds. Images are assigned to folds (shards, for a streamed split) by a seeded
    /// shuffle. null trains on the whole split.
    pub fold: Option<FoldConfig>,
    /// A CSV of `image,class,label` corrections (label 1, 0 or unknown) laid over the training split's own
    /// labels, as `asl audit` writes for its relabeled.yaml; null uses the labels as the source gives them.
    pub label_overrides: Option<PathBuf>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: SourceKind::Coco,
            path: None,
            val_path: None,
            classes: None,
            readers: 2,
            shuffle_buffer: 1000,
            train_split: "train".into(),
            val_split: "val".into(),
            image_size: 448,
            batch_size: 56,
            val_batch_size: None,
            threads: 0,
            prefetch: 2,
            strict: false,
            drop_last: false,
            drop_unannotated: false,
            crowd: CrowdPolicy::default(),
            difficult: DifficultPolicy::default(),
            label_separator: ' ',
            unlisted: Unlisted::Negative,
            machine_label_threshold: None,
            unknown_in_validation: UnknownInValidation::Skip,
            augment: AugmentConfig::default(),
            fold: None,
            label_overrides: None,
        }
    }
}

impl Validate for DataConfig {
    fn validate(&self) -> crate::config::Result<()> {
        if self.image_size == 0 {
            return Err(key_error("data.image_size", "must be at least 1"));
        }
        at_least_one("data.batch_size", self.batch_size)?;
        at_least_one("data.readers", self.readers)?;
        if let Some(threshold) = self.machine_label_threshold {
            crate::config::in_closed_unit("data.machine_label_threshold", f64::from(threshold))?;
        }
        match self.val_batch_size {
            Some(size) => at_least_one("data.val_batch_size", size),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

impl DataConfig {
    /// The train or validation split this section describes: image files
    /// indexed up front, or shards found (not read) for streaming.
    /// The training split's folds other than `data.fold`'s held-out one
    /// (all of it without `data.fold`), with `data.label_overrides` laid
    /// over it.
    pub fn open_split(&self, split: Split) -> Result<SplitData> {
        self.open_part(split, FoldPart::Training)
    }

    /// The training split's held-out fold (`data.fold`): what the fold's model predicts.
    pub fn open_held_out(&self) -> Result<SplitData> {
        if self.fold.is_none() {
            let message = "no fold is held out: set data.fold".to_string();
            return Err(DataError::Option { name: "data.fold", message });
        }
        self.open_part(Split::Train, FoldPart::HeldOut)
    }

    fn open_part(&self, split: Split, part: FoldPart) -> Result<SplitData> {
        let mut data = self.open_whole(split)?;
        if split == Split::Train {
            self.select_training(&mut data, part)?;
        }
        Ok(data)
    }

    /// `data.fold`'s part of the training split and `data.label_overrides` over it.
    fn select_training(&self, data: &mut SplitData, part: FoldPart) -> Result<()> {
        let overrides = match &self.label_overrides {
            Some(path) => Some(Arc::new(LabelOverrides::read(path, data.class_names())?)),
            None => None,
        };
        match data {
            SplitData::Files(dataset) => {
                let dataset = Arc::make_mut(dataset);
                if let Some(fold) = &self.fold {
                    fold.select(dataset, part)?;
                }
                if let Some(overrides) = &overrides {
                    let found = overrides.apply(dataset);
                    if found < overrides.images() {
                        let path = self.label_overrides.as_deref().unwrap_or(std::path::Path::new("")).display();
                        dataset.notes.push(format!(
                            "{} of the {} images {path} corrects are not in the training split (they are named by \
                             their paths as the dataset names them)",
                            overrides.images() - found,
                            overrides.images()
                        ));
                    }
                }
            }
            SplitData::Shards(set) => {
                let set = Arc::make_mut(set);
                if let Some(fold) = &self.fold {
                    fold.select_shards(set, part)?;
                }
                if let Some(overrides) = overrides {
                    set.partial |= overrides.marks_unknown();
                    set.overrides = Some(overrides);
                }
            }
        }
        Ok(())
    }

    fn open_whole(&self, split: Split) -> Result<SplitData> {
        if self.source != SourceKind::Shards {
            return Ok(self.load_split(split)?.into());
        }
        let root = self.root()?;
        let (path, split_specific) = match (split, &self.val_path) {
            (Split::Val, Some(val)) => (val, true),
            (Split::Train, _) => (root, self.val_path.is_some()),
            (Split::Val, None) if root.is_dir() => (root, false),
            (Split::Val, None) => {
                let message = format!(
                    "{} names one split's shards (a pattern, a list or a file): set data.val_path to the validation \
                     shards",
                    root.display()
                );
                return Err(DataError::Option { name: "data.val_path", message });
            }
        };
        let options = ShardOptions {
            split: self.split_name(split),
            split_specific,
            classes: self.classes.as_deref(),
            unlisted: self.unlisted,
        };
        let set = ShardSet::open(path, &options)?;
        if set.is_empty() {
            return Err(DataError::Empty(path.clone()));
        }
        Ok(set.into())
    }

    fn root(&self) -> Result<&PathBuf> {
        self.path.as_ref().ok_or_else(|| DataError::Option {
            name: "data.path",
            message: "no dataset given: pass --data PATH or set data.path".into(),
        })
    }

    fn split_name(&self, split: Split) -> &str {
        if split == Split::Train {
            &self.train_split
        } else {
            &self.val_split
        }
    }

    /// Loads the train or validation split of image files this section
    /// describes (shards are streamed: see [`open_split`](Self::open_split)).
    pub fn load_split(&self, split: Split) -> Result<Dataset> {
        let root = self.root()?;
        let name = self.split_name(split);
        let dataset = match self.source {
            SourceKind::Coco => CocoSplit::find(root, name)?
                .load(&CocoOptions { drop_unannotated: self.drop_unannotated, crowd: self.crowd })?,
            SourceKind::Voc => load_voc(root, name, self.difficult)?,
            SourceKind::List => self.load_list(root, split)?,
            SourceKind::Openimages => {
                let options = OpenImagesOptions {
                    machine_threshold: self.machine_label_threshold,
                    strict: self.strict,
                    skip_image_check: false,
                };
                let (mut dataset, counts) = OpenImagesSplit::find(root, name)?.load(&options)?;
                dataset.notes = counts.notes(name);
                dataset
            }
            SourceKind::Shards => {
                let message = "shards are streamed, not indexed: this command reads image files".into();
                return Err(DataError::Option { name: "data.source", message });
            }
        };
        if dataset.is_empty() {
            return Err(DataError::Empty(root.clone()));
        }
        Ok(dataset)
    }

    fn load_list(&self, train_list: &std::path::Path, split: Split) -> Result<Dataset> {
        let options = ListOptions { label_separator: self.label_separator, classes: None, unlisted: self.unlisted };
        let train = load_list(train_list, &options)?;
        match (split, &self.val_path) {
            (Split::Train, _) => Ok(train),
            (Split::Val, Some(val)) => load_list(val, &ListOptions { classes: Some(train.class_names), ..options }),
            (Split::Val, None) => Err(DataError::Option {
                name: "data.val_path",
                message: "a list dataset needs a validation list".into(),
            }),
        }
    }

    /// Training loader settings: shuffled by `seed`, augmented. Among
    /// `world` processes (rank `rank`), each reads its padded share of the
    /// epoch in batches of `batch_size / world`, so that a step still sees
    /// `batch_size` images.
    pub fn train_loader(&self, seed: u64, rank: usize, world: usize) -> Result<LoaderConfig> {
        Ok(LoaderConfig {
            batch_size: self.per_rank(self.batch_size, world, "data.batch_size")?,
            image_size: self.image_size,
            shuffle: true,
            drop_last: self.drop_last,
            augment: self.augment,
            prefetch: self.prefetch,
            threads: self.threads,
            strict: self.strict,
            seed,
            shard: (world > 1).then_some(Shard { rank, world, pad: true }),
            readers: self.readers,
            shuffle_buffer: self.shuffle_buffer,
        })
    }

    /// Validation loader settings: dataset order, no augmentation; among
    /// `world` processes each scores its share of the split once.
    pub fn val_loader(&self, rank: usize, world: usize) -> Result<LoaderConfig> {
        let batch = self.val_batch_size.unwrap_or(2 * self.batch_size);
        Ok(LoaderConfig {
            prefetch: self.prefetch,
            threads: self.threads,
            strict: self.strict,
            shard: (world > 1).then_some(Shard { rank, world, pad: false }),
            readers: self.readers,
            ..LoaderConfig::evaluation(batch.div_ceil(world.max(1)), self.image_size)
        })
    }

    fn per_rank(&self, batch: usize, world: usize, name: &'static str) -> Result<usize> {
        if world > 1 && !batch.is_multiple_of(world) {
            let message = format!("{batch} images per step do not split evenly among {world} processes");
            return Err(DataError::Option { name, message });
        }
        Ok(batch / world.max(1))
    }
}
