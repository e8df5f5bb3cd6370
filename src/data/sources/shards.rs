//! WebDataset tar shards, as `img2dataset` and `asl pack` write them: a
//! sample is the run of consecutive tar members sharing a key (the member
//! name up to the first dot of its file name), here an image (`.jpg`,
//! `.jpeg`, `.png`, `.webp`) and its labels, either
//! `{"labels": [...], "negatives": [...], "unknown": [...]}` by class name
//! in a `.json`, or class indices in a `.cls`. Other members are ignored.
//!
//! Shards are only ever read front to back, one open file per reader:
//! nothing is indexed or hashed when a run starts, because on a network
//! file system that would cost as much as an epoch. The sample counts that
//! lay out an epoch come from `manifest.json` beside the shards; a shard it
//! does not list is counted once by walking its headers.

use crate::data::dataset::Sample;
use crate::data::error::{io_error, DataError, Result};
use crate::data::labels::Unlisted;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub const CLASSES_FILE: &str = "classes.txt";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];
/// Large reads keep a network file system streaming.
const READ_BUFFER: usize = 1 << 20;
/// The largest tar member read into memory: no image a training set holds
/// comes near it, and a corrupt header claiming more is refused before
/// anything is allocated.
pub const MAX_MEMBER_BYTES: u64 = 1 << 30;

/// What `asl pack` writes beside the shards.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// What a label a sample does not list is: negative (COCO, VOC) or unknown (Open Images).
    pub unlisted: Unlisted,
    /// Whether some sample lists an unknown label.
    pub lists_unknown: bool,
    pub splits: BTreeMap<String, SplitManifest>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitManifest {
    pub samples: u64,
    pub shards: Vec<ShardEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    /// File name, beside the manifest.
    pub name: String,
    pub samples: u64,
    pub bytes: u64,
    pub sha256: String,
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(io_error(path))?;
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| DataError::Json {
            path: path.to_path_buf(),
            json_path: e.path().to_string(),
            message: e.inner().to_string(),
        })
    }
}

/// One shard of a split and its sample count.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardFile {
    pub path: PathBuf,
    pub samples: u64,
}

/// How to find a split's shards and read their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardOptions<'a> {
    /// `train` finds `train-*.tar` in a directory.
    pub split: &'a str,
    /// The path names this split alone (`data.val_path`), so a directory's every `.tar` belongs to it.
    pub split_specific: bool,
    /// A classes file other than the `classes.txt` beside the shards.
    pub classes: Option<&'a Path>,
    /// What an unlisted label is when no manifest says.
    pub unlisted: Unlisted,
}

/// A split's shards, its classes and its label rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardSet {
    pub class_names: Vec<String>,
    class_index: HashMap<String, u32>,
    pub unlisted: Unlisted,
    /// Whether targets can hold unknown labels.
    pub partial: bool,
    pub shards: Vec<ShardFile>,
    /// Shards the manifest did not list, counted at open, for the run's log.
    pub notes: Vec<String>,
    /// Corrections laid over the samples' own labels as they are read (`data.label_overrides`).
    pub overrides: Option<std::sync::Arc<crate::data::LabelOverrides>>,
}

