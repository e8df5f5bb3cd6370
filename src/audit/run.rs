//! The audit, fold after fold: each trained through the normal trainer
//! (resumable, and under torchrun on every rank), its best checkpoint then
//! predicting its held-out fold on rank 0, which finally scores the labels
//! and writes the outputs. An audit directory says which audit it holds
//! (`audit.json`): the same audit continues where it stopped, another one
//! is refused.

use super::outputs::{write_outputs, Assembled};
use super::predict::{predict, ImagePrediction, Kept};
use super::{AuditError, Result};
use crate::atomic::write_bytes_atomically;
use crate::data::{FoldConfig, SplitData, SplitFingerprint};
use crate::distributed::{Launch, LostRankHandler};
use crate::model::{Network, EMA_FILE, MODEL_FILE};
use crate::train::checkpoint::{read_checkpoint, resolve_checkpoint};
use crate::train::{prepare, FaultPlan, Observer, Outcome, RunOptions, TrainConfig, TrainEvent};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The files an audit writes into its directory, besides `audit.json` and `folds/`.
pub const OUTPUTS: [&str; 6] =
    ["probabilities.npy", "images.txt", "classes.txt", "suspects.csv", "report.html", "relabeled.yaml"];

/// How to run an audit.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    pub folds: usize,
    /// Where everything goes: the outputs, `audit.json`, and `folds/fold-<k>/` (each fold's run).
    pub out: PathBuf,
    /// Rows of `suspects.csv` at most.
    pub max_suspects: usize,
    /// Set to stop the fold in training after its current step, with a checkpoint.
    pub stop: Arc<AtomicBool>,
    pub launch: Option<Launch>,
    pub progress: bool,
    pub on_lost_rank: Option<LostRankHandler>,
    pub faults: FaultPlan,
    /// Images per batch when predicting a held-out fold.
    pub batch_size: usize,
}

/// How an audit ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditOutcome {
    /// Every fold is done and the outputs are written (on rank 0; `None` elsewhere).
    Finished(Option<AuditSummary>),
    /// Stopped on request while fold `fold` trained; its checkpoint is `checkpoint`.
    Interrupted { fold: usize, checkpoint: PathBuf },
}

/// What the audit found, for the console.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditSummary {
    pub images: usize,
    pub classes: usize,
    pub kept: Kept,
    /// Rows written to `suspects.csv`.
    pub suspects: usize,
    /// Labels likely the other way (`score::is_flipped`): missing, then wrong.
    pub confident_missing: usize,
    pub confident_wrong: usize,
    /// Labels `relabeled.yaml` marks unknown, and missing positives it adds.
    pub marked_unknown: usize,
    pub added_positives: usize,
    /// Images no fold's model could read.
    pub unreadable: usize,
}

/// What makes two audits the same one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AuditIdentity {
    folds: usize,
    /// The recipe with its overrides, every key resolved.
    config: String,
    data: SplitFingerprint,
}

const IDENTITY_FILE: &str = "audit.json";
const PREDICTIONS_FILE: &str = "predictions.json";

