//! Line charts of metrics against the training step, drawn with `plotters`
//! as SVG or PNG.
//!
//! [`line_chart`] draws any [`Series`]; [`panels`] stacks several charts in
//! one image; [`metrics_chart`] reads a `metrics.jsonl` (see
//! [`crate::metrics`]) and draws the chosen keys (e.g. `reward_mean`,
//! `accuracy`, `lambda`) against `step`, in the format the output file's
//! extension names. A non-finite or missing value breaks a line into
//! segments, and series with few points get a dot per point.
//!
//! Every chart keeps its legend in a band right of the plot (it never
//! covers a point), draws a series that lies on an earlier one dashed on
//! top (see [`legend`]), and on a step axis puts ticks on whole steps (see
//! [`axes`]).
//!
//! Text is measured (and, in PNGs, drawn) with a bundled font (see
//! [`font`]), so charts render the same on a machine with no fonts.

mod axes;
mod font;
mod legend;

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::metrics::{lookup_number, read_metrics, STEP_KEY};
use crate::{Error, Result};

pub use font::text_size;
pub use legend::{DASH, LEGEND_BORDER};

/// Colours of successive series (the colour-blind-friendly "tableau" palette).
pub const PALETTE: [(u8, u8, u8); 10] = [
    (0x1f, 0x77, 0xb4),
    (0xd6, 0x27, 0x28),
    (0x2c, 0xa0, 0x2c),
    (0xff, 0x7f, 0x0e),
    (0x94, 0x67, 0xbd),
    (0x8c, 0x56, 0x4b),
    (0xe3, 0x77, 0xc2),
    (0x7f, 0x7f, 0x7f),
    (0xbc, 0xbd, 0x22),
    (0x17, 0xbe, 0xcf),
];

/// Series with at most this many points also get a dot per point.
const MAX_DOTS: usize = 80;

/// The eight bytes every PNG file starts with.
pub const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

/// One named line: `(x, y)` points in x order (non-finite points are gaps).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// Title, axis labels and size of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartOptions {
    /// Title above the chart (empty for none).
    pub title: String,
    /// Label under the x axis.
    pub x_label: String,
    /// Label beside the y axis.
    pub y_label: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Default for ChartOptions {
    fn default() -> Self {
        Self {
            title: String::new(),
            x_label: "step".into(),
            y_label: String::new(),
            width: 800,
            height: 450,
        }
    }
}

/// An image format for charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Scalable vector graphics (text stays text).
    Svg,
    /// A PNG bitmap.
    Png,
}

impl ImageFormat {
    /// The format named by a path's extension (`.svg` or `.png`, any case).
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("svg") => Ok(Self::Svg),
            Some("png") => Ok(Self::Png),
            _ => Err(Error::InvalidInput(format!(
                "{}: a chart file must end in .svg or .png",
                path.display()
            ))),
        }
    }

    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Svg => "svg",
            Self::Png => "png",
        }
    }
}

impl std::str::FromStr for ImageFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "svg" => Ok(Self::Svg),
            "png" => Ok(Self::Png),
            other => Err(Error::InvalidInput(format!(
                "unknown chart format `{other}` (expected svg or png)"
            ))),
        }
    }
}

/// Escape text for SVG/XML/HTML content and attribute values.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

fn chart_err(e: impl std::fmt::Display) -> Error {
    Error::Chart(e.to_string())
}

