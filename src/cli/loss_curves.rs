//! `asl loss-curves`: the data and plots of the paper's Figures 2 and 3.

use anyhow::{Context, Result};
use asl::curves::{figure_curves, plot_curves, rejection_point, CurveParameters, PlotLabels};
use asl::loss::{AsymmetricLoss, AsymmetricLossConfig};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct LossCurvesArgs {
    /// Directory for figure2_loss.{csv,png} and figure3_gradient.{csv,png}; created if missing.
    #[arg(long)]
    out: PathBuf,
    /// γ− of the ASL curve.
    #[arg(long, default_value_t = 4.0)]
    gamma_neg: f64,
    /// γ+ of the ASL curve.
    #[arg(long, default_value_t = 0.0)]
    gamma_pos: f64,
    /// Probability margin m of the ASL and CE+PS curves.
    #[arg(long, default_value_t = 0.05)]
    clip: f64,
    /// γ of the focal-loss comparison curve.
    #[arg(long, default_value_t = 2.0)]
    focal_gamma: f64,
    /// Number of probabilities sampled in (0, 1).
    #[arg(long, default_value_t = 999)]
    points: usize,
}

pub fn run(args: &LossCurvesArgs) -> Result<()> {
    let asl = AsymmetricLossConfig {
        gamma_neg: args.gamma_neg,
        gamma_pos: args.gamma_pos,
        clip: args.clip,
        ..Default::default()
    };
    let loss = AsymmetricLoss::new(asl)?;
    let params = CurveParameters { asl, focal_gamma: args.focal_gamma };
    let (figure2, figure3) = figure_curves(&params, args.points)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let figure2_labels = PlotLabels { title: "Figure 2: loss of a negative sample", x: "p", y: "loss" };
    let figure3_labels = PlotLabels { title: "Figure 3: gradient of a negative sample", x: "p", y: "dL/dz" };
    for (set, stem, labels) in
        [(&figure2, "figure2_loss", figure2_labels), (&figure3, "figure3_gradient", figure3_labels)]
    {
        write_file(&args.out.join(format!("{stem}.csv")), &set.to_csv())?;
        plot_curves(set, &labels, &args.out.join(format!("{stem}.png")))?;
    }
    println!("wrote figure2_loss.{{csv,png}} and figure3_gradient.{{csv,png}} to {}", args.out.display());
    match rejection_point(&loss)? {
        Some(p) => println!(
            "p* = {p:.4}: for (g-={}, g+={}, m={}) a negative's gradient peaks there and falls above it, \
             so negatives with p > p* are treated as likely mislabeled",
            args.gamma_neg, args.gamma_pos, args.clip
        ),
        None => println!("p* does not exist for these parameters: the gradient rises up to p = 1, nothing is rejected"),
    }
    Ok(())
}

pub fn write_file(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}
