//! Open Images (V6 and V7) as Google ships it:
//!
//! ```text
//! <root>/oidv7-classes-trainable.txt                  one MID per line: the classes, in order
//! <root>/oidv7-class-descriptions.csv                 LabelName,DisplayName: the classes' names
//! <root>/oidv7-train-annotations-human-imagelabels.csv ImageID,Source,LabelName,Confidence
//! <root>/oidv7-train-annotations-machine-imagelabels.csv (optional, same columns)
//! <root>/train/<ImageID>.jpg
//! ```
//!
//! with V6's names (`oidv6-…`, `validation-annotations-…`) found as well.
//! Human-verified labels are positives (Confidence 1) and verified
//! negatives (0); every other trainable class of an image is unknown
//! ([`Unlisted::Unknown`]). Machine-generated labels at or above a
//! confidence threshold can join them as positives; a human verification
//! of the same class wins. Labels of classes outside the trainable list are
//! dropped and counted. The files are read as streams by a CSV reader,
//! never held whole: the training split has 60 M rows.

use crate::data::dataset::Dataset;
use crate::data::error::{io_error, DataError, Result};
use crate::data::labels::{decode, encode, LabelState, Unlisted, MAX_CLASSES};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// How many missing images a note names before it only counts.
const NAMED_MISSING: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct OpenImagesOptions {
    /// Machine-generated labels with at least this confidence join the human-verified ones as positives;
    /// `None` leaves them out.
    pub machine_threshold: Option<f32>,
    /// A listed image missing from `<split>/` is an error rather than a note.
    pub strict: bool,
    /// Leave the image folder unread: every listed image is taken to be there.
    pub skip_image_check: bool,
}

/// The files of one split.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenImagesSplit {
    pub root: PathBuf,
    /// The folder name: `train`, `validation` or `test`.
    pub split: String,
    pub trainable: PathBuf,
    pub descriptions: Option<PathBuf>,
    pub human: PathBuf,
    pub machine: Option<PathBuf>,
}

/// What reading a split left out, for the run's notes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OpenImagesCounts {
    /// Label rows of classes outside the trainable list.
    pub untrainable_rows: u64,
    /// Machine rows below the confidence threshold.
    pub machine_rows_below: u64,
    /// Listed images missing from the image folder, and the first few of them.
    pub missing_images: usize,
    pub first_missing: Vec<String>,
}

impl OpenImagesSplit {
    /// Finds `split` (`train`, `validation` or `val`, `test`) under `root`, in V7's or V6's names.
    pub fn find(root: &Path, split: &str) -> Result<Self> {
        let split = match split {
            "val" | "validation" => "validation",
            other => other,
        };
        let (human, machine): (&[&str], &[&str]) = match split {
            "train" => (
                &[
                    "oidv7-train-annotations-human-imagelabels.csv",
                    "oidv6-train-annotations-human-imagelabels.csv",
                    "train-annotations-human-imagelabels.csv",
                ],
                &["oidv7-train-annotations-machine-imagelabels.csv", "train-annotations-machine-imagelabels.csv"],
            ),
            "validation" => (
                &["oidv7-val-annotations-human-imagelabels.csv", "validation-annotations-human-imagelabels.csv"],
                &["oidv7-val-annotations-machine-imagelabels.csv", "validation-annotations-machine-imagelabels.csv"],
            ),
            "test" => (
                &["oidv7-test-annotations-human-imagelabels.csv", "test-annotations-human-imagelabels.csv"],
                &["oidv7-test-annotations-machine-imagelabels.csv", "test-annotations-machine-imagelabels.csv"],
            ),
            other => {
                return Err(DataError::Option {
                    name: "data.train_split / data.val_split",
                    message: format!("Open Images has the splits train, validation (or val) and test, not `{other}`"),
                })
            }
        };
        let first = |names: &[&str]| names.iter().map(|n| root.join(n)).find(|p| p.is_file());
        let missing = |what: &str, names: &[&str]| DataError::Option {
            name: "data.path",
            message: format!("{} holds no {what} ({})", root.display(), names.join(", ")),
        };
        let trainable_names = ["oidv7-classes-trainable.txt", "oidv6-classes-trainable.txt", "classes-trainable.txt"];
        let description_names =
            ["oidv7-class-descriptions.csv", "oidv6-class-descriptions.csv", "class-descriptions.csv"];
        Ok(Self {
            root: root.to_path_buf(),
            split: split.to_string(),
            trainable: first(&trainable_names).ok_or_else(|| missing("trainable class list", &trainable_names))?,
            descriptions: first(&description_names),
            human: first(human).ok_or_else(|| missing(&format!("{split} human-verified labels"), human))?,
            machine: first(machine),
        })
    }