impl ShardSet {
    /// Finds the shards `spec` names (a brace pattern, a directory, a list
    /// file or one `.tar`), checks that each exists and reads the classes
    /// and the manifest beside them. Reads no shard that the manifest lists.
    pub fn open(spec: &Path, options: &ShardOptions) -> Result<Self> {
        let paths = shard_paths(spec, options)?;
        let home = paths[0].parent().unwrap_or(Path::new(".")).to_path_buf();
        let classes_path = options.classes.map_or_else(|| home.join(CLASSES_FILE), Path::to_path_buf);
        let class_names = read_classes(&classes_path)?;
        let manifest_path = home.join(MANIFEST_FILE);
        let manifest = if manifest_path.is_file() { Some(Manifest::read(&manifest_path)?) } else { None };
        let listed: HashMap<&str, u64> = manifest
            .iter()
            .flat_map(|m| m.splits.values())
            .flat_map(|s| &s.shards)
            .map(|e| (e.name.as_str(), e.samples))
            .collect();
        let (mut shards, mut counted) = (Vec::with_capacity(paths.len()), Vec::new());
        for path in paths {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let samples = match listed.get(name) {
                Some(&samples) if path.parent() == Some(&home) => samples,
                _ => {
                    counted.push(path.display().to_string());
                    count_samples(&path)?
                }
            };
            shards.push(ShardFile { path, samples });
        }
        let mut notes = Vec::new();
        if !counted.is_empty() {
            let sample = counted.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
            notes.push(format!(
                "{} shard(s) not in {} were counted by reading their headers ({sample}{}); `asl pack` writes a manifest",
                counted.len(),
                manifest_path.display(),
                if counted.len() > 3 { ", …" } else { "" }
            ));
        }
        let unlisted = manifest.as_ref().map_or(options.unlisted, |m| m.unlisted);
        let partial = unlisted == Unlisted::Unknown || manifest.as_ref().is_some_and(|m| m.lists_unknown);
        let class_index = class_names.iter().enumerate().map(|(i, c)| (c.clone(), i as u32)).collect();
        Ok(Self { class_names, class_index, unlisted, partial, shards, notes, overrides: None })
    }

    /// Samples in the split.
    pub fn len(&self) -> u64 {
        self.shards.iter().map(|s| s.samples).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// The name a sample goes by in warnings: `<shard>/<key>`.
    pub fn sample_path(&self, shard: u32, key: &str) -> PathBuf {
        self.shards[shard as usize].path.join(key)
    }

    /// The labels of a sample from its labels member (`extension` `json` or `cls`).
    pub fn parse_labels(&self, extension: &str, bytes: &[u8]) -> std::result::Result<Sample, String> {
        match extension {
            "json" => self.parse_json_labels(bytes),
            _ => self.parse_cls_labels(bytes),
        }
    }

    fn parse_json_labels(&self, bytes: &[u8]) -> std::result::Result<Sample, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Labels {
            labels: Vec<String>,
            #[serde(default)]
            negatives: Vec<String>,
            #[serde(default)]
            unknown: Vec<String>,
        }
        let labels: Labels = serde_json::from_slice(bytes).map_err(|e| format!("labels .json: {e}"))?;
        if !labels.unknown.is_empty() && !self.partial {
            return Err("lists unknown labels, but the split is fully annotated (set data.unlisted: unknown)".into());
        }
        let lookup = |names: &[String]| {
            names
                .iter()
                .map(|n| self.class_index.get(n).copied().ok_or_else(|| format!("label `{n}` is not in the classes")))
                .collect::<std::result::Result<Vec<u32>, String>>()
        };
        Ok(Sample {
            path: PathBuf::new(),
            positives: lookup(&labels.labels)?,
            negatives: lookup(&labels.negatives)?,
            unknown: lookup(&labels.unknown)?,
        })
    }

    fn parse_cls_labels(&self, bytes: &[u8]) -> std::result::Result<Sample, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "labels .cls is not UTF-8".to_string())?;
        let classes = self.num_classes();
        let positives = text
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .map(|t| match t.parse::<u32>() {
                Ok(c) if (c as usize) < classes => Ok(c),
                _ => Err(format!("label `{t}` in .cls is not a class index below {classes}")),
            })
            .collect::<std::result::Result<Vec<u32>, String>>()?;
        Ok(Sample { positives, ..Sample::default() })
    }
}

/// The classes file: one name per line, in index order.
pub fn read_classes(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::Layout {
            what: "the class names of the shards",
            root: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            tried: format!("{} (or set data.classes)", path.display()),
        },
        _ => DataError::Io { path: path.to_path_buf(), source },
    })?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.is_empty() {
        return Err(DataError::Empty(path.to_path_buf()));
    }
    Ok(names)
}

