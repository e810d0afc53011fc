//! `--plot FILE.svg|FILE.png`: TIME_WAIT count, new conn/s and errors/s
//! over time, drawn with plotters: SVG (text as `<text>` elements, the
//! viewer's font) or PNG (plotters' bitmap backend, text rasterised with
//! ab_glyph from a DejaVu Sans subset embedded in the binary,
//! `assets/fonts/`, so no system font is needed; encoded with `png`). One row of three panels per run (per
//! compared variant), each panel on its own scale, so variants sit side
//! by side instead of on top of each other near zero; each row is
//! titled with its variant (the legend, outside the data), and the rule
//! model's predicted limit is drawn where it has one: the steady rate
//! once every port is in TIME_WAIT, and the ports that TIME_WAIT can fill.

use plotters::prelude::*;
use std::path::{Path, PathBuf};

use super::report::{Limit, LoadReport, Sample};
use crate::error::{Error, Result};

/// What a panel shows of a sample.
type Value = fn(&Sample) -> f64;

/// The three panels: title and value of a sample.
const PANELS: [(&str, Value); 3] = [
    ("TIME_WAIT sockets", |s| s.time_wait as f64),
    ("new connections/s", |s| s.conn_per_s),
    ("errors/s", |s| s.errors_per_s),
];

/// Pixels per row of panels, and the figure's width.
const ROW_H: u32 = 240;
const WIDTH: u32 = 1200;

/// The image formats `--plot` writes, chosen by the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.svg`: text stays text.
    Svg,
    /// `.png`: a bitmap.
    Png,
}

impl Format {
    /// The format named by `path`'s extension (any case); `None` for
    /// another extension or none.
    pub fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "svg" => Some(Format::Svg),
            "png" => Some(Format::Png),
            _ => None,
        }
    }
}

/// `--plot`'s argument: a file name ending in `.svg` or `.png`. Other
/// extensions are refused as the argument is parsed, before the run
/// (`--plot x.png` used to run the whole load and then write SVG under
/// that name; `x.jpg` would have too).
pub fn parse_path(s: &str) -> std::result::Result<PathBuf, String> {
    let p = PathBuf::from(s);
    match Format::of(&p) {
        Some(_) => Ok(p),
        None => Err(format!(
            "'{}': give a file name ending in .svg or .png (the format follows the extension)",
            crate::text::echo(s)
        )),
    }
}

/// The embedded font (DejaVu Sans, ASCII and the few symbols twlab
/// prints; its licence is `assets/fonts/LICENSE-DejaVu.txt`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");

/// Register [`FONT`] as plotters' "sans-serif", once: with the ab_glyph
/// feature plotters measures (SVG) and draws (PNG) text only with
/// registered fonts.
fn register_font() -> Result<()> {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(
            "plot: the embedded font does not load".into(),
        ))
    }
}

/// The figure's size in pixels: a row of panels per run.
fn size(reports: &[LoadReport]) -> (u32, u32) {
    (WIDTH, ROW_H * reports.len().max(1) as u32)
}

/// The figure in `format`, as the file's bytes.
pub fn render(reports: &[LoadReport], format: Format) -> Result<Vec<u8>> {
    match format {
        Format::Svg => render_svg(reports).map(String::into_bytes),
        Format::Png => render_png(reports),
    }
}

/// The figure as a PNG file's bytes (8-bit RGB).
pub fn render_png(reports: &[LoadReport]) -> Result<Vec<u8>> {
    register_font()?;
    let (w, h) = size(reports);
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw_on(root, reports).map_err(|e| Error::Invalid(format!("drawing the plot: {e}")))?;
    }
    let mut out = Vec::new();
    let png_err = |e: png::EncodingError| Error::Invalid(format!("encoding the plot as PNG: {e}"));
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(png_err)?;
    writer.write_image_data(&rgb).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    Ok(out)
}

