//! Where samples come from: COCO, Pascal VOC, CSV/TSV lists, Open Images,
//! WebDataset tar shards, and the built-in synthetic shapes.

mod coco;
mod list;
mod openimages;
mod shards;
mod synthetic;
mod voc;

pub use coco::{load_coco, parse_coco, CocoOptions, CocoSplit, CrowdPolicy};
pub use list::{load_list, parse_list, ListOptions};
pub use openimages::{OpenImagesCounts, OpenImagesOptions, OpenImagesSplit};
pub use shards::{
    count_samples, expand_braces, read_classes, read_samples, split_member_name, Manifest, RawSample, ReadFailure,
    ShardEntry, ShardFile, ShardOptions, ShardSet, SplitManifest, CLASSES_FILE, IMAGE_EXTENSIONS, MANIFEST_FILE,
};
pub use synthetic::{
    class_names as synthetic_class_names, synthetic_mid, write_synthetic, write_synthetic_openimages, SynthConfig,
    SynthFormat, SYNTH_OPENIMAGES_MISSING,
};
pub use voc::{load_voc, parse_voc_objects, DifficultPolicy, VOC_CLASSES};
