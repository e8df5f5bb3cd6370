//! `asl train`: resolve the config, attach the console and TensorBoard,
//! and run the library's trainer.

use super::console::{cell, Console};
use super::signals::{stop_flag, STOPPED_ON_REQUEST};
use anyhow::{bail, Context, Result};
use asl::config::first_difference;
use asl::distributed::{restart_count, Launch, LostRank, LostRankHandler};
use asl::monitor::TensorBoard;
use asl::train::checkpoint::{read_checkpoint, resolve_checkpoint, run_dir_of, EpochRecord};
use asl::train::{prepare, FaultPlan, Observer, Outcome, RunOptions, TrainConfig, TrainError};
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args)]
pub struct TrainArgs {
    /// Recipe file (configs/*.yaml): what differs from the defaults. Not with --resume, which continues with
    /// the config saved in the checkpoint.
    #[arg(long, required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Dataset root (COCO, VOC) or list file; overrides data.path (also when resuming, as datasets move).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Override a config key, e.g. --set train.epochs=2 --set loss.gamma_neg=2 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue a run: its directory (checkpoints/last is used) or one of its checkpoint directories. New
    /// checkpoints go into that run, wherever asl is started from.
    #[arg(long, conflicts_with = "auto_resume")]
    resume: Option<PathBuf>,
    /// With --config: continue runs/<name> from its last checkpoint when it has one (refused when its saved
    /// config differs, naming the first key that does), else start it. The same command line then serves a
    /// first start, a requeued Slurm job and a torchrun restart; restarts by torchrun (--max-restarts,
    /// TORCHELASTIC_RESTART_COUNT) and requeued Slurm jobs (SLURM_RESTART_COUNT) do this without the flag.
    #[arg(long)]
    auto_resume: bool,
    /// Where new run directories are created (runs/<name>).
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// Hide progress bars, the pretrained-weights download's included (summary lines are still printed).
    #[arg(long)]
    no_progress: bool,
    /// Stop at the first unreadable image instead of skipping it (data.strict).
    #[arg(long)]
    strict: bool,
    /// Print the fully resolved config, every key with its documentation, and exit.
    #[arg(long)]
    print_config: bool,
}

