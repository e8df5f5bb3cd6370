//! `asl audit`: K-fold out-of-sample probabilities for every training
//! label, the ranked suspects, an offline contact sheet and a relabeled
//! recipe.

use super::console::Console;
use super::signals::{stop_flag, STOPPED_ON_REQUEST};
use super::train::{exit_on_lost_rank, faults};
use anyhow::{Context, Result};
use asl::audit::{audit, AuditOptions, AuditOutcome, Kept};
use asl::distributed::{restart_count, Launch};
use asl::train::{Observer, TrainConfig};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct AuditArgs {
    /// The training recipe (configs/*.yaml): each fold trains with it.
    #[arg(long)]
    config: PathBuf,
    /// Dataset root (COCO, VOC, Open Images, a directory of shards) or list file; overrides data.path.
    #[arg(long)]
    data: Option<PathBuf>,
    /// K: the training split is cut into K folds; each is predicted by a model trained on the other K − 1.
    #[arg(long, default_value_t = 4)]
    folds: usize,
    /// Where the outputs go. The same audit continues there where it stopped; another one is refused.
    #[arg(long)]
    out: PathBuf,
    /// Override a config key, e.g. --set train.epochs=8 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Rows of suspects.csv at most.
    #[arg(long, default_value_t = 1000)]
    max_suspects: usize,
    /// Hide progress bars (summary lines are still printed).
    #[arg(long)]
    no_progress: bool,
    /// Continue an audit stopped before its end (the finished folds are skipped, the unfinished one goes on
    /// from its checkpoint). The same command without it does the same: an audit directory says which audit
    /// it holds.
    #[arg(long)]
    resume: bool,
    /// Images per batch when predicting a held-out fold.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

pub fn run(args: &AuditArgs) -> Result<ExitCode> {
    let launch = Launch::from_env()?;
    let restarts = restart_count(|name| std::env::var(name).ok())?;
    let mut overrides = args.overrides.clone();
    if let Some(data) = &args.data {
        overrides.push(format!("data.path={}", serde_json::to_string(&data.display().to_string())?));
    }
    let config = TrainConfig::load(&args.config, &overrides)?;
    let main = launch.as_ref().is_none_or(Launch::is_main);
    let mut observers: Vec<Box<dyn Observer>> = Vec::new();
    if main {
        observers.push(Box::new(Console::new(!args.no_progress)));
    }
    let options = AuditOptions {
        folds: args.folds,
        out: args.out.clone(),
        max_suspects: args.max_suspects,
        stop: stop_flag()?,
        launch,
        progress: !args.no_progress,
        on_lost_rank: Some(exit_on_lost_rank()),
        faults: faults(restarts)?,
        batch_size: args.batch_size,
    };
    let outcome =
        audit(config, options, &mut observers).with_context(|| format!("audit into {}", args.out.display()))?;
    drop(observers);
    match outcome {
        AuditOutcome::Interrupted { fold, checkpoint } => {
            if main {
                println!(
                    "stopped on request in fold {}; its checkpoint is {}. Continue with the same command (or \
                     --resume)",
                    fold + 1,
                    checkpoint.display()
                );
            }
            Ok(ExitCode::from(STOPPED_ON_REQUEST))
        }
        AuditOutcome::Finished(None) => Ok(ExitCode::SUCCESS),
        AuditOutcome::Finished(Some(summary)) => {
            let out = args.out.display();
            let kept = match summary.kept {
                Kept::Dense => format!("{out}/probabilities.npy"),
                Kept::Sparse => format!("{out}/probabilities_sparse.csv (kept sparsely: over 2 GB as float32)"),
            };
            println!(
                "audited {} images × {} classes in {} folds: {} labels likely missing and {} likely wrong; {} \
                 suspects listed in {out}/suspects.csv",
                summary.images,
                summary.classes,
                args.folds,
                summary.confident_missing,
                summary.confident_wrong,
                summary.suspects
            );
            if summary.unreadable > 0 {
                println!("{} images could not be read and are left out", summary.unreadable);
            }
            println!("probabilities: {kept} (rows: {out}/images.txt, columns: {out}/classes.txt)");
            println!("contact sheet: {out}/report.html");
            println!(
                "relabeled recipe: {out}/relabeled.yaml ({} labels marked unknown, {} positives added); train it \
                 with asl train --config {out}/relabeled.yaml",
                summary.marked_unknown, summary.added_positives
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
