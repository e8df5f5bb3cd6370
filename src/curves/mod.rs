//! Loss and gradient curves of the paper's Figures 2 and 3, as CSV and PNG.

mod compute;
mod plot;

pub use compute::{
    figure_curves, negative_loss_and_gradient, probability_grid, rejection_point, Curve, CurveParameters, CurveSet,
};
pub use plot::{plot_curves, plot_panels, PlotError, PlotLabels};
pub(crate) use plot::{register_embedded_font, PALETTE};
