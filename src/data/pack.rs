//! Writing a split as WebDataset tar shards (`asl pack`), and checking a
//! packed directory against its manifest (`asl pack --verify`).
//!
//! A sample is `<key>.<ext>` (the source image's bytes, copied, or with
//! `resize` re-encoded as JPEG at a short side) and `<key>.json` (its
//! labels by class name). The key is the image's file stem, its dots made
//! underscores: a WebDataset key ends at the first dot of a member name.
//! Each shard is written under a temporary name, synced and renamed, so a
//! stopped pack leaves only whole shards.

use super::dataset::{Dataset, Sample};
use super::error::{io_error, DataError, Result};
use super::sources::{
    count_samples, Manifest, ShardEntry, SplitManifest, CLASSES_FILE, IMAGE_EXTENSIONS, MANIFEST_FILE,
};
use super::transform::decode_rgb;
use crate::atomic::{sync_dir, sync_file, write_bytes_atomically};
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Samples prepared in parallel before being written in order.
const CHUNK: usize = 256;
const RESIZED_QUALITY: u8 = 95;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PackOptions {
    /// A shard is closed once it holds about this many bytes.
    pub shard_bytes: u64,
    /// Store images resized to this short side (never enlarged).
    pub resize: Option<u32>,
    /// Stop at the first unreadable image instead of leaving it out.
    pub strict: bool,
}

/// What packing a split reports as it goes.
pub enum PackEvent<'a> {
    /// This many more samples were handled.
    Samples(u64),
    /// An image was left out.
    Skipped { path: &'a Path, reason: &'a str },
}

/// Writes `dataset` as `<split>-NNNNNN.tar` into `out` and returns its manifest entry.
pub fn pack_split(
    dataset: &Dataset,
    split: &str,
    out: &Path,
    options: &PackOptions,
    on_event: &mut dyn FnMut(PackEvent),
) -> Result<SplitManifest> {
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    refuse_existing_shards(out, split)?;
    let keys = sample_keys(dataset)?;
    let mut writer = ShardWriter { out: out.to_path_buf(), split: split.to_string(), open: None, shards: Vec::new() };
    let indices: Vec<usize> = (0..dataset.len()).collect();
    for chunk in indices.chunks(CHUNK) {
        let prepared: Vec<_> = chunk.par_iter().map(|&i| prepare(dataset, i, options.resize)).collect();
        for (&index, member) in chunk.iter().zip(prepared) {
            match member {
                Ok((extension, image)) => {
                    let labels = labels_json(&dataset.sample(index), &dataset.class_names);
                    writer.append(&keys[index], &extension, &image, &labels, options.shard_bytes)?;
                }
                Err(reason) if !options.strict => {
                    on_event(PackEvent::Skipped { path: &dataset.path(index), reason: &reason });
                }
                Err(reason) => return Err(DataError::Decode { path: dataset.path(index), message: reason }),
            }
        }
        on_event(PackEvent::Samples(chunk.len() as u64));
    }
    writer.close()?;
    sync_dir(out).map_err(io_error(out))?;
    Ok(SplitManifest { samples: writer.shards.iter().map(|s| s.samples).sum(), shards: writer.shards })
}

/// Writes `classes.txt` and `manifest.json` beside the shards.
pub fn write_index(out: &Path, class_names: &[String], manifest: &Manifest) -> Result<()> {
    let classes = class_names.join("\n") + "\n";
    let path = out.join(CLASSES_FILE);
    write_bytes_atomically(&path, classes.as_bytes()).map_err(io_error(&path))?;
    let json = serde_json::to_string_pretty(manifest).expect("a manifest always serialises");
    let path = out.join(MANIFEST_FILE);
    write_bytes_atomically(&path, json.as_bytes()).map_err(io_error(&path))
}

/// Shards of a split already in `out` would be mixed with the new ones.
fn refuse_existing_shards(out: &Path, split: &str) -> Result<()> {
    let prefix = format!("{split}-");
    let mut existing = None;
    for entry in std::fs::read_dir(out).map_err(io_error(out))? {
        let entry = entry.map_err(io_error(out))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".tar") {
            existing = Some(entry);
            break;
        }
    }
    match existing {
        Some(entry) => Err(DataError::Option {
            name: "--out",
            message: format!(
                "{} already holds {split} shards ({}); remove them or pick another directory",
                out.display(),
                entry.path().display()
            ),
        }),
        None => Ok(()),
    }
}