    /// The split as a dataset (unlisted labels unknown), with what was left out.
    pub fn load(&self, options: &OpenImagesOptions) -> Result<(Dataset, OpenImagesCounts)> {
        let mids = read_trainable(&self.trainable)?;
        let class_names = match &self.descriptions {
            Some(path) => display_names(path, &mids)?,
            None => mids.clone(),
        };
        let index: HashMap<Vec<u8>, u32> =
            mids.iter().enumerate().map(|(i, m)| (m.as_bytes().to_vec(), i as u32)).collect();
        let mut counts = OpenImagesCounts::default();
        let mut rows = Rows::default();
        rows.read(&self.human, &index, Source::Human, &mut counts)?;
        if let (Some(threshold), Some(machine)) = (options.machine_threshold, &self.machine) {
            rows.read(machine, &index, Source::Machine(threshold), &mut counts)?;
        }
        let images = self.root.join(&self.split);
        let mut dataset = rows.into_dataset(class_names, images.clone());
        if !options.skip_image_check {
            self.check_images(&mut dataset, &images, options.strict, &mut counts)?;
        }
        Ok((dataset, counts))
    }

    fn check_images(
        &self,
        dataset: &mut Dataset,
        folder: &Path,
        strict: bool,
        counts: &mut OpenImagesCounts,
    ) -> Result<()> {
        let mut present: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(folder).map_err(io_error(folder))? {
            let name = entry.map_err(io_error(folder))?.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".jpg")).and_then(parse_image_id) {
                present.push(id);
            }
        }
        present.sort_unstable();
        let id_of = |i: usize| dataset.path(i).file_stem().and_then(|s| s.to_str()).and_then(parse_image_id);
        let missing: Vec<usize> =
            (0..dataset.len()).filter(|&i| id_of(i).is_none_or(|id| present.binary_search(&id).is_err())).collect();
        counts.missing_images = missing.len();
        counts.first_missing = missing.iter().take(NAMED_MISSING).map(|&i| image_id(&dataset.path(i))).collect();
        if strict && !missing.is_empty() {
            return Err(DataError::Option {
                name: "data.strict",
                message: format!(
                    "{} images listed in {} are not in {} (first: {})",
                    missing.len(),
                    self.human.display(),
                    folder.display(),
                    counts.first_missing.join(", ")
                ),
            });
        }
        if !missing.is_empty() {
            let mut gone = vec![false; dataset.len()];
            missing.iter().for_each(|&i| gone[i] = true);
            dataset.retain(|i| !gone[i]);
        }
        Ok(())
    }
}

impl OpenImagesCounts {
    /// One line per thing left out, for the run's log.
    pub fn notes(&self, split: &str) -> Vec<String> {
        let mut notes = Vec::new();
        if self.untrainable_rows > 0 {
            notes.push(format!(
                "{split}: {} label rows of classes outside the trainable list dropped",
                self.untrainable_rows
            ));
        }
        if self.machine_rows_below > 0 {
            notes.push(format!(
                "{split}: {} machine-generated labels below the threshold left out",
                self.machine_rows_below
            ));
        }
        if self.missing_images > 0 {
            notes.push(format!(
                "{split}: {} listed images are missing and left out (first: {}); data.strict makes this an error",
                self.missing_images,
                self.first_missing.join(", ")
            ));
        }
        notes
    }
}

#[derive(Clone, Copy)]
enum Source {
    Human,
    /// Kept as positives at or above this confidence.
    Machine(f32),
}

/// The label rows read so far: each image's index in order of first
/// appearance, and one entry per row, (image index << 32 | label).
#[derive(Default)]
struct Rows {
    index_of: HashMap<u64, u32>,
    ids: Vec<u64>,
    entries: Vec<u64>,
}

/// While reading, a machine positive is held in the unknown state's slot,
/// below both human states in precedence; it becomes a positive once each
/// image's labels are merged.
const MACHINE_POSITIVE: LabelState = LabelState::Unknown;

impl Rows {
    fn read(
        &mut self,
        path: &Path,
        classes: &HashMap<Vec<u8>, u32>,
        source: Source,
        counts: &mut OpenImagesCounts,
    ) -> Result<()> {
        let file = File::open(path).map_err(io_error(path))?;
        let mut reader = csv::ReaderBuilder::new().from_reader(BufReader::with_capacity(1 << 20, file));
        let bad = |line: u64, message: String| DataError::List { path: path.to_path_buf(), line, message };
        let headers = reader.byte_headers().map_err(|e| bad(1, e.to_string()))?.clone();
        let column = |name: &str| headers.iter().position(|h| h == name.as_bytes());
        let (Some(image_col), Some(label_col), Some(confidence_col)) =
            (column("ImageID"), column("LabelName"), column("Confidence"))
        else {
            return Err(bad(1, format!("the header must name ImageID, LabelName and Confidence, found {headers:?}")));
        };
        let mut record = csv::ByteRecord::new();
        while reader
            .read_byte_record(&mut record)
            .map_err(|e| bad(e.position().map_or(0, |p| p.line()), e.to_string()))?
        {
            let line = record.position().map_or(0, |p| p.line());
            let field = |col: usize| record.get(col).unwrap_or_default();
            let Some(&class) = classes.get(field(label_col)) else {
                counts.untrainable_rows += 1;
                continue;
            };
            let confidence = std::str::from_utf8(field(confidence_col))
                .ok()
                .and_then(|c| c.trim().parse::<f32>().ok())
                .filter(|c| (0.0..=1.0).contains(c))
                .ok_or_else(|| {
                    let value = String::from_utf8_lossy(field(confidence_col)).into_owned();
                    bad(line, format!("Confidence `{value}` is not a number between 0 and 1"))
                })?;
            let state = match source {
                Source::Human if confidence >= 0.5 => LabelState::Positive,
                Source::Human => LabelState::Negative,
                Source::Machine(threshold) if confidence >= threshold => MACHINE_POSITIVE,
                Source::Machine(_) => {
                    counts.machine_rows_below += 1;
                    continue;
                }
            };
            let id = std::str::from_utf8(field(image_col)).ok().and_then(parse_image_id).ok_or_else(|| {
                let value = String::from_utf8_lossy(field(image_col)).into_owned();
                bad(line, format!("ImageID `{value}` is not 16 hexadecimal digits"))
            })?;
            let next = self.ids.len() as u32;
            let image = *self.index_of.entry(id).or_insert_with(|| next);
            if image == next {
                self.ids.push(id);
            }
            self.entries.push(u64::from(image) << 32 | u64::from(encode(class, state)));
        }
        Ok(())
    }

