//! `asl synth`: the built-in synthetic multi-label dataset.

use anyhow::{Context, Result};
use asl::data::sources::{write_synthetic, SynthConfig, SynthFormat};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Png,
    Jpeg,
}

#[derive(Args)]
pub struct SynthArgs {
    /// Output directory (COCO layout: annotations/instances_{train,val}.json, train/, val/).
    #[arg(long)]
    out: PathBuf,
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
    write_synthetic(&args.out, &config)
        .with_context(|| format!("cannot write the dataset to {}", args.out.display()))?;
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