/// Each sample's key: its image's file stem, made a plain member name
/// ([`member_key`]); keys must be unique in a split.
fn sample_keys(dataset: &Dataset) -> Result<Vec<String>> {
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(dataset.len());
    (0..dataset.len())
        .map(|index| {
            let path = dataset.path(index);
            let key = member_key(&path)?;
            if let Some(first) = seen.insert(key.clone(), index) {
                return Err(DataError::Option {
                    name: "--data",
                    message: format!(
                        "{} and {} both make the sample key `{key}`; a split's image file names must be unique",
                        dataset.path(first).display(),
                        path.display()
                    ),
                });
            }
            Ok(key)
        })
        .collect()
}

/// The key of the image at `path`: its file stem with every character that
/// would not stay inside one tar member name replaced by `_`. A dot (a
/// WebDataset key ends at the first one), a path separator (`/`, or `\`
/// for readers on Windows) and control characters cannot reach a shard, so
/// no member is written outside its sample or as a path to elsewhere.
fn member_key(path: &Path) -> Result<String> {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let key: String =
        stem.chars().map(|c| if c == '.' || c == '/' || c == '\\' || c.is_control() { '_' } else { c }).collect();
    match key.is_empty() {
        true => Err(DataError::Option {
            name: "--data",
            message: format!("{} has no file name to make a sample key of", path.display()),
        }),
        false => Ok(key),
    }
}

/// Sample `index`'s image member: its extension and bytes.
fn prepare(dataset: &Dataset, index: usize, resize: Option<u32>) -> std::result::Result<(String, Vec<u8>), String> {
    let path = dataset.path(index);
    let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if !IMAGE_EXTENSIONS.contains(&extension.as_str()) {
        return Err(format!("`.{extension}` is not an image extension shards carry ({})", IMAGE_EXTENSIONS.join(", ")));
    }
    let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
    let Some(side) = resize else {
        return Ok((extension, bytes));
    };
    let image = decode_rgb(&path).map_err(|e| e.to_string())?;
    let (width, height) = image.dimensions();
    if width.min(height) <= side {
        return Ok((extension, bytes));
    }
    let scale = f64::from(side) / f64::from(width.min(height));
    let size = |n: u32| ((f64::from(n) * scale).round() as u32).max(side);
    let (w, h) = if width < height { (side, size(height)) } else { (size(width), side) };
    let resized = image::imageops::resize(&image, w, h, image::imageops::FilterType::Triangle);
    let mut encoded = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut encoded, RESIZED_QUALITY)
        .encode_image(&resized)
        .map_err(|e| e.to_string())?;
    Ok(("jpg".into(), encoded))
}

#[derive(Serialize)]
struct LabelsMember<'a> {
    labels: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    negatives: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unknown: Vec<&'a str>,
}

fn labels_json(sample: &Sample, class_names: &[String]) -> Vec<u8> {
    let names = |classes: &[u32]| classes.iter().map(|&c| class_names[c as usize].as_str()).collect();
    let member = LabelsMember {
        labels: names(&sample.positives),
        negatives: names(&sample.negatives),
        unknown: names(&sample.unknown),
    };
    serde_json::to_vec(&member).expect("labels always serialise")
}

/// Bytes written through it are hashed and counted.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct OpenShard {
    path: PathBuf,
    tmp: PathBuf,
    builder: tar::Builder<Hashing<BufWriter<std::fs::File>>>,
    samples: u64,
}

struct ShardWriter {
    out: PathBuf,
    split: String,
    open: Option<OpenShard>,
    shards: Vec<ShardEntry>,
}

