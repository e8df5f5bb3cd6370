//! MS-COCO instance annotations (2014 and 2017 layouts) as multi-label data:
//! an image is positive for every category it has an instance of.

use crate::data::dataset::{Dataset, Sample};
use crate::data::error::{io_error, DataError, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What to do with `iscrowd: 1` instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CrowdPolicy {
    /// Count them as positives, as the reference does.
    #[default]
    Include,
    /// Ignore them: a crowd-only category stays negative.
    Exclude,
    /// Mark the category unknown for that image unless a non-crowd instance exists.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CocoOptions {
    /// Drop images without annotations (the reference does); by default they
    /// are kept as all-negative samples.
    pub drop_unannotated: bool,
    pub crowd: CrowdPolicy,
}

#[derive(Deserialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    #[serde(default)]
    annotations: Vec<CocoAnnotation>,
    categories: Vec<CocoCategory>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: i64,
    file_name: String,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    image_id: i64,
    category_id: i64,
    #[serde(default)]
    iscrowd: u8,
}

#[derive(Deserialize)]
struct CocoCategory {
    id: i64,
    name: String,
}

/// Where a split's annotation file and image folder are.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoSplit {
    pub annotations: PathBuf,
    pub images: PathBuf,
}

impl CocoSplit {
    /// Finds `split` (`train`, `val`, or a full name like `val2014`) under a
    /// COCO root: `annotations/instances_<name>.json` and `<name>/`, trying
    /// the 2017 then the 2014 names for the short forms.
    pub fn find(root: &Path, split: &str) -> Result<Self> {
        let names: Vec<String> = match split {
            "train" | "val" => vec![format!("{split}2017"), format!("{split}2014"), split.to_string()],
            other => vec![other.to_string()],
        };
        for name in &names {
            let annotations = root.join("annotations").join(format!("instances_{name}.json"));
            if annotations.is_file() {
                return Ok(Self { annotations, images: root.join(name) });
            }
        }
        let tried = names.iter().map(|n| format!("annotations/instances_{n}.json")).collect::<Vec<_>>().join(", ");
        Err(DataError::Layout { what: "COCO annotations", root: root.to_path_buf(), tried })
    }

    pub fn load(&self, options: &CocoOptions) -> Result<Dataset> {
        load_coco(&self.annotations, &self.images, options)
    }
}

/// Reads a COCO instances file. Category ids are mapped to 0..K-1 in
/// ascending id order, as the reference does.
pub fn load_coco(annotations: &Path, images_dir: &Path, options: &CocoOptions) -> Result<Dataset> {
    let text = std::fs::read_to_string(annotations).map_err(io_error(annotations))?;
    parse_coco(&text, annotations, images_dir, options)
}

/// [`load_coco`] on the file's text; `annotations` names it in errors.
pub fn parse_coco(text: &str, annotations: &Path, images_dir: &Path, options: &CocoOptions) -> Result<Dataset> {
    let deserializer = &mut serde_json::Deserializer::from_str(text);
    let file: CocoFile = serde_path_to_error::deserialize(deserializer).map_err(|e| DataError::Json {
        path: annotations.to_path_buf(),
        json_path: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    let categories: BTreeMap<i64, String> = file.categories.into_iter().map(|c| (c.id, c.name)).collect();
    let index_of: HashMap<i64, u32> = categories.keys().enumerate().map(|(i, &id)| (id, i as u32)).collect();
    let position: HashMap<i64, usize> = file.images.iter().enumerate().map(|(i, img)| (img.id, i)).collect();
    let mut labels: Vec<(Vec<u32>, Vec<u32>)> = vec![Default::default(); file.images.len()];
    let mut annotated = vec![false; file.images.len()];
    for annotation in &file.annotations {
        let &image = position
            .get(&annotation.image_id)
            .ok_or(DataError::UnknownImage { path: annotations.to_path_buf(), id: annotation.image_id })?;
        let &class = index_of.get(&annotation.category_id).ok_or_else(|| DataError::UnknownCategory {
            path: annotations.to_path_buf(),
            image: file.images[image].file_name.clone(),
            id: annotation.category_id,
        })?;
        annotated[image] = true;
        let (positives, crowd_only) = &mut labels[image];
        match (annotation.iscrowd != 0, options.crowd) {
            (true, CrowdPolicy::Exclude) => {}
            (true, CrowdPolicy::Unknown) => crowd_only.push(class),
            _ => positives.push(class),
        }
    }
    let samples = file
        .images
        .iter()
        .zip(labels)
        .zip(annotated)
        .filter(|(_, annotated)| *annotated || !options.drop_unannotated)
        .map(|((image, (mut positives, mut unknown)), _)| {
            positives.sort_unstable();
            positives.dedup();
            unknown.sort_unstable();
            unknown.dedup();
            unknown.retain(|c| positives.binary_search(c).is_err());
            Sample::new(images_dir.join(&image.file_name), positives, unknown)
        })
        .collect();
    Ok(Dataset::from_samples(categories.into_values().collect(), samples))
}