/// Runs (or continues) the audit of `config`'s training split.
pub fn audit(config: TrainConfig, options: AuditOptions, observer: &mut dyn Observer) -> Result<AuditOutcome> {
    if options.folds < 2 {
        return Err(AuditError::Folds(options.folds));
    }
    // Paths made absolute first: images are named by them in every output, and relabeled.yaml runs anywhere.
    let mut data = crate::data::DataConfig { fold: None, ..config.data.clone() };
    for path in [&mut data.path, &mut data.val_path, &mut data.classes, &mut data.label_overrides] {
        *path = path.as_deref().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    }
    let whole = TrainConfig { data, ..config.clone() };
    let train = whole.data.open_split(crate::data::Split::Train)?;
    check_auditable(&train, options.folds)?;
    let identity = AuditIdentity { folds: options.folds, config: whole.to_yaml(), data: train.fingerprint() };
    claim_out(&options.out, &identity)?;
    let rank = options.launch.as_ref().map_or(0, |l| l.rank);
    for fold in 0..options.folds {
        let fold_config = fold_config(&whole, options.folds, fold);
        let run_dir = options.out.join("folds").join(&fold_config.name);
        if run_dir.join(PREDICTIONS_FILE).is_file() {
            observer.on_event(&TrainEvent::Notice(&format!("fold {} of {}: done", fold + 1, options.folds)));
            continue;
        }
        let resume = resolve_checkpoint(&run_dir).ok();
        let what = if resume.is_some() { "continuing" } else { "training" };
        let notice = format!(
            "fold {} of {}: {what} on the other {} folds, then predicting this one",
            fold + 1,
            options.folds,
            options.folds - 1
        );
        observer.on_event(&TrainEvent::Notice(&notice));
        let run = RunOptions {
            run_dir: run_dir.clone(),
            resume,
            stop: Arc::clone(&options.stop),
            launch: options.launch.clone(),
            progress: options.progress,
            on_lost_rank: options.on_lost_rank.clone(),
            faults: options.faults.clone(),
        };
        let mut trainer = prepare(fold_config.clone(), run, observer)?;
        if let Outcome::Interrupted { checkpoint } = trainer.run(observer)? {
            return Ok(AuditOutcome::Interrupted { fold, checkpoint });
        }
        drop(trainer);
        if rank == 0 {
            predict_fold(&fold_config, &run_dir, options.batch_size, &train, observer)?;
        }
    }
    if rank != 0 {
        return Ok(AuditOutcome::Finished(None));
    }
    let assembled = assemble(&options.out, &whole, options.folds, &train)?;
    let summary = write_outputs(&assembled, &whole, &options, observer)?;
    Ok(AuditOutcome::Finished(Some(summary)))
}

/// Refuses what cannot be audited: fewer items than 2 × K, or no positive label.
fn check_auditable(train: &SplitData, folds: usize) -> Result<()> {
    let (items, what) = match train {
        SplitData::Files(dataset) => (dataset.len(), "images"),
        SplitData::Shards(set) => (set.shards.len(), "shards (a streamed split is divided into folds shard by shard)"),
    };
    if items < 2 * folds {
        return Err(AuditError::TooFew { images: items, what, folds });
    }
    if let SplitData::Files(dataset) = train {
        if (0..dataset.len()).all(|i| dataset.labels().positives(i).next().is_none()) {
            return Err(AuditError::NoLabels { split: train.describe() });
        }
    }
    Ok(())
}

/// Takes `out` for this audit: a new or empty directory, or one that holds
/// this same audit (which then continues). Anything else is refused before
/// anything is written.
fn claim_out(out: &Path, identity: &AuditIdentity) -> Result<()> {
    let file = out.join(IDENTITY_FILE);
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| AuditError::Read { path: path.into(), message: e.to_string() })
    };
    if file.is_file() {
        let saved: AuditIdentity = serde_json::from_str(&read(&file)?)
            .map_err(|e| AuditError::Read { path: file.clone(), message: e.to_string() })?;
        return match difference(&saved, identity) {
            Some(difference) => Err(AuditError::OtherAudit { out: out.into(), difference }),
            None => Ok(()),
        };
    }
    let occupied = std::fs::read_dir(out).map(|mut entries| entries.next().is_some()).unwrap_or(false);
    if occupied {
        return Err(AuditError::NotAnAudit { out: out.into() });
    }
    let json = serde_json::to_string_pretty(identity).expect("an identity always serialises");
    write_bytes_atomically(&file, json.as_bytes()).map_err(|source| AuditError::Write { path: file, source })
}

