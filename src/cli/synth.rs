//! `asl synth`: the built-in synthetic multi-label dataset.

use anyhow::{Context, Result};
use asl::data::sources::{write_synthetic, write_synthetic_openimages, SynthConfig, SynthFormat};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Png,
    Jpeg,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Layout {
    /// annotations/instances_{train,val}.json with train/ and val/ (every label verified).
    Coco,
    /// An Open Images download folder (V7 file names): human-verified positives and negatives, the rest
    /// unknown, some labels of untrainable classes, and two listed training images missing.
    Openimages,
}

#[derive(Args)]
pub struct SynthArgs {
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Folder layout and label files.
    #[arg(long, value_enum, default_value_t = Layout::Coco)]
    layout: Layout,
    /// Number of classes (shape × colour pairs), 1 to 32.
    #[arg(long, default_value_t = 32)]
    classes: usize,
    #[arg(long, default_value_t = 1200)]
    train_images: usize,
    #[arg(long, default_value_t = 300)]
    val_images: usize,
    /// Side of the square images in pixels.
    #[arg(long, default_value_t = 64)]
    image_size: u32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of positive training labels to drop, imitating missing labels.
    #[arg(long, default_value_t = 0.0)]
    drop_positive: f64,
    #[arg(long, value_enum, default_value_t = Format::Png)]
    format: Format,
}

pub fn run(args: &SynthArgs) -> Result<()> {
    let config = SynthConfig {
        classes: args.classes,
        train_images: args.train_images,
        val_images: args.val_images,
        image_size: args.image_size,
        seed: args.seed,
        drop_positive: args.drop_positive,
        format: match args.format {
            Format::Png => SynthFormat::Png,
            Format::Jpeg => SynthFormat::Jpeg,
        },
    };
    let start = Instant::now();
    let written = match args.layout {
        Layout::Coco => write_synthetic(&args.out, &config),
        Layout::Openimages => write_synthetic_openimages(&args.out, &config),
    };
    written.with_context(|| format!("cannot write the dataset to {}", args.out.display()))?;
    println!(
        "wrote {} train + {} val images ({} classes, {}px) to {} in {:.1}s",
        args.train_images,
        args.val_images,
        args.classes,
        args.image_size,
        args.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