/// The predicted limit a panel draws, with its label.
fn limit_line(panel: usize, r: &LoadReport) -> Option<(f64, String)> {
    match (&r.predicted, panel) {
        // The ports of the range: at most this many TIME_WAIT to one
        // destination before connect() finds none (the first failure).
        (
            Limit::Rate {
                first_failure_after,
                ..
            },
            0,
        ) => Some((
            *first_failure_after as f64,
            format!("predicted: {first_failure_after} ports"),
        )),
        (Limit::Rate { per_s, .. }, 1) => Some((*per_s, format!("predicted limit {per_s:.0}/s"))),
        _ => None,
    }
}

/// The figure as SVG text.
pub fn render_svg(reports: &[LoadReport]) -> Result<String> {
    register_font()?;
    let mut out = String::new();
    draw(reports, &mut out).map_err(|e| Error::Invalid(format!("drawing the plot: {e}")))?;
    Ok(out)
}

/// Draw `reports` to `path` in the format its extension names ([`Format`];
/// SVG when it names none), whole or not at all: through a temporary file
/// renamed into place (`crate::outfile`).
pub fn write(reports: &[LoadReport], path: &Path) -> Result<crate::outfile::Written> {
    let bytes = render(reports, Format::of(path).unwrap_or(Format::Svg))?;
    crate::outfile::write_bytes(path, &bytes)
}

/// Draw `reports` to `path` (SVG), whole or not at all: through a
/// temporary file renamed into place (`crate::outfile`).
pub fn svg(reports: &[LoadReport], path: &Path) -> Result<crate::outfile::Written> {
    let text = render_svg(reports)?;
    crate::outfile::write_bytes(path, text.as_bytes())
}

fn draw(
    reports: &[LoadReport],
    out: &mut String,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    draw_on(
        SVGBackend::with_string(out, size(reports)).into_drawing_area(),
        reports,
    )
}

/// Draw the figure on any plotters backend (SVG text, PNG pixels).
fn draw_on<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    reports: &[LoadReport],
) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let rows = reports.len().max(1);
    root.fill(&WHITE)?;
    let t_max = reports
        .iter()
        .flat_map(|r| r.samples.iter().map(|s| s.t_s))
        .fold(0.1, f64::max);
    // A scale per panel (its run and its predicted line): with one scale
    // per measure, a 1,000-port run sat flat under a 65,000-port one; the
    // axis labels carry the comparison between rows.
    let y_max = |i: usize, r: &LoadReport| {
        r.samples
            .iter()
            .map(PANELS[i].1)
            .chain(limit_line(i, r).map(|(y, _)| y))
            .fold(1.0, f64::max)
            * 1.08
    };
    let cells = root.split_evenly((rows, PANELS.len()));
    for (row, r) in reports.iter().enumerate() {
        let color = Palette99::pick(row).to_rgba();
        for (i, (title, value)) in PANELS.iter().enumerate() {
            let area = &cells[row * PANELS.len() + i];
            let caption = if i == 0 {
                format!("[{}] {title}", r.label)
            } else {
                title.to_string()
            };
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 15))
                .margin(8)
                .x_label_area_size(26)
                .y_label_area_size(58)
                .build_cartesian_2d(0.0..t_max, 0.0..y_max(i, r))?;
            chart.configure_mesh().x_desc("s").draw()?;
            chart.draw_series(LineSeries::new(
                r.samples.iter().map(|s| (s.t_s, value(s))),
                color.stroke_width(2),
            ))?;
            if let Some((y, label)) = limit_line(i, r) {
                chart.draw_series(DashedLineSeries::new(
                    [(0.0, y), (t_max, y)],
                    6,
                    4,
                    RED.stroke_width(1),
                ))?;
                chart.draw_series(std::iter::once(Text::new(
                    label,
                    (t_max * 0.02, y),
                    ("sans-serif", 12).into_font().color(&RED),
                )))?;
            }
        }
    }
    root.present()?;
    Ok(())
}
