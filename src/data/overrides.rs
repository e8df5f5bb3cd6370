//! Label corrections laid over a source's own labels (`data.label_overrides`):
//! a CSV of `image,class,label` rows, `label` being `1` (present), `0`
//! (verified absent) or `unknown`. `asl audit` writes one for its
//! `relabeled.yaml`: the suspect labels marked unknown, so that the loss
//! gives them the partial-label weight, and strongly supported missing
//! positives added. `image` is the path the dataset names the image by
//! (`<shard>/<key>` for shards), as in the audit's `images.txt` and
//! `suspects.csv`.

use super::dataset::{Dataset, Sample};
use super::error::{DataError, Result};
use super::labels::{encode, LabelState};
use std::collections::HashMap;
use std::path::Path;

/// The corrections of one file, by image.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelOverrides {
    by_image: HashMap<String, Vec<(u32, LabelState)>>,
}

impl LabelOverrides {
    /// Reads `path` against the split's classes; a bad row is named by line.
    pub fn read(path: &Path, class_names: &[String]) -> Result<Self> {
        let index: HashMap<&str, u32> = class_names.iter().enumerate().map(|(i, c)| (c.as_str(), i as u32)).collect();
        let mut reader = csv::Reader::from_path(path)
            .map_err(|e| DataError::Decode { path: path.into(), message: e.to_string() })?;
        let headers = reader.headers().map_err(|e| DataError::Decode { path: path.into(), message: e.to_string() })?;
        if headers.iter().take(3).collect::<Vec<_>>() != ["image", "class", "label"] {
            let message = "expected the header image,class,label".to_string();
            return Err(DataError::List { path: path.into(), line: 1, message });
        }
        let mut by_image: HashMap<String, Vec<(u32, LabelState)>> = HashMap::new();
        for (row, record) in reader.records().enumerate() {
            let line = row as u64 + 2;
            let bad = |message: String| DataError::List { path: path.into(), line, message };
            let record = record.map_err(|e| bad(e.to_string()))?;
            let (image, class, label) = (&record[0], &record[1], record.get(2).unwrap_or_default());
            let class = *index.get(class).ok_or_else(|| bad(format!("class `{class}` is not one of the split's")))?;
            let state = match label {
                "1" => LabelState::Positive,
                "0" => LabelState::Negative,
                "unknown" => LabelState::Unknown,
                other => return Err(bad(format!("label `{other}` is not 1, 0 or unknown"))),
            };
            by_image.entry(image.to_string()).or_default().push((class, state));
        }
        Ok(Self { by_image })
    }

    /// Images with a correction.
    pub fn images(&self) -> usize {
        self.by_image.len()
    }

    /// Lays the corrections over `dataset`'s labels; returns how many images they changed.
    pub fn apply(&self, dataset: &mut Dataset) -> usize {
        let mut changed = 0;
        dataset.relabel(|path, entries| {
            let Some(corrections) = self.by_image.get(&path.display().to_string()) else { return };
            changed += 1;
            entries.retain(|&entry| corrections.iter().all(|(class, _)| super::labels::decode(entry).0 != *class));
            entries.extend(corrections.iter().map(|&(class, state)| encode(class, state)));
        });
        changed
    }

    /// Lays the corrections for `image` over a streamed sample's labels.
    pub fn apply_to_sample(&self, image: &str, sample: &mut Sample) {
        let Some(corrections) = self.by_image.get(image) else { return };
        for &(class, state) in corrections {
            for list in [&mut sample.positives, &mut sample.negatives, &mut sample.unknown] {
                list.retain(|&c| c != class);
            }
            match state {
                LabelState::Positive => sample.positives.push(class),
                LabelState::Negative => sample.negatives.push(class),
                LabelState::Unknown => sample.unknown.push(class),
            }
        }
    }

    /// Whether some correction marks a label unknown.
    pub fn marks_unknown(&self) -> bool {
        self.by_image.values().flatten().any(|(_, state)| *state == LabelState::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset() -> Dataset {
        let classes = vec!["cat".to_string(), "dog".into(), "owl".into()];
        let samples =
            vec![Sample::new("/d/a.jpg".into(), vec![0], vec![]), Sample::new("/d/b.jpg".into(), vec![1, 2], vec![])];
        Dataset::from_samples(classes, samples)
    }

    #[test]
    fn corrections_replace_the_state_of_their_classes_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overrides.csv");
        std::fs::write(&path, "image,class,label\n/d/a.jpg,cat,unknown\n/d/a.jpg,owl,1\n/d/b.jpg,dog,0\n").unwrap();
        let mut data = dataset();
        let overrides = LabelOverrides::read(&path, &data.class_names).unwrap();
        assert!(overrides.marks_unknown());
        assert_eq!(overrides.apply(&mut data), 2);
        let (a, b) = (data.sample(0), data.sample(1));
        assert_eq!((a.positives, a.negatives, a.unknown), (vec![2], vec![], vec![0]));
        assert_eq!((b.positives, b.negatives, b.unknown), (vec![2], vec![1], vec![]));
    }

    #[test]
    fn a_bad_row_is_named_by_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overrides.csv");
        let classes = dataset().class_names;
        for (text, why) in [
            ("image,class,label\n/d/a.jpg,emu,1\n", "2: class `emu` is not one of the split's"),
            ("image,class,label\n/d/a.jpg,cat,maybe\n", "2: label `maybe` is not 1, 0 or unknown"),
            ("path,labels\n", "1: expected the header image,class,label"),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = LabelOverrides::read(&path, &classes).unwrap_err().to_string();
            assert!(error.starts_with(&path.display().to_string()) && error.contains(why), "{error}");
        }
    }
}
