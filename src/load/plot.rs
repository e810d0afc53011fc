//! `--plot`: TIME_WAIT count, new conn/s and errors/s over time, one line
//! per run (per compared variant), as an SVG drawn with plotters. The SVG
//! backend writes text as `<text>` elements, so no font is needed.

use plotters::prelude::*;
use std::path::Path;

use super::report::{LoadReport, Sample};
use crate::error::{Error, Result};

/// What a panel shows of a sample.
type Value = fn(&Sample) -> f64;

/// The three panels: title and value of a sample.
const PANELS: [(&str, Value); 3] = [
    ("TIME_WAIT sockets", |s| s.time_wait as f64),
    ("new connections/s", |s| s.conn_per_s),
    ("errors/s", |s| s.errors_per_s),
];

/// Draw `reports`' time series to `path` (SVG).
pub fn svg(reports: &[LoadReport], path: &Path) -> Result<()> {
    draw(reports, path).map_err(|e| Error::Invalid(format!("plot {}: {e}", path.display())))
}

fn draw(
    reports: &[LoadReport],
    path: &Path,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((PANELS.len(), 1));
    let t_max = reports
        .iter()
        .flat_map(|r| r.samples.iter().map(|s| s.t_s))
        .fold(0.1, f64::max);
    for ((title, value), area) in PANELS.iter().zip(&panels) {
        let y_max = reports
            .iter()
            .flat_map(|r| r.samples.iter().map(value))
            .fold(1.0, f64::max)
            * 1.05;
        let mut chart = ChartBuilder::on(area)
            .caption(*title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)?;
        chart.configure_mesh().x_desc("s").draw()?;
        for (i, r) in reports.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    r.samples.iter().map(|s| (s.t_s, value(s))),
                    color.stroke_width(2),
                ))?
                .label(r.label.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