/// The runs of consecutive finite points (each run is drawn as one line).
pub fn segments(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            cur.push((x, y));
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Finite min and max of an iterator, if any.
fn finite_range(vals: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    vals.filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// A range with non-zero width, widened by `margin` of its span on each side;
/// a single value v becomes `v ± max(|v|/10, 1)`.
fn padded_range(lo: f64, hi: f64, margin: f64) -> (f64, f64) {
    if hi > lo {
        let pad = (hi - lo) * margin;
        (lo - pad, hi + pad)
    } else {
        let pad = (lo.abs() * 0.1).max(1.0);
        (lo - pad, lo + pad)
    }
}

/// A tick label with as many decimals as a span of `span` needs.
fn tick_label(v: f64, span: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e6 || v.abs() < 1e-4) {
        return format!("{v:.1e}");
    }
    let decimals = if span >= 10.0 {
        0
    } else {
        ((-(span / 10.0).log10()).ceil().max(0.0) as usize).min(6)
    };
    format!("{v:.decimals$}")
}

/// Draw one chart on `area`: the plot, then the legend in a band on its
/// right (see [`legend`]).
fn draw_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[Series],
    opts: &ChartOptions,
) -> Result<()> {
    area.fill(&WHITE).map_err(chart_err)?;
    let finite = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| p.0.is_finite() && p.1.is_finite())
    };
    let (Some(xr), Some(yr)) = (
        finite_range(finite().map(|p| p.0)),
        finite_range(finite().map(|p| p.1)),
    ) else {
        let (w, h) = area.dim_in_pixel();
        let style = ("sans-serif", 18).into_font().color(&BLACK);
        if !opts.title.is_empty() {
            area.draw(&Text::new(opts.title.clone(), (12, 12), style.clone()))
                .map_err(chart_err)?;
        }
        let pos = (w as i32 / 2 - 30, h as i32 / 2);
        area.draw(&Text::new("no data", pos, style))
            .map_err(chart_err)?;
        return Ok(());
    };
    let (x0, x1) = padded_range(xr.0, xr.1, 0.0);
    let (y0, y1) = padded_range(yr.0, yr.1, 0.05);
    let integer_x = axes::all_integers(finite().map(|p| p.0));
    // Within a pixel of a 450-pixel-high chart counts as the same place.
    let styles = legend::series_styles(series, (y1 - y0) / 1000.0);
    let mut builder = ChartBuilder::on(area);
    builder
        .margin(12)
        .margin_right(12 + legend::legend_width(&styles))
        .x_label_area_size(40)
        .y_label_area_size(if opts.y_label.is_empty() { 58 } else { 74 });
    if !opts.title.is_empty() {
        builder.caption(&opts.title, ("sans-serif", 20));
    }
    let mut chart = builder
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(chart_err)?;
    let (xs, ys) = (x1 - x0, y1 - y0);
    let x_fmt = move |v: &f64| axes::x_tick_label(*v, xs, integer_x);
    let y_fmt = move |v: &f64| tick_label(*v, ys);
    chart
        .configure_mesh()
        .x_desc(opts.x_label.as_str())
        .y_desc(opts.y_label.as_str())
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(215, 215, 215))
        .x_labels(axes::x_label_count(x0, x1, integer_x))
        .y_labels(6)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .draw()
        .map_err(chart_err)?;
    for (s, style) in series.iter().zip(&styles) {
        let segs = segments(&s.points);
        legend::draw_lines(&mut chart, &segs, style)?;
        if s.points.len() <= MAX_DOTS {
            legend::draw_markers(&mut chart, &segs, style)?;
        }
    }
    let (px, py) = chart.plotting_area().get_pixel_range();
    let base = area.get_base_pixel();
    legend::draw_legend(area, &styles, px.end - base.0, py.start - base.1)
}

/// Draw `panels` stacked top to bottom on `root`.
fn draw_panels<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    panels: &[(ChartOptions, Vec<Series>)],
) -> Result<()> {
    root.fill(&WHITE).map_err(chart_err)?;
    let mut rest = root.clone();
    for (opts, series) in panels {
        let (top, below) = rest.split_vertically(opts.height);
        draw_chart(&top, series, opts)?;
        rest = below;
    }
    root.present().map_err(chart_err)
}

/// Total size of stacked panels: the widest width, the summed heights.
fn panels_size(panels: &[(ChartOptions, Vec<Series>)]) -> (u32, u32) {
    let w = panels.iter().map(|p| p.0.width).max().unwrap_or(800);
    let h: u32 = panels.iter().map(|p| p.0.height).sum();
    (w.max(1), h.max(1))
}

/// Several charts stacked in one image, each with its own title and size.
pub fn panels(panels: &[(ChartOptions, Vec<Series>)], format: ImageFormat) -> Result<Vec<u8>> {
    let (w, h) = panels_size(panels);
    match format {
        ImageFormat::Svg => {
            let mut svg = String::new();
            {
                let backend =
                    font::GlyphText::new(SVGBackend::with_string(&mut svg, (w, h)), false);
                draw_panels(backend.into_drawing_area(), panels)?;
            }
            Ok(svg.into_bytes())
        }
        ImageFormat::Png => {
            let mut rgb = vec![0u8; w as usize * h as usize * 3];
            {
                let backend =
                    font::GlyphText::new(BitMapBackend::with_buffer(&mut rgb, (w, h)), true);
                draw_panels(backend.into_drawing_area(), panels)?;
            }
            encode_png(&rgb, w, h)
        }
    }
}

/// Encode an RGB buffer as PNG.
fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(chart_err)?;
        writer.write_image_data(rgb).map_err(chart_err)?;
    }
    Ok(out)
}

/// One chart of `series` in `format`.
pub fn line_chart(series: &[Series], opts: &ChartOptions, format: ImageFormat) -> Result<Vec<u8>> {
    panels(&[(opts.clone(), series.to_vec())], format)
}

/// One chart of `series` as an SVG document.
pub fn line_chart_svg(series: &[Series], opts: &ChartOptions) -> Result<String> {
    let bytes = line_chart(series, opts, ImageFormat::Svg)?;
    String::from_utf8(bytes).map_err(chart_err)
}

/// Stacked panels as an SVG document.
pub fn panels_svg(p: &[(ChartOptions, Vec<Series>)]) -> Result<String> {
    String::from_utf8(panels(p, ImageFormat::Svg)?).map_err(chart_err)
}

