//! `asl pack`: any supported source as WebDataset tar shards, and
//! `asl pack --verify`: a packed directory checked against its manifest.

use super::data_args::{recipe_data, Source};
use anyhow::{bail, Context, Result};
use asl::data::pack::{pack_split, verify, write_index, PackEvent, PackOptions};
use asl::data::sources::Manifest;
use asl::data::{DataConfig, SourceKind, Split};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct PackArgs {
    /// The dataset to pack: a COCO or VOC root, an Open Images folder, or a training list.
    #[arg(long, required_unless_present = "verify")]
    data: Option<PathBuf>,
    /// Where the shards, classes.txt and manifest.json go.
    #[arg(long, required_unless_present = "verify")]
    out: Option<PathBuf>,
    /// Its layout, when the directory does not tell (the default guesses it from the files there).
    #[arg(long, value_enum)]
    source: Option<Source>,
    /// Take the source, split names and label policies from a training recipe's data section.
    #[arg(long)]
    config: Option<PathBuf>,
    /// For lists: the validation list.
    #[arg(long)]
    val_data: Option<PathBuf>,
    /// Close a shard once it holds about this many megabytes (MiB; fractions allowed).
    #[arg(long, default_value_t = 256.0)]
    shard_mb: f64,
    /// Store images resized to this short side (re-encoded as JPEG; smaller ones are copied as they are).
    #[arg(long)]
    resize: Option<u32>,
    /// Stop at the first unreadable image instead of leaving it out with a warning.
    #[arg(long)]
    strict: bool,
    /// Check the shards of this packed directory against its manifest (sizes, SHA-256, sample counts).
    #[arg(long, conflicts_with_all = ["data", "out", "config", "source", "resize"])]
    verify: Option<PathBuf>,
}

pub fn run(args: &PackArgs) -> Result<()> {
    if let Some(dir) = &args.verify {
        return run_verify(dir);
    }
    let (Some(data_path), Some(out)) = (&args.data, &args.out) else { bail!("--data and --out are required") };
    if args.shard_mb.is_nan() || args.shard_mb <= 0.0 {
        bail!("--shard-mb must be above 0, not {}", args.shard_mb);
    }
    let mut data = match &args.config {
        Some(path) => recipe_data(path)?,
        None => DataConfig::default(),
    };
    if args.config.is_none() || args.source.is_some() {
        data.source = match args.source {
            Some(source) => source.into(),
            None => guess_source(data_path)?,
        };
    }
    if data.source == SourceKind::Shards {
        bail!("{} is already shards; --source names the layout to pack from", data_path.display());
    }
    data.path = Some(data_path.clone());
    if args.val_data.is_some() {
        data.val_path = args.val_data.clone();
    }
    let options = PackOptions {
        shard_bytes: (args.shard_mb * f64::from(1 << 20)) as u64,
        resize: args.resize,
        strict: args.strict,
    };
    let mut manifest = Manifest::default();
    let mut class_names = None;
    let started = Instant::now();
    for split in [Split::Train, Split::Val] {
        let name = if split == Split::Train { &data.train_split } else { &data.val_split };
        let dataset = data.load_split(split).with_context(|| format!("cannot read the {name} split"))?;
        for note in &dataset.notes {
            eprintln!("warning: {note}");
        }
        if split == Split::Train {
            manifest.unlisted = dataset.unlisted;
        }
        manifest.lists_unknown |= dataset.labels().lists_unknown();
        let progress = ProgressBar::new(dataset.len() as u64).with_style(ProgressStyle::with_template(&format!(
            "pack {name} [{{bar:30}}] {{pos}}/{{len}} {{per_sec}} ETA {{eta}}"
        ))?);
        let mut skipped = 0;
        let mut on_event = |event: PackEvent| match event {
            PackEvent::Samples(n) => progress.inc(n),
            PackEvent::Skipped { path, reason } => {
                skipped += 1;
                progress.println(format!("warning: left out {}: {reason}", path.display()));
            }
        };
        let packed = pack_split(&dataset, name, out, &options, &mut on_event)?;
        progress.finish_and_clear();
        let bytes: u64 = packed.shards.iter().map(|s| s.bytes).sum();
        println!(
            "{name}: {} samples in {} shards ({:.1} MB){}",
            packed.samples,
            packed.shards.len(),
            bytes as f64 / 1e6,
            if skipped > 0 { format!(", {skipped} unreadable images left out") } else { String::new() }
        );
        manifest.splits.insert(name.clone(), packed);
        class_names.get_or_insert(dataset.class_names);
    }
    write_index(out, &class_names.unwrap_or_default(), &manifest)?;
    println!(
        "packed into {} in {:.1}s; train from it with --set data.source=shards --data {}",
        out.display(),
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// The source layout of `path` from the files there.
fn guess_source(path: &Path) -> Result<SourceKind> {
    if path.is_file() {
        return Ok(SourceKind::List);
    }
    let has = |name: &str| path.join(name).exists();
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(path).with_context(|| format!("cannot read {}", path.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", path.display()))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    if has("annotations") {
        Ok(SourceKind::Coco)
    } else if has("JPEGImages") && has("Annotations") {
        Ok(SourceKind::Voc)
    } else if names.iter().any(|n| n.contains("annotations-human-imagelabels") || n.contains("class-descriptions")) {
        Ok(SourceKind::Openimages)
    } else if names.iter().any(|n| n.ends_with(".tar")) {
        Ok(SourceKind::Shards)
    } else {
        bail!("cannot tell the layout of {}: pass --source coco, voc, list or openimages", path.display())
    }
}

fn run_verify(dir: &Path) -> Result<()> {
    let progress = ProgressBar::new(0)
        .with_style(ProgressStyle::with_template("verify [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")?);
    if let Ok(manifest) = Manifest::read(&dir.join(asl::data::sources::MANIFEST_FILE)) {
        progress.set_length(manifest.splits.values().flat_map(|s| &s.shards).map(|s| s.bytes).sum());
    }
    let (manifest, mismatches) = verify(dir, &mut |n| progress.inc(n))?;
    progress.finish_and_clear();
    let shards: usize = manifest.splits.values().map(|s| s.shards.len()).sum();
    for mismatch in &mismatches {
        println!("MISMATCH {}: {}", mismatch.shard.display(), mismatch.problem);
    }
    if !mismatches.is_empty() {
        bail!("{} of {shards} shards in {} do not match the manifest", mismatches.len(), dir.display());
    }
    let samples: u64 = manifest.splits.values().map(|s| s.samples).sum();
    println!("{shards} shards, {samples} samples: every size, SHA-256 and sample count matches the manifest");
    Ok(())
}