impl ShardWriter {
    fn append(&mut self, key: &str, extension: &str, image: &[u8], labels: &[u8], shard_bytes: u64) -> Result<()> {
        if self.open.as_ref().is_some_and(|s| s.samples > 0 && s.builder.get_ref().bytes >= shard_bytes) {
            self.close()?;
        }
        if self.open.is_none() {
            let path = self.out.join(format!("{}-{:06}.tar", self.split, self.shards.len()));
            let tmp = path.with_extension("tar.tmp");
            let file = std::fs::File::create(&tmp).map_err(io_error(&tmp))?;
            let hashing = Hashing { inner: BufWriter::with_capacity(1 << 20, file), hash: Sha256::new(), bytes: 0 };
            self.open = Some(OpenShard { path, tmp, builder: tar::Builder::new(hashing), samples: 0 });
        }
        let shard = self.open.as_mut().expect("a shard is open");
        for (extension, bytes) in [(extension, image), ("json", labels)] {
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            let name = format!("{key}.{extension}");
            shard.builder.append_data(&mut header, &name, bytes).map_err(io_error(&shard.tmp))?;
        }
        shard.samples += 1;
        Ok(())
    }

    /// Finishes the open shard: end-of-archive blocks, sync, rename into place.
    fn close(&mut self) -> Result<()> {
        let Some(shard) = self.open.take() else { return Ok(()) };
        let tmp = shard.tmp.clone();
        let hashing = shard.builder.into_inner().map_err(io_error(&tmp))?;
        let Hashing { inner, hash, bytes } = hashing;
        inner.into_inner().map_err(|e| DataError::Io { path: tmp.clone(), source: e.into_error() })?;
        sync_file(&tmp).map_err(io_error(&tmp))?;
        std::fs::rename(&tmp, &shard.path).map_err(io_error(&shard.path))?;
        let name = shard.path.file_name().expect("a shard has a name").to_string_lossy().into_owned();
        let sha256 = hex(&hash.finalize());
        self.shards.push(ShardEntry { name, samples: shard.samples, bytes, sha256 });
        Ok(())
    }
}

/// One way a packed directory departs from its manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub shard: PathBuf,
    pub problem: String,
}

/// Checks every shard `dir`'s manifest lists: its size, SHA-256 and
/// sample count. `on_bytes` is told of the bytes read, for a progress bar.
pub fn verify(dir: &Path, on_bytes: &mut dyn FnMut(u64)) -> Result<(Manifest, Vec<Mismatch>)> {
    let manifest = Manifest::read(&dir.join(MANIFEST_FILE))?;
    let mut mismatches = Vec::new();
    for entry in manifest.splits.values().flat_map(|s| &s.shards) {
        let path = dir.join(&entry.name);
        let mut problem = |problem: String| mismatches.push(Mismatch { shard: path.clone(), problem });
        let (bytes, sha256) = match hash_file(&path, on_bytes) {
            Ok(found) => found,
            Err(e) => {
                problem(format!("cannot be read: {e}"));
                continue;
            }
        };
        if bytes != entry.bytes {
            problem(format!("holds {bytes} bytes, the manifest says {}", entry.bytes));
        }
        if sha256 != entry.sha256 {
            problem(format!("SHA-256 is {sha256}, the manifest says {}", entry.sha256));
            continue;
        }
        match count_samples(&path) {
            Ok(samples) if samples != entry.samples => {
                problem(format!("holds {samples} samples, the manifest says {}", entry.samples))
            }
            Ok(_) => {}
            Err(e) => problem(e.to_string()),
        }
    }
    Ok((manifest, mismatches))
}

fn hash_file(path: &Path, on_bytes: &mut dyn FnMut(u64)) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let (mut hash, mut buffer, mut total) = (Sha256::new(), vec![0u8; 1 << 20], 0u64);
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hash.update(&buffer[..n]);
        total += n as u64;
        on_bytes(n as u64);
    }
    Ok((total, hex(&hash.finalize())))
}

/// A digest as lowercase hex, as `sha256sum` prints it.
fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_keys_stay_one_plain_name() {
        let key = |p: &str| member_key(Path::new(p)).unwrap();
        assert_eq!(key("/data/train/000123.jpg"), "000123");
        assert_eq!(key("/data/a.b.c.jpg"), "a_b_c");
        assert_eq!(key("/data/..hidden.png"), "__hidden");
        assert_eq!(key("/data/back\\slash\nnewline.jpg"), "back_slash_newline");
        for name in ["/data/a.b.c.jpg", "/data/back\\slash.jpg", "/data/..x.png"] {
            let member = format!("{}.jpg", key(name));
            let (found, _) = crate::data::sources::split_member_name(&member);
            assert!(!found.contains(['/', '\\', '.']), "{name} → {found}");
        }
        assert!(member_key(Path::new("/")).unwrap_err().to_string().contains("no file name"));
    }
}