/// How a saved audit differs from this one, in words.
fn difference(saved: &AuditIdentity, now: &AuditIdentity) -> Option<String> {
    if saved.folds != now.folds {
        return Some(format!("{} folds there, {} here", saved.folds, now.folds));
    }
    if saved.data != now.data {
        let change = now.data.change_from(&saved.data).unwrap_or_default();
        return Some(format!("other training data: {change}"));
    }
    let saved_config: TrainConfig = TrainConfig::from_yaml(&saved.config, "the saved audit's config", &[]).ok()?;
    let now_config: TrainConfig = TrainConfig::from_yaml(&now.config, "this audit's config", &[]).ok()?;
    crate::config::first_difference(&saved_config, &now_config)
        .map(|d| format!("its config differs at {} ({} there, {} here)", d.key, d.left, d.right))
}

/// Fold `fold`'s run: the recipe, named for the fold, training on the other folds.
fn fold_config(config: &TrainConfig, folds: usize, fold: usize) -> TrainConfig {
    let mut fold_config = config.clone();
    fold_config.name = format!("fold-{fold}");
    fold_config.data.fold = Some(FoldConfig { count: folds, index: fold, seed: config.seed });
    fold_config
}

/// The fold's best checkpoint (the model or the EMA, whichever scored it
/// best) predicting its held-out fold; the predictions are saved in the
/// fold's run directory, which marks the fold done.
fn predict_fold(
    config: &TrainConfig,
    run_dir: &Path,
    batch_size: usize,
    whole: &SplitData,
    observer: &mut dyn Observer,
) -> Result<()> {
    let checkpoints = run_dir.join("checkpoints");
    let best = if checkpoints.join("best").is_dir() { checkpoints.join("best") } else { checkpoints.join("last") };
    let (state, _) = read_checkpoint(&best)?;
    let at_best = state.history.iter().find(|r| Some(r.epoch) == state.best_epoch);
    let use_ema = at_best.is_some_and(|r| r.map_ema.unwrap_or(f64::MIN) > r.map.unwrap_or(f64::MIN));
    let device = crate::model::resolve_device(&config.device)?;
    let mut network = Network::load(&best.join(if use_ema { EMA_FILE } else { MODEL_FILE }), device)?;
    let held_out = config.data.open_held_out()?;
    let kept = Kept::for_size(whole.len(), whole.num_classes());
    observer.on_event(&TrainEvent::ValidationStarted { scored: crate::train::Scored::Model, images: held_out.len() });
    let mut on_batch = |images| observer.on_event(&TrainEvent::ValidationProgress { images });
    let (predictions, skipped) = predict(&mut network, &held_out, batch_size, kept, &mut on_batch)?;
    let saved = FoldPredictions { skipped, predictions };
    let path = run_dir.join(PREDICTIONS_FILE);
    let json = serde_json::to_vec(&saved).map_err(|e| AuditError::Write { path: path.clone(), source: e.into() })?;
    write_bytes_atomically(&path, &json).map_err(|source| AuditError::Write { path, source })
}

#[derive(Serialize, Deserialize)]
struct FoldPredictions {
    skipped: usize,
    predictions: Vec<ImagePrediction>,
}

/// Every fold's predictions, one after the other.
fn assemble(out: &Path, config: &TrainConfig, folds: usize, whole: &SplitData) -> Result<Assembled> {
    let (mut predictions, mut unreadable) = (Vec::with_capacity(whole.len()), 0);
    for fold in 0..folds {
        let path = out.join("folds").join(fold_config(config, folds, fold).name).join(PREDICTIONS_FILE);
        let text = std::fs::read(&path).map_err(|e| AuditError::Read { path: path.clone(), message: e.to_string() })?;
        let saved: FoldPredictions = serde_json::from_slice(&text)
            .map_err(|e| AuditError::Read { path: path.clone(), message: e.to_string() })?;
        unreadable += saved.skipped;
        predictions.extend(saved.predictions);
    }
    let kept = Kept::for_size(whole.len(), whole.num_classes());
    Ok(Assembled { predictions, class_names: whole.class_names().to_vec(), kept, unreadable })
}