/// The shard files `spec` names, each checked to exist.
fn shard_paths(spec: &Path, options: &ShardOptions) -> Result<Vec<PathBuf>> {
    let text = spec.to_string_lossy();
    let (paths, listed_by) = if text.contains('{') {
        let paths = expand_braces(&text).map_err(|message| DataError::Option { name: "data.path", message })?;
        (paths.into_iter().map(PathBuf::from).collect(), format!("the pattern {text}"))
    } else if spec.is_dir() {
        return directory_shards(spec, options);
    } else if spec.extension().is_some_and(|e| e == "tar") {
        (vec![spec.to_path_buf()], "data.path".to_string())
    } else {
        (list_file_shards(spec)?, format!("the list {}", spec.display()))
    };
    if paths.is_empty() {
        return Err(DataError::Empty(spec.to_path_buf()));
    }
    match paths.iter().find(|p| !p.is_file()) {
        Some(missing) => Err(DataError::MissingShard { path: missing.clone(), listed_by }),
        None => Ok(paths),
    }
}

/// `<split>-*.tar` in `dir`, or every `.tar` of a directory given for this split alone.
fn directory_shards(dir: &Path, options: &ShardOptions) -> Result<Vec<PathBuf>> {
    let mut tars: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if path.extension().is_some_and(|e| e == "tar") && path.is_file() {
            tars.push(path);
        }
    }
    tars.sort();
    let prefix = format!("{}-", options.split);
    let of_split: Vec<PathBuf> = tars
        .iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)))
        .cloned()
        .collect();
    match (of_split.is_empty(), options.split_specific && !tars.is_empty()) {
        (false, _) => Ok(of_split),
        (true, true) => Ok(tars),
        (true, false) => Err(DataError::Layout {
            what: "the split's shards",
            root: dir.to_path_buf(),
            tried: format!("{prefix}*.tar"),
        }),
    }
}

/// A text file of shard paths, one per line, relative to the file's directory; `#` starts a comment.
fn list_file_shards(list: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(list).map_err(io_error(list))?;
    let base = list.parent().unwrap_or(Path::new("."));
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(|l| base.join(l))
        .collect())
}

/// Expands shell-style braces, `{000..123}` (zero-padded as written) and
/// `{a,b}`, in order, as WebDataset and `img2dataset` write shard names.
pub fn expand_braces(pattern: &str) -> std::result::Result<Vec<String>, String> {
    let Some(open) = pattern.find('{') else {
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..].find('}').map(|c| open + c).ok_or_else(|| format!("unclosed `{{` in {pattern}"))?;
    let (head, body, tail) = (&pattern[..open], &pattern[open + 1..close], &pattern[close + 1..]);
    let choices: Vec<String> = match body.split_once("..") {
        Some((from, to)) => {
            let parse = |s: &str| s.parse::<u64>().map_err(|_| format!("`{{{body}}}` in {pattern} is not a range"));
            let (a, b) = (parse(from)?, parse(to)?);
            if a > b {
                return Err(format!("`{{{body}}}` in {pattern} runs backwards"));
            }
            let width = if from.starts_with('0') && from.len() > 1 { from.len() } else { 0 };
            (a..=b).map(|n| format!("{n:0width$}")).collect()
        }
        None => body.split(',').map(String::from).collect(),
    };
    let tails = expand_braces(tail)?;
    Ok(choices.iter().flat_map(|c| tails.iter().map(move |t| format!("{head}{c}{t}"))).collect())
}

/// A member name's key and extension: up to and after the first dot of its file name.
pub fn split_member_name(name: &str) -> (&str, &str) {
    let file_start = name.rfind('/').map_or(0, |s| s + 1);
    match name[file_start..].find('.') {
        Some(dot) => (&name[..file_start + dot], &name[file_start + dot + 1..]),
        None => (name, ""),
    }
}

