//! `asl info`: which libtorch this binary loaded and which devices it
//! sees; with `--model`, what a model's card says, where its weights came
//! from included.

use anyhow::Result;
use asl::host_memory::HostMemory;
use asl::model::{ModelCard, MODEL_FILE};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct InfoArgs {
    /// A TorchScript model (.pt, with its .json card beside it) or a checkpoint directory: print its card.
    #[arg(long)]
    model: Option<PathBuf>,
}

pub fn run(args: &InfoArgs, host_memory: HostMemory) -> Result<()> {
    match &args.model {
        Some(model) => print_card(model),
        None => print_runtime(host_memory),
    }
}

fn print_card(model: &Path) -> Result<()> {
    let file = if model.is_dir() { model.join(MODEL_FILE) } else { model.to_path_buf() };
    let card = ModelCard::load_beside(&file)?;
    println!("model: {} ({})", card.model, file.display());
    println!("classes: {}{}", card.num_classes, if card.class_names.is_some() { ", named" } else { "" });
    println!("input size: {}", card.input_size);
    let show = |v: Option<[f64; 3]>| v.map_or_else(|| "(none)".to_string(), |v| format!("{v:?}"));
    println!("input mean: {}, std: {}", show(card.mean), show(card.std));
    match &card.weights {
        Some(origin) => println!("weights: {origin}"),
        None if card.extra.get("pretrained").and_then(|v| v.as_bool()) == Some(true) => {
            println!("weights: pretrained (exported before the card recorded their origin)")
        }
        None => println!("weights: random initialisation"),
    }
    Ok(())
}

fn print_runtime(host_memory: HostMemory) -> Result<()> {
    println!("asl {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch: {}", loaded_libtorch().unwrap_or_else(|| "(not found in /proc/self/maps)".into()));
    println!("libtorch threads: {}", tch::get_num_threads());
    println!(
        "host memory: {}",
        match host_memory {
            HostMemory::Kept => "freed blocks kept for reuse (glibc mmap threshold 32 MiB, no trimming)",
            HostMemory::UserChoice => "as the environment sets it (GLIBC_TUNABLES, MALLOC_*_ or LD_PRELOAD)",
            HostMemory::Unchanged => "the C library's defaults",
        }
    );
    let cuda = tch::Cuda::is_available();
    println!("CUDA available: {cuda}");
    if cuda {
        println!("CUDA devices: {}", tch::Cuda::device_count());
        println!("cuDNN available: {}", tch::Cuda::cudnn_is_available());
    }
    Ok(())
}

/// The path of the `libtorch_cpu.so` mapped into this process: which
/// install the rpath (or `LD_LIBRARY_PATH`) resolved to.
fn loaded_libtorch() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .map(str::to_string)
}