    fn into_dataset(self, class_names: Vec<String>, images: PathBuf) -> Dataset {
        let Rows { index_of, ids, mut entries } = self;
        drop(index_of);
        entries.sort_unstable();
        let mut dataset = Dataset::new(class_names, Unlisted::Unknown, images);
        let mut labels: Vec<u32> = Vec::new();
        let mut rest = &entries[..];
        for (image, &id) in ids.iter().enumerate() {
            let count = rest.iter().take_while(|&&e| (e >> 32) as usize == image).count();
            labels.clear();
            labels.extend(rest[..count].iter().map(|&e| e as u32));
            rest = &rest[count..];
            merge_sources(&mut labels);
            dataset.push(Path::new(&format!("{id:016x}.jpg")), &mut labels);
        }
        dataset.shrink_to_fit();
        dataset
    }
}

/// One entry per class (the first in precedence), machine positives made positives.
fn merge_sources(labels: &mut Vec<u32>) {
    labels.sort_unstable_by_key(|&e| (e & (MAX_CLASSES as u32 - 1), e >> 30));
    labels.dedup_by_key(|e| *e & (MAX_CLASSES as u32 - 1));
    for entry in labels.iter_mut() {
        if let (class, MACHINE_POSITIVE) = decode(*entry) {
            *entry = encode(class, LabelState::Positive);
        }
    }
}

/// An Open Images ImageID: 16 hexadecimal digits.
fn parse_image_id(text: &str) -> Option<u64> {
    (text.len() == 16).then(|| u64::from_str_radix(text, 16).ok()).flatten()
}

fn image_id(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

fn read_trainable(path: &Path) -> Result<Vec<String>> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut mids = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(io_error(path))?;
        let mid = line.trim();
        if !mid.is_empty() {
            mids.push(mid.to_string());
        }
    }
    if mids.is_empty() {
        return Err(DataError::Empty(path.to_path_buf()));
    }
    Ok(mids)
}

/// The display name of each MID (`LabelName,DisplayName`, with or without
/// that header); a MID without one keeps its MID, and a name two classes
/// share gets its MID appended, so that names stay unique.
fn display_names(path: &Path, mids: &[String]) -> Result<Vec<String>> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(BufReader::new(file));
    let wanted: HashMap<&str, usize> = mids.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
    let mut names = mids.to_vec();
    for record in reader.records() {
        let record = record.map_err(|e| DataError::List {
            path: path.to_path_buf(),
            line: e.position().map_or(0, |p| p.line()),
            message: e.to_string(),
        })?;
        if let (Some(mid), Some(name)) = (record.get(0), record.get(1)) {
            if let Some(&i) = wanted.get(mid) {
                names[i] = name.to_string();
            }
        }
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    names.iter().for_each(|n| *seen.entry(n.clone()).or_default() += 1);
    Ok(names
        .into_iter()
        .zip(mids)
        .map(|(name, mid)| if seen[&name] > 1 && name != *mid { format!("{name} ({mid})") } else { name })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_labels_win_over_machine_ones_and_machine_positives_become_positives() {
        let mut labels = vec![
            encode(4, MACHINE_POSITIVE),
            encode(4, LabelState::Negative),
            encode(9, MACHINE_POSITIVE),
            encode(2, LabelState::Positive),
            encode(2, MACHINE_POSITIVE),
        ];
        merge_sources(&mut labels);
        let decoded: Vec<(u32, LabelState)> = labels.iter().map(|&e| decode(e)).collect();
        assert_eq!(decoded, [(2, LabelState::Positive), (4, LabelState::Negative), (9, LabelState::Positive)]);
    }

    #[test]
    fn image_ids_are_sixteen_hex_digits() {
        assert_eq!(parse_image_id("000002b66c9c498e"), Some(0x0000_02b6_6c9c_498e));
        assert_eq!(parse_image_id("2b66c9c498e"), None);
        assert_eq!(parse_image_id("000002b66c9c498g"), None);
    }
}