/// Write an image, creating the parent folder.
pub fn write_image(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// One series per key from metrics records: x = `step` (or the record's
/// index when it has none), y = the key's value; records without the key
/// are gaps. Dotted keys reach into nested objects (`timings.generate_s`).
pub fn metrics_series(records: &[serde_json::Value], keys: &[&str]) -> Vec<Series> {
    keys.iter()
        .map(|&key| Series {
            name: key.to_string(),
            points: records
                .iter()
                .enumerate()
                .filter(|(_, r)| r.is_object())
                .map(|(i, r)| {
                    let x = lookup_number(r, STEP_KEY).unwrap_or(i as f64);
                    (x, lookup_number(r, key).unwrap_or(f64::NAN))
                })
                .collect(),
        })
        .collect()
}

/// Read `metrics_jsonl` and write a chart of `keys` against the step to
/// `out` (SVG or PNG by its extension), titled after the run folder holding
/// the log. A key that no record has is an error naming it.
pub fn metrics_chart(metrics_jsonl: &Path, out: &Path, keys: &[&str]) -> Result<()> {
    let run = metrics_jsonl.canonicalize().ok().and_then(|p| {
        p.parent()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
    });
    let title = match run {
        Some(run) => format!("{run}: metrics by step"),
        None => "metrics by step".to_string(),
    };
    let opts = ChartOptions {
        title,
        y_label: y_label_of(keys),
        ..ChartOptions::default()
    };
    metrics_chart_with(metrics_jsonl, out, keys, &opts)
}

/// [`metrics_chart`] with a caller-chosen title, labels and size.
pub fn metrics_chart_with(
    metrics_jsonl: &Path,
    out: &Path,
    keys: &[&str],
    opts: &ChartOptions,
) -> Result<()> {
    let format = ImageFormat::from_path(out)?;
    let records = read_metrics(metrics_jsonl)?;
    check_keys(metrics_jsonl, &records, keys)?;
    let bytes = line_chart(&metrics_series(&records, keys), opts, format)?;
    write_image(out, &bytes)
}

/// Read `metrics_jsonl` and write one panel per group of keys to `out`
/// (SVG or PNG by its extension), stacked with a shared step axis, e.g.
/// `&[&["reward_mean", "accuracy"], &["timings.generate_s", "timings.train_s"]]`.
pub fn metrics_panels(metrics_jsonl: &Path, out: &Path, groups: &[&[&str]]) -> Result<()> {
    let format = ImageFormat::from_path(out)?;
    let records = read_metrics(metrics_jsonl)?;
    let mut p = Vec::with_capacity(groups.len());
    for keys in groups {
        check_keys(metrics_jsonl, &records, keys)?;
        let opts = ChartOptions {
            y_label: y_label_of(keys),
            height: 300,
            ..ChartOptions::default()
        };
        p.push((opts, metrics_series(&records, keys)));
    }
    write_image(out, &panels(&p, format)?)
}

/// A y label naming the keys drawn (the first three, then "...").
fn y_label_of(keys: &[&str]) -> String {
    let mut label = keys.iter().take(3).copied().collect::<Vec<_>>().join(", ");
    if keys.len() > 3 {
        label.push_str(", ...");
    }
    label
}

/// Every key must be a number in at least one record.
fn check_keys(path: &Path, records: &[serde_json::Value], keys: &[&str]) -> Result<()> {
    for key in keys {
        if !records.iter().any(|r| lookup_number(r, key).is_some()) {
            return Err(Error::Metrics {
                path: path.to_path_buf(),
                line: 0,
                msg: format!("no record has a numeric `{key}`"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_split_at_gaps() {
        let pts = [
            (1.0, 1.0),
            (2.0, f64::NAN),
            (3.0, 3.0),
            (4.0, 4.0),
            (f64::INFINITY, 5.0),
        ];
        assert_eq!(
            segments(&pts),
            vec![vec![(1.0, 1.0)], vec![(3.0, 3.0), (4.0, 4.0)]]
        );
        assert!(segments(&[(1.0, f64::NAN)]).is_empty());
    }

    #[test]
    fn ranges_and_tick_labels() {
        assert_eq!(padded_range(0.0, 1.0, 0.05), (-0.05, 1.05));
        assert_eq!(padded_range(3.0, 3.0, 0.05), (2.0, 4.0));
        assert_eq!(padded_range(50.0, 50.0, 0.0), (45.0, 55.0));
        assert_eq!(tick_label(40.0, 60.0), "40");
        assert_eq!(tick_label(0.2, 1.1), "0.2");
        assert_eq!(tick_label(0.5, 0.01), "0.500");
        assert_eq!(tick_label(2e-6, 1e-5), "2.0e-6");
    }

    #[test]
    fn format_from_path_and_name() {
        assert_eq!(
            ImageFormat::from_path(Path::new("a/b.SVG")).unwrap(),
            ImageFormat::Svg
        );
        assert_eq!(
            ImageFormat::from_path(Path::new("b.png")).unwrap(),
            ImageFormat::Png
        );
        let err = ImageFormat::from_path(Path::new("b.jpg"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("b.jpg"), "{err}");
        assert_eq!("png".parse::<ImageFormat>().unwrap(), ImageFormat::Png);
        assert!("gif".parse::<ImageFormat>().is_err());
    }
}
