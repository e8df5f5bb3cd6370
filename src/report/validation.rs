//! `asl validate --report`: where a model fails, on one offline page.

use super::charts::{bars, lines, Series};
use super::thumbnail;
use crate::metrics::{tune_thresholds, MetricsReport, ScoredLabel, ScoredLabels};
use crate::train::checkpoint::EpochRecord;
use minijinja::context;
use serde::Serialize;

/// Classes shown with their PR curves at each end, the worst and the best.
const CURVES: usize = 3;
/// False positives and false negatives shown.
const WORST: usize = 12;

/// What the validation page shows.
pub struct ValidationPage<'a> {
    /// The model file, and the data with where its options came from.
    pub model: &'a str,
    pub data: &'a str,
    pub report: &'a MetricsReport,
    pub scored: &'a ScoredLabels,
    pub class_names: &'a [String],
    /// The file of dataset image `index` (for its thumbnail); `None` where images have no file (shards).
    pub image_name: &'a dyn Fn(u32) -> Option<String>,
    /// The run's epochs, when the model is a checkpoint of one.
    pub history: &'a [EpochRecord],
}

#[derive(Serialize)]
struct Mistake {
    image: String,
    thumbnail: Option<String>,
    class: String,
    probability: String,
}

#[derive(Serialize)]
struct ThresholdRow {
    class: String,
    ap: String,
    threshold: String,
    f1: String,
}

/// The page.
pub fn validation_page(page: &ValidationPage) -> Result<String, String> {
    let names = page.class_names;
    let per_class = &page.report.average_precision.per_class;
    let mut ranked: Vec<(usize, f64)> = per_class.iter().enumerate().filter_map(|(c, ap)| Some((c, (*ap)?))).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let ap_values: Vec<(String, f64)> = ranked.iter().map(|&(c, ap)| (names[c].clone(), ap)).collect();
    let ap_chart = bars("Average precision per class, best first", &ap_values, "AP (%)", 100.0)?;
    let columns = page.scored.by_class();
    let curve = |class: usize| Series { name: &names[class], points: precision_recall(&columns[class]) };
    let ends = |classes: Vec<usize>, title: &str| {
        let series: Vec<Series> = classes.into_iter().map(curve).collect();
        lines(title, &series, ("recall", "precision"), 0.0..1.0, 0.0..1.01)
    };
    let worst: Vec<usize> = ranked.iter().rev().take(CURVES).map(|&(c, _)| c).collect();
    let best: Vec<usize> = ranked.iter().take(CURVES).map(|&(c, _)| c).collect();
    let curves = [ends(worst, "PR curves: the worst classes")?, ends(best, "PR curves: the best classes")?];
    let tuned = tune_thresholds(page.scored, names.to_vec(), 0.5);
    let thresholds: Vec<ThresholdRow> = (0..names.len())
        .map(|c| ThresholdRow {
            class: names[c].clone(),
            ap: per_class[c].map_or_else(|| "n/a".into(), |ap| format!("{ap:.2}")),
            threshold: format!("{:.3}", tuned.thresholds[c]),
            f1: tuned.f1[c].map_or_else(|| "n/a (no positives)".into(), |f1| format!("{:.3}", f1)),
        })
        .collect();
    let labels = page.scored.labels();
    let mistake = |label: &ScoredLabel| {
        let index = page.scored.images()[label.row as usize];
        let image = (page.image_name)(index);
        Mistake {
            thumbnail: image.as_deref().and_then(thumbnail),
            image: image.unwrap_or_else(|| format!("image {index}")),
            class: names[label.class as usize].clone(),
            probability: format!("{:.3}", label.score),
        }
    };
    let mut negatives: Vec<&ScoredLabel> = labels.iter().filter(|l| !l.positive).collect();
    negatives.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut positives: Vec<&ScoredLabel> = labels.iter().filter(|l| l.positive).collect();
    positives.sort_by(|a, b| a.score.total_cmp(&b.score));
    let false_positives: Vec<Mistake> = negatives.into_iter().take(WORST).map(mistake).collect();
    let false_negatives: Vec<Mistake> = positives.into_iter().take(WORST).map(mistake).collect();
    let history = history_charts(page.history)?;
    let env = super::environment();
    let template = env.get_template("validation.html").map_err(|e| e.to_string())?;
    template
        .render(context! {
            style => include_str!("templates/style.css"),
            model => page.model,
            data => page.data,
            summary => page.report.to_string(),
            ap_chart => ap_chart,
            curves => curves,
            thresholds => thresholds,
            false_positives => false_positives,
            false_negatives => false_negatives,
            history => history,
        })
        .map_err(|e| e.to_string())
}

/// Precision against recall down a class's labels, most probable first.
fn precision_recall(column: &[(f32, bool)]) -> Vec<(f64, f64)> {
    let mut sorted = column.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let positives = sorted.iter().filter(|(_, p)| *p).count().max(1) as f64;
    let mut true_positives = 0.0;
    let mut points = vec![(0.0, 1.0)];
    for (i, &(_, positive)) in sorted.iter().enumerate() {
        if positive {
            true_positives += 1.0;
            points.push((true_positives / positives, true_positives / (i + 1) as f64));
        }
    }
    points
}

/// Δp and γ−, and mAP, over the run's epochs; none without a history.
fn history_charts(history: &[EpochRecord]) -> Result<Vec<String>, String> {
    if history.is_empty() {
        return Ok(Vec::new());
    }
    let epochs = 1.0..(history.len() as f64).max(2.0);
    let of = |value: fn(&EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        history.iter().filter_map(|r| Some((r.epoch as f64, value(r)?))).collect()
    };
    let delta = Series { name: "Δp", points: of(|r| r.delta_p) };
    let gamma = Series { name: "γ−", points: of(|r| Some(r.gamma_neg)) };
    let top = gamma.points.iter().chain(&delta.points).map(|p| p.1).fold(1.0f64, f64::max);
    let low = delta.points.iter().map(|p| p.1).fold(0.0f64, f64::min);
    let asymmetry = lines("Δp and γ− by epoch", &[delta, gamma], ("epoch", "value"), epochs.clone(), low..top * 1.05)?;
    let map = Series { name: "mAP", points: of(|r| r.map) };
    let map_ema = Series { name: "mAP (EMA)", points: of(|r| r.map_ema) };
    let scores = lines("mAP by epoch", &[map, map_ema], ("epoch", "mAP (%)"), epochs, 0.0..100.0)?;
    Ok(vec![asymmetry, scores])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_recall_steps_at_each_positive() {
        let points = precision_recall(&[(0.9, true), (0.8, false), (0.7, true), (0.1, false)]);
        assert_eq!(points, vec![(0.0, 1.0), (0.5, 1.0), (1.0, 2.0 / 3.0)]);
    }
}