/// Counts a shard's samples from its headers, seeking past the data.
pub fn count_samples(path: &Path) -> Result<u64> {
    let mut file = std::fs::File::open(path).map_err(io_error(path))?;
    let mut samples = 0;
    walk_headers(&mut file, 0, &mut |_| {
        samples += 1;
        true
    })
    .map_err(|e| DataError::Decode { path: path.to_path_buf(), message: format!("bad tar: {}", e.message) })?;
    Ok(samples)
}

/// Calls `on_sample` with the start offset of each sample from byte
/// `offset` on, until it returns false, reading only headers: the data is
/// seeked past. Returns the offset where the walk stopped.
fn walk_headers(
    file: &mut std::fs::File,
    offset: u64,
    on_sample: &mut dyn FnMut(u64) -> bool,
) -> std::result::Result<u64, ReadFailure> {
    let failure =
        |offset: u64, e: &dyn std::fmt::Display| ReadFailure { offset, after_key: None, message: e.to_string() };
    file.seek(SeekFrom::Start(offset)).map_err(|e| failure(offset, &e))?;
    let mut archive = tar::Archive::new(file);
    let (mut last_key, mut end) = (None::<Vec<u8>>, offset);
    for entry in archive.entries_with_seek().map_err(|e| failure(offset, &e))? {
        let entry = entry.map_err(|e| failure(end, &e))?;
        let header_start = end;
        end = offset + entry.raw_file_position() + entry.size().div_ceil(512) * 512;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path_bytes();
        let key = split_member_name(&String::from_utf8_lossy(&name)).0.as_bytes().to_vec();
        if last_key.as_ref() != Some(&key) {
            if !on_sample(header_start) {
                return Ok(header_start);
            }
            last_key = Some(key);
        }
    }
    Ok(end)
}

/// A sample as read from a shard: its members' bytes, not yet checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawSample {
    pub key: String,
    /// Byte offset of the sample's first header: where a resumed reader seeks.
    pub start: u64,
    /// Byte offset just past the sample: where the next one starts.
    pub end: u64,
    /// `(extension, bytes)` of each member, the extension lowercased.
    pub members: Vec<(String, Vec<u8>)>,
}

impl RawSample {
    /// The image bytes and the labels, or why the sample cannot be used.
    pub fn parse(&self, set: &ShardSet) -> std::result::Result<(&[u8], Sample), String> {
        let member = |wanted: &[&str]| self.members.iter().find(|(e, _)| wanted.contains(&e.as_str()));
        let image = member(&IMAGE_EXTENSIONS).ok_or("no image member (.jpg, .jpeg, .png or .webp)")?;
        let labels = member(&["json", "cls"]).ok_or("no labels member (.json or .cls)")?;
        let sample = set.parse_labels(&labels.0, &labels.1)?;
        Ok((&image.1, sample))
    }
}

/// What ended a read early.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadFailure {
    /// Byte offset of the failure.
    pub offset: u64,
    /// The last sample read whole, if any.
    pub after_key: Option<String>,
    pub message: String,
}

