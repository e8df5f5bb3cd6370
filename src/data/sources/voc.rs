//! Pascal VOC (`VOCdevkit/VOC2007` layout): `ImageSets/Main/<split>.txt`
//! lists image ids, `Annotations/<id>.xml` their objects, `JPEGImages/<id>.jpg`
//! the pixels.

use crate::data::dataset::{Dataset, Sample};
use crate::data::error::{io_error, DataError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The 20 VOC classes in the conventional index order.
pub const VOC_CLASSES: [&str; 20] = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

/// What to do with objects marked `<difficult>1</difficult>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DifficultPolicy {
    /// Count them as positives.
    #[default]
    Include,
    /// Ignore them.
    Exclude,
    /// Mark the class unknown for that image unless a non-difficult object exists.
    Unknown,
}

/// Reads `split` (e.g. `trainval`, `test`) of the VOC year folder `root`.
pub fn load_voc(root: &Path, split: &str, difficult: DifficultPolicy) -> Result<Dataset> {
    let list = root.join("ImageSets").join("Main").join(format!("{split}.txt"));
    let ids = std::fs::read_to_string(&list).map_err(io_error(&list))?;
    let mut samples = Vec::new();
    for id in ids.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let xml_path = root.join("Annotations").join(format!("{id}.xml"));
        let (positives, unknown) = read_objects(&xml_path, difficult)?;
        samples.push(Sample::new(root.join("JPEGImages").join(format!("{id}.jpg")), positives, unknown));
    }
    if samples.is_empty() {
        return Err(DataError::Empty(list));
    }
    Ok(Dataset::from_samples(VOC_CLASSES.iter().map(|s| s.to_string()).collect(), samples))
}

fn read_objects(path: &Path, policy: DifficultPolicy) -> Result<(Vec<u32>, Vec<u32>)> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    parse_voc_objects(&text, path, policy)
}

/// The positive and unknown classes of one VOC annotation's text; `path`
/// names it in errors.
pub fn parse_voc_objects(text: &str, path: &Path, policy: DifficultPolicy) -> Result<(Vec<u32>, Vec<u32>)> {
    let xml_error = |message: String| DataError::Xml { path: path.to_path_buf(), message };
    let document = roxmltree::Document::parse(text).map_err(|e| xml_error(e.to_string()))?;
    let (mut positives, mut unknown) = (Vec::new(), Vec::new());
    for object in document.descendants().filter(|n| n.has_tag_name("object")) {
        let child_text =
            |tag: &str| object.children().find(|c| c.has_tag_name(tag)).and_then(|c| c.text()).map(str::trim);
        let name = child_text("name").ok_or_else(|| xml_error("an <object> has no <name>".into()))?;
        let class = VOC_CLASSES
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| xml_error(format!("unknown class name `{name}`; VOC has {}", VOC_CLASSES.join(", "))))?
            as u32;
        let is_difficult = child_text("difficult") == Some("1");
        match (is_difficult, policy) {
            (true, DifficultPolicy::Exclude) => {}
            (true, DifficultPolicy::Unknown) => unknown.push(class),
            _ => positives.push(class),
        }
    }
    positives.sort_unstable();
    positives.dedup();
    unknown.sort_unstable();
    unknown.dedup();
    unknown.retain(|c| positives.binary_search(c).is_err());
    Ok((positives, unknown))
}
