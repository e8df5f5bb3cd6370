//! Where samples come from: COCO, Pascal VOC, CSV/TSV lists, and the
//! built-in synthetic shapes.

mod coco;
mod list;
mod synthetic;
mod voc;

pub use coco::{load_coco, parse_coco, CocoOptions, CocoSplit, CrowdPolicy};
pub use list::{load_list, parse_list, ListOptions};
pub use synthetic::{class_names as synthetic_class_names, write_synthetic, SynthConfig, SynthFormat};
pub use voc::{load_voc, parse_voc_objects, DifficultPolicy, VOC_CLASSES};
