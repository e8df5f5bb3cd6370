//! The reports' charts as inline SVG, drawn with plotters (its text laid
//! out with the embedded DejaVu font, so no system font is needed and the
//! page needs nothing from elsewhere).

use crate::curves::{register_embedded_font, PALETTE};
use plotters::prelude::*;

/// One line of a line chart.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// Horizontal bars, one per `(label, value)`, in the given order, on a
/// 0..`max` axis.
pub fn bars(title: &str, values: &[(String, f64)], axis: &str, max: f64) -> Result<String, String> {
    register_embedded_font();
    let rows = values.len().max(1);
    let height = (60 + 16 * rows) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (820, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let label_width = values.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(4).min(28) as u32 * 7 + 10;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(label_width)
            .build_cartesian_2d(0.0..max, 0.0..rows as f64)
            .map_err(|e| e.to_string())?;
        let label = |y: &f64| {
            let index = rows as f64 - 0.5 - *y;
            values
                .get(index.round() as usize)
                .filter(|_| (index - index.round()).abs() < 0.01)
                .map_or_else(String::new, |(l, _)| l.chars().take(28).collect())
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(axis)
            .y_labels(rows * 2 + 1)
            .y_label_formatter(&label)
            .label_style(("sans-serif", 11))
            .draw()
            .map_err(|e| e.to_string())?;
        let bars = values.iter().enumerate().map(|(i, (_, value))| {
            let top = (rows - i) as f64 - 0.15;
            Rectangle::new([(0.0, top - 0.7), (value.clamp(0.0, max), top)], PALETTE[0].filled())
        });
        chart.draw_series(bars).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Lines over `x` in `x_range` and `y` in `y_range`, with a legend.
pub fn lines(
    title: &str,
    series: &[Series],
    (x_axis, y_axis): (&str, &str),
    x_range: std::ops::Range<f64>,
    y_range: std::ops::Range<f64>,
) -> Result<String, String> {
    register_embedded_font();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (520, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(44)
            .build_cartesian_2d(x_range, y_range)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_axis)
            .y_desc(y_axis)
            .label_style(("sans-serif", 11))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, line) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(line.points.iter().copied(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(line.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 11))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_that_names_their_labels() {
        let svg = bars("AP", &[("cat".into(), 80.0), ("dog".into(), 20.0)], "AP", 100.0).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("cat") && svg.contains("dog"), "{svg}");
        let line = Series { name: "Δp", points: vec![(1.0, 0.1), (2.0, 0.2)] };
        let svg = lines("history", &[line], ("epoch", "value"), 1.0..2.0, 0.0..1.0).unwrap();
        assert!(svg.contains("<svg") && svg.contains("Δp"), "{svg}");
    }
}
