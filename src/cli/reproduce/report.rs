//! The comparison's outputs: results.md and results.csv (Tables 2 and 3),
//! delta_p.{csv,png} (Figure 4) and figure9.{csv,png} (γ− and Δp of the
//! adaptive run during training).

use super::{Entry, ReproduceArgs, RunResult};
use anyhow::Result;
use asl::curves::{plot_curves, plot_panels, Curve, CurveSet, PlotLabels};
use std::fmt::Write as _;

fn mean_std(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = values.clone().count() as f64;
    let mean = values.clone().sum::<f64>() / n;
    let var = if n > 1.0 { values.map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

pub(super) fn write(args: &ReproduceArgs, entries: &[Entry], results: &[Vec<RunResult>]) -> Result<()> {
    let mut md = format!(
        "Test mAP after {} epochs, {} seeds (mean ± std), test_resnet at 64 px, {} train images with {:.0}% of \
         positive labels dropped, {} clean test images.\n\n| loss | mAP | mAP (EMA) | final Δp (test) | final γ− |\n\
         |---|---|---|---|---|\n",
        args.epochs,
        args.seeds,
        args.train_images,
        100.0 * args.drop_positive,
        args.test_images
    );
    let mut csv = String::from("loss,seed,map,map_ema,delta_p,gamma_neg\n");
    for (entry, runs) in entries.iter().zip(results) {
        let (m, s) = mean_std(runs.iter().map(|r| r.map));
        let (me, se) = mean_std(runs.iter().map(|r| r.map_ema));
        let (d, _) = mean_std(runs.iter().map(|r| r.delta_p));
        let (g, sg) = mean_std(runs.iter().map(|r| r.gamma_neg));
        let name = &entry.name;
        writeln!(md, "| {name} | {m:.2} ± {s:.2} | {me:.2} ± {se:.2} | {d:.3} | {g:.2} ± {sg:.2} |")?;
        for (seed, r) in runs.iter().enumerate() {
            writeln!(csv, "{name},{seed},{},{},{},{}", r.map, r.map_ema, r.delta_p, r.gamma_neg)?;
        }
    }
    std::fs::write(args.out.join("results.md"), &md)?;
    std::fs::write(args.out.join("results.csv"), csv)?;
    figure4(args, entries, results)?;
    figure9(args, entries, results)?;
    println!("\n{md}\nwritten to {}", args.out.display());
    Ok(())
}

/// Δp against the step for CE, focal and ASL (seed 0).
fn figure4(args: &ReproduceArgs, entries: &[Entry], results: &[Vec<RunResult>]) -> Result<()> {
    let picked = [0usize, 1, 4];
    let x: Vec<f64> = results[0][0].series.iter().map(|(s, ..)| *s as f64).collect();
    let curves = picked
        .iter()
        .map(|&i| Curve { name: entries[i].name.clone(), values: results[i][0].series.iter().map(|p| p.1).collect() })
        .collect();
    let set = CurveSet { x_name: "step".into(), x, curves };
    std::fs::write(args.out.join("delta_p.csv"), set.to_csv())?;
    let labels =
        PlotLabels {
            title: "Figure 4: probability gap during training", x: "optimizer step", y: "Δp = p_t+ − p_t−"
        };
    Ok(plot_curves(&set, &labels, &args.out.join("delta_p.png"))?)
}

/// γ− and Δp against the step for every adaptive target (seed 0), with
/// the targets as flat lines.
fn figure9(args: &ReproduceArgs, entries: &[Entry], results: &[Vec<RunResult>]) -> Result<()> {
    let adaptive: Vec<(f64, &RunResult)> =
        entries.iter().zip(results).filter_map(|(e, runs)| Some((e.target?, &runs[0]))).collect();
    let Some((_, first)) = adaptive.first() else { return Ok(()) };
    let x: Vec<f64> = first.series.iter().map(|(s, ..)| *s as f64).collect();
    let curve = |name: String, pick: &dyn Fn(&(u64, f64, f64)) -> f64, run: &RunResult| Curve {
        name,
        values: run.series.iter().map(pick).collect(),
    };
    let gamma = CurveSet {
        x_name: "step".into(),
        x: x.clone(),
        curves: adaptive.iter().map(|(t, run)| curve(format!("γ− (target {t})"), &|p| p.2, run)).collect(),
    };
    let mut delta_curves: Vec<Curve> =
        adaptive.iter().map(|(t, run)| curve(format!("Δp (target {t})"), &|p| p.1, run)).collect();
    delta_curves.extend(adaptive.iter().map(|(t, _)| Curve { name: format!("target {t}"), values: vec![*t; x.len()] }));
    let delta = CurveSet { x_name: "step".into(), x, curves: delta_curves };
    let mut both = gamma.clone();
    both.curves.extend(delta.curves.iter().take(adaptive.len()).cloned());
    std::fs::write(args.out.join("figure9.csv"), both.to_csv())?;
    let gamma_labels =
        PlotLabels { title: "Figure 9: γ− set by adaptive asymmetry", x: "optimizer step", y: "γ−" };
    let delta_labels =
        PlotLabels { title: "the probability gap it steers", x: "optimizer step", y: "Δp = p_t+ − p_t− (batch)" };
    Ok(plot_panels(&[(&gamma, &gamma_labels), (&delta, &delta_labels)], &args.out.join("figure9.png"))?)
}
