//! The `asl` command line: parses arguments, calls the library, prints
//! the whole error chain on failure.

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Multi-label classification with the Asymmetric Loss (ICCV 2021) on libtorch.
#[derive(Parser)]
#[command(name = "asl", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the data and plots of the paper's Figures 2 and 3, and print p*.
    LossCurves(cli::loss_curves::LossCurvesArgs),
    /// Train a TorchScript network with the Asymmetric Loss (the paper's recipe in configs/).
    Train(cli::train::TrainArgs),
    /// Find likely missing and wrong training labels: K-fold out-of-sample probabilities, ranked suspects, an
    /// offline contact sheet and a relabeled recipe.
    Audit(cli::audit::AuditArgs),
    /// Score a model on a labelled split: mAP, CP/CR/CF1/OP/OR/OF1, top-3, per-class AP.
    Validate(cli::validate::ValidateArgs),
    /// Predict labels for images, directories or lists of images, as JSON Lines.
    Infer(cli::infer::InferArgs),
    /// The paper's loss comparison on synthetic data: CE, focal, AF, CE+PS, ASL, adaptive ASL × seeds.
    Reproduce(cli::reproduce::ReproduceArgs),
    /// Write the built-in synthetic multi-label dataset (coloured shapes, COCO format).
    Synth(cli::synth::SynthArgs),
    /// Pack a dataset (COCO, VOC, list, Open Images) into WebDataset tar shards with a manifest, or check a
    /// packed directory against its manifest (--verify).
    Pack(cli::pack::PackArgs),
    /// Export a timm model (random, hub or local weights) to TorchScript with its card: models/export.py
    /// run by the project's python, with that script's flags (`asl export --help`).
    Export(cli::export::ExportArgs),
    /// Print the libtorch build, thread count and CUDA devices in use; with --model, a model's card and
    /// where its weights came from.
    Info(cli::info::InfoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let host_memory = asl::host_memory::keep_freed_memory();
    let result = match cli.command {
        Command::Train(args) => cli::train::run(&args),
        Command::Audit(args) => cli::audit::run(&args),
        Command::LossCurves(args) => cli::loss_curves::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Info(args) => cli::info::run(&args, host_memory).map(|()| ExitCode::SUCCESS),
        Command::Export(args) => cli::export::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Synth(args) => cli::synth::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Pack(args) => cli::pack::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Validate(args) => cli::validate::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Infer(args) => cli::infer::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Reproduce(args) => cli::reproduce::run(&args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            // Under torchrun or srun every rank reports its own failure.
            match asl::distributed::Launch::from_env() {
                Ok(Some(launch)) => eprintln!("rank {}: error: {error:#}", launch.rank),
                _ => eprintln!("error: {error:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