pub fn run(args: &TrainArgs) -> Result<ExitCode> {
    let launch = Launch::from_env()?;
    let restarts = restart_count(|name| std::env::var(name).ok())?;
    let (config, resume) = resolve_config(args, restarts > 0)?;
    if args.print_config {
        print!("{}", config.to_annotated_yaml());
        return Ok(ExitCode::SUCCESS);
    }
    let run_dir = match &resume {
        Some(checkpoint) => run_dir_of(checkpoint)?,
        None => args.runs.join(&config.name),
    };
    let stop = stop_flag()?;
    // Under torchrun only rank 0 reports; the others print nothing but their errors.
    let main = launch.as_ref().is_none_or(Launch::is_main);
    let mut observers: Vec<Box<dyn Observer>> = Vec::new();
    if main {
        observers.push(Box::new(Console::new(!args.no_progress)));
    }
    let options = RunOptions {
        run_dir: run_dir.clone(),
        resume,
        stop,
        launch,
        progress: !args.no_progress,
        on_lost_rank: Some(exit_on_lost_rank()),
        faults: faults(restarts)?,
    };
    let mut trainer = match prepare(config, options, &mut observers) {
        Err(error @ TrainError::Stopped { .. }) => {
            if main {
                println!("{error}");
            }
            return Ok(ExitCode::from(STOPPED_ON_REQUEST));
        }
        other => other?,
    };
    if main {
        let tensorboard = TensorBoard::new(&run_dir.join("tensorboard"), |message| eprintln!("warning: {message}"))?;
        observers.push(Box::new(tensorboard));
    }
    let outcome = trainer.run(&mut observers)?;
    drop(observers);
    match outcome {
        Outcome::Finished { history, best_epoch, best_map } => {
            if main {
                print_table(&history, best_epoch, best_map);
                println!("checkpoints in {}; TensorBoard: make tensorboard", run_dir.join("checkpoints").display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Interrupted { checkpoint } => {
            if main {
                println!(
                    "stopped on request; checkpoint written to {}. Continue with: asl train --resume {} (or the same \
                     command with --auto-resume)",
                    checkpoint.display(),
                    run_dir.display()
                );
            }
            Ok(ExitCode::from(STOPPED_ON_REQUEST))
        }
    }
}

/// A peer lost or stalled while this rank waited on it (or the store, or
/// this rank's own heartbeat): the library has aborted the process group;
/// name what happened and end the process, as nothing else would free a
/// rank blocked in a Gloo collective. `_exit`, once the message is out: the
/// handler runs on the watcher's thread while libtorch's threads are live,
/// so no exit handlers or destructors may run.
pub(super) fn exit_on_lost_rank() -> LostRankHandler {
    LostRankHandler(Arc::new(|lost: &LostRank| {
        let _ = writeln!(std::io::stderr(), "rank {}: error: {lost}", lost.rank);
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        // SAFETY: ends the process at once, which is the point; nothing of it is used afterwards.
        unsafe { libc::_exit(1) }
    }))
}

/// The faults `ASL_FAULT` asks for (tests of preemption and restarts);
/// none in a restarted attempt, so that a fault that ended the first
/// attempt does not end the restart.
pub(super) fn faults(restarts: u32) -> Result<FaultPlan> {
    match std::env::var("ASL_FAULT") {
        Ok(spec) if restarts == 0 => FaultPlan::parse(&spec).map_err(anyhow::Error::msg),
        _ => Ok(FaultPlan::default()),
    }
}

fn resolve_config(args: &TrainArgs, restarted: bool) -> Result<(TrainConfig, Option<PathBuf>)> {
    let mut overrides = args.overrides.clone();
    if args.strict {
        overrides.push("data.strict=true".into());
    }
    if let Some(data) = &args.data {
        overrides.push(format!("data.path={}", serde_json::to_string(&data.display().to_string())?));
    }
    let Some(resume) = &args.resume else {
        let path = args.config.as_ref().context("--config is required without --resume")?;
        let config = TrainConfig::load(path, &overrides)?;
        if args.auto_resume || restarted {
            let last = auto_resume(&config, &args.runs.join(&config.name))?;
            return Ok((config, last));
        }
        return Ok((config, None));
    };
    if let Some(path) = &args.config {
        bail!(
            "--config {} cannot be combined with --resume: a resumed run continues with the config saved in its \
             checkpoint. Change single keys with --set, or start a new run with --config",
            path.display()
        );
    }
    let dir = resolve_checkpoint(resume)?;
    let (_, saved) = read_checkpoint(&dir)?;
    let config = TrainConfig::from_yaml(&saved.to_yaml(), "the checkpoint's config", &overrides)?;
    Ok((config, Some(dir)))
}

/// The run's last checkpoint when it has one and was started with this
/// same config; `None` when there is none yet (the run starts).
fn auto_resume(config: &TrainConfig, run_dir: &Path) -> Result<Option<PathBuf>> {
    let Ok(last) = resolve_checkpoint(run_dir) else { return Ok(None) };
    let (_, saved) = read_checkpoint(&last)?;
    if let Some(d) = first_difference(&saved, config) {
        bail!(
            "cannot auto-resume {}: its config differs from this one at {} ({} there, {} here). Continue it with \
             --resume {} (which keeps its config and takes --set changes), or start a new run with --set name=...",
            run_dir.display(),
            d.key,
            d.left,
            d.right,
            run_dir.display()
        );
    }
    Ok(Some(last))
}

/// The end table: mAP columns, or top-1, top-5 and macro-F1 for a single-label run.
fn print_table(history: &[EpochRecord], best_epoch: Option<usize>, best: Option<f64>) {
    let single = history.iter().any(|r| r.single_label.is_some());
    let headers = if single { ["top-1", "top-1(EMA)", "top-5", "mF1"] } else { ["mAP", "mAP(EMA)", "CF1", "OF1"] };
    println!(
        "\n{:>5} {:>9} {:>7} {:>10} {:>7} {:>7} {:>7} {:>7}",
        "epoch", "loss", headers[0], headers[1], headers[2], headers[3], "Δp", "γ-"
    );
    for r in history {
        let marker = if Some(r.epoch) == best_epoch { " *" } else { "" };
        let scores = match &r.single_label {
            Some(s) => {
                [format!("{:.2}", s.top1), cell(s.top1_ema), format!("{:.2}", s.top5), format!("{:.2}", s.macro_f1)]
            }
            None => [cell(r.map), cell(r.map_ema), format!("{:.2}", r.cf1), format!("{:.2}", r.of1)],
        };
        println!(
            "{:>5} {:>9.4} {:>7} {:>10} {:>7} {:>7} {:>7} {:>7.3}{marker}",
            r.epoch,
            r.train_loss,
            scores[0],
            scores[1],
            scores[2],
            scores[3],
            cell(r.delta_p),
            r.gamma_neg
        );
    }
    let what = if single { "top-1" } else { "mAP" };
    println!("best {what} {} at epoch {} (* above)", cell(best), best_epoch.map_or("-".into(), |e| e.to_string()));
}
