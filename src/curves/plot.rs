//! PNG line plots of a [`CurveSet`] with plotters, using the embedded
//! DejaVu font so no system font library is needed. plotters draws into an
//! RGB buffer and our own `image` writes the PNG: plotters' encoder would
//! pull a second version of `image` into the build.

use super::compute::CurveSet;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::Path;
use std::sync::Once;

#[derive(Debug, thiserror::Error)]
#[error("cannot draw plot {path}: {message}")]
pub struct PlotError {
    pub path: String,
    pub message: String,
}

/// Axis and title text of one plot.
pub struct PlotLabels<'a> {
    pub title: &'a str,
    pub x: &'a str,
    pub y: &'a str,
}

/// The series colours of every chart asl draws (matplotlib's first six).
pub(crate) const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Registers the embedded DejaVu font as `sans-serif`, once: plotters then
/// lays out text with no system font.
pub(crate) fn register_embedded_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font bytes are a known-valid TTF shipped by the dejavu crate.
        let _ = register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

const WIDTH: u32 = 900;
/// Height of one panel.
const HEIGHT: u32 = 600;

/// Draws every curve of `set` against its x values into a 900×600 PNG at `path`.
pub fn plot_curves(set: &CurveSet, labels: &PlotLabels, path: &Path) -> Result<(), PlotError> {
    plot_panels(&[(set, labels)], path)
}

/// Draws `panels` one above the other (900×600 each) into a PNG at `path`.
pub fn plot_panels(panels: &[(&CurveSet, &PlotLabels)], path: &Path) -> Result<(), PlotError> {
    let error = |e: &dyn std::fmt::Display| PlotError { path: path.display().to_string(), message: e.to_string() };
    let height = HEIGHT * panels.len().max(1) as u32;
    let mut pixels = vec![0u8; (WIDTH * height * 3) as usize];
    draw(panels, &mut pixels, height).map_err(|e| error(&e))?;
    image::save_buffer(path, &pixels, WIDTH, height, image::ExtendedColorType::Rgb8).map_err(|e| error(&e))
}

/// Renders the panels into `pixels`, `height × WIDTH × 3` RGB bytes.
fn draw(panels: &[(&CurveSet, &PlotLabels)], pixels: &mut [u8], height: u32) -> Result<(), String> {
    let error = |e: &dyn std::fmt::Display| e.to_string();
    register_embedded_font();
    let root = BitMapBackend::with_buffer(pixels, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(&e))?;
    for (area, (set, labels)) in root.split_evenly((panels.len().max(1), 1)).iter().zip(panels) {
        draw_panel(area, set, labels).map_err(|e| error(&e))?;
    }
    root.present().map_err(|e| error(&e))
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    set: &CurveSet,
    labels: &PlotLabels,
) -> Result<(), String> {
    let error = |e: &dyn std::fmt::Display| e.to_string();
    let values = || set.curves.iter().flat_map(|c| c.values.iter().copied()).filter(|v| v.is_finite());
    let (y_min, y_max) = (values().fold(0.0_f64, f64::min), values().fold(0.0_f64, f64::max));
    let x_min = set.x.iter().copied().fold(f64::INFINITY, f64::min).min(0.0);
    let x_max = set.x.iter().copied().fold(f64::NEG_INFINITY, f64::max).max(x_min + 1e-9);
    let margin = 0.05 * (y_max - y_min).max(1e-9);
    let mut chart = ChartBuilder::on(area)
        .caption(labels.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x_min..x_max, (y_min - if y_min < 0.0 { margin } else { 0.0 })..y_max + margin)
        .map_err(|e| error(&e))?;
    chart.configure_mesh().x_desc(labels.x).y_desc(labels.y).draw().map_err(|e| error(&e))?;
    for (curve, color) in set.curves.iter().zip(PALETTE.iter().cycle()) {
        let points = set.x.iter().copied().zip(curve.values.iter().copied());
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| error(&e))?
            .label(&curve.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| error(&e))
}