/// Reads up to `count` samples of `path` front to back from byte
/// `offset` (a sample's start), after skipping `skip` samples by their
/// headers, and hands each to `emit` until it returns false. One open
/// file and one seek for the reading; the samples are read in order.
pub fn read_samples(
    path: &Path,
    offset: u64,
    skip: u64,
    count: u64,
    emit: &mut dyn FnMut(RawSample) -> bool,
) -> std::result::Result<(), ReadFailure> {
    let failure = |offset: u64, after_key: Option<String>, e: &dyn std::fmt::Display| ReadFailure {
        offset,
        after_key,
        message: e.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(|e| failure(offset, None, &e))?;
    let file_bytes = file.metadata().map_err(|e| failure(offset, None, &e))?.len();
    let offset = if skip == 0 {
        offset
    } else {
        let mut seen = 0;
        walk_headers(&mut file, offset, &mut |_| {
            seen += 1;
            seen <= skip
        })?
    };
    file.seek(SeekFrom::Start(offset)).map_err(|e| failure(offset, None, &e))?;
    let mut archive = tar::Archive::new(BufReader::with_capacity(READ_BUFFER, file));
    let entries = archive.entries().map_err(|e| failure(offset, None, &e))?;
    let (mut done, mut end) = (0u64, offset);
    let mut current: Option<RawSample> = None;
    let mut last_whole: Option<String> = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| failure(end, last_whole.clone(), &e))?;
        let header_start = end;
        end = offset + entry.raw_file_position() + entry.size().div_ceil(512) * 512;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let (key, extension) = split_member_name(&name);
        if current.as_ref().is_none_or(|c| c.key != key) {
            if let Some(finished) = current.take() {
                last_whole = Some(finished.key.clone());
                done += 1;
                if !emit(finished) || done == count {
                    return Ok(());
                }
            }
            current = Some(RawSample { key: key.to_string(), start: header_start, ..RawSample::default() });
        }
        let sample = current.as_mut().expect("a sample was just started");
        let data_start = offset + entry.raw_file_position();
        let left = file_bytes.saturating_sub(data_start);
        if entry.size() > left.min(MAX_MEMBER_BYTES) {
            let message = format!(
                "member {name} claims {} bytes, but the shard holds {left} after its header{}",
                entry.size(),
                if entry.size() > MAX_MEMBER_BYTES {
                    format!(" and members are read up to {MAX_MEMBER_BYTES}")
                } else {
                    String::new()
                }
            );
            return Err(failure(header_start, last_whole.clone(), &message));
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(|e| failure(header_start, last_whole.clone(), &e))?;
        if bytes.len() as u64 != entry.size() {
            let message = format!("member {name} ends after {} of its {} bytes", bytes.len(), entry.size());
            return Err(failure(header_start, last_whole.clone(), &message));
        }
        sample.members.push((extension.to_ascii_lowercase(), bytes));
        sample.end = end;
    }
    if let Some(last) = current {
        emit(last);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_expand_ranges_with_their_padding_and_lists_in_order() {
        assert_eq!(expand_braces("a-{008..011}.tar").unwrap(), ["a-008.tar", "a-009.tar", "a-010.tar", "a-011.tar"]);
        assert_eq!(expand_braces("{x,y}/{1..2}").unwrap(), ["x/1", "x/2", "y/1", "y/2"]);
        assert_eq!(expand_braces("plain.tar").unwrap(), ["plain.tar"]);
        assert!(expand_braces("a-{3..1}.tar").unwrap_err().contains("backwards"));
        assert!(expand_braces("a-{1..2.tar").unwrap_err().contains("unclosed"));
    }

    #[test]
    fn a_header_claiming_more_than_the_shard_holds_is_refused_before_anything_is_allocated() {
        let dir = tempfile::tempdir().unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_path("x.png").unwrap();
        header.set_size(1 << 40);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(&[7u8; 4096]);
        let path = dir.path().join("huge.tar");
        std::fs::write(&path, &bytes).unwrap();
        let failure = read_samples(&path, 0, 0, 1, &mut |_| true).unwrap_err();
        assert_eq!(failure.offset, 0);
        assert_eq!(failure.message, "member x.png claims 1099511627776 bytes, but the shard holds 4096 after its header and members are read up to 1073741824");
    }

    #[test]
    fn a_key_ends_at_the_first_dot_of_the_file_name() {
        assert_eq!(split_member_name("dir.v2/000123.seg.png"), ("dir.v2/000123", "seg.png"));
        assert_eq!(split_member_name("000123.json"), ("000123", "json"));
        assert_eq!(split_member_name("README"), ("README", ""));
    }
}
