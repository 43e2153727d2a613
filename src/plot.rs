//! Line charts as hand-written SVG (no plotting crate): metrics against the
//! training step, with axes, "nice" 1-2-5 ticks, a grid and a legend.
//!
//! [`line_chart_svg`] draws any [`Series`]; [`metrics_svg`] reads a
//! `metrics.jsonl` (see [`crate::metrics`]) and draws the chosen keys
//! (e.g. `reward_mean`, `accuracy`, `lambda`) against `step`. A series is
//! one `<polyline>` per run of finite points (a NaN or a missing value breaks
//! the line), plus a dot per point when there are few enough to see them.

use std::fmt::Write as _;
use std::path::Path;

use crate::metrics::{lookup_number, read_metrics, STEP_KEY};
use crate::{Error, Result};

/// Colours of successive series (colour-blind-friendly "tableau" palette).
const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Series with at most this many points also get a dot per point.
const MAX_DOTS: usize = 80;

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

/// Escape text for SVG/XML content and attribute values.
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

/// Tick positions covering `[lo, hi]` with a 1-2-5 step, about `target`
/// of them; the first tick is <= lo and the last >= hi.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let (lo, hi) = padded_range(lo, hi);
    let step = nice_step((hi - lo) / target.max(1) as f64);
    let first = (lo / step).floor();
    let last = (hi / step).ceil();
    let n = (last - first) as i64;
    (0..=n).map(|i| clean((first + i as f64) * step)).collect()
}

/// Round away binary noise (0.30000000000000004 -> 0.3).
fn clean(x: f64) -> f64 {
    let r = (x * 1e9).round() / 1e9;
    if r == 0.0 {
        0.0
    } else {
        r
    }
}

/// A range with non-zero width: a single value v becomes `v ± max(|v|/10, 1)`
/// (so a constant series sits in the middle of the chart).
fn padded_range(lo: f64, hi: f64) -> (f64, f64) {
    if hi > lo {
        (lo, hi)
    } else {
        let pad = (lo.abs() * 0.1).max(1.0);
        (lo - pad, lo + pad)
    }
}

/// The 1, 2 or 5 times a power of ten closest above `raw`.
fn nice_step(raw: f64) -> f64 {
    let raw = if raw.is_finite() && raw > 0.0 {
        raw
    } else {
        1.0
    };
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Tick label with as many decimals as the tick step needs.
fn tick_label(v: f64, step: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e6 || v.abs() < 1e-4) {
        return format!("{v:.1e}");
    }
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

/// Finite min and max of an iterator, if any.
fn finite_range(vals: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    vals.filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// Draw `series` as an SVG line chart (a complete `<svg>` document).
pub fn line_chart_svg(series: &[Series], opts: &ChartOptions) -> String {
    render_chart(series, opts, "plot-area", None)
}

/// Charts stacked top to bottom in one SVG document (e.g. rewards in one
/// panel, timings in another, each with its own y axis).
pub fn panels_svg(panels: &[(ChartOptions, Vec<Series>)]) -> String {
    let width = panels
        .iter()
        .map(|(o, _)| o.width.max(200))
        .max()
        .unwrap_or(800);
    let height: u32 = panels.iter().map(|(o, _)| o.height.max(150)).sum();
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\n<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n"
    );
    let mut y = 0u32;
    for (i, (opts, series)) in panels.iter().enumerate() {
        s.push_str(&render_chart(
            series,
            opts,
            &format!("plot-area-{i}"),
            Some(y),
        ));
        y += opts.height.max(150);
    }
    s.push_str("</svg>\n");
    s
}

/// The chart as an `<svg>` element; `clip_id` must be unique in the
/// document; `y_offset` places it inside an enclosing `<svg>`.
fn render_chart(
    series: &[Series],
    opts: &ChartOptions,
    clip_id: &str,
    y_offset: Option<u32>,
) -> String {
    let (w, h) = (opts.width.max(200) as f64, opts.height.max(150) as f64);
    let finite = |&&(x, y): &&(f64, f64)| x.is_finite() && y.is_finite();
    let pts = || series.iter().flat_map(|s| s.points.iter().filter(finite));
    let x_ticks = match finite_range(pts().map(|p| p.0)) {
        Some((lo, hi)) => nice_ticks(lo, hi, 8),
        None => nice_ticks(0.0, 1.0, 5),
    };
    let y_ticks = match finite_range(pts().map(|p| p.1)) {
        Some((lo, hi)) => nice_ticks(lo, hi, 6),
        None => nice_ticks(0.0, 1.0, 5),
    };
    let (x0, x1) = (x_ticks[0], x_ticks[x_ticks.len() - 1]);
    let (y0, y1) = (y_ticks[0], y_ticks[y_ticks.len() - 1]);

    // Plot area: room for the title and legend above, labels left and below.
    let legend_rows = legend_layout(series, w).1;
    let top = 16.0 + if opts.title.is_empty() { 0.0 } else { 24.0 } + 20.0 * legend_rows as f64;
    let (left, right, bottom) = (72.0, 24.0, 56.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| top + ph - (y - y0) / (y1 - y0) * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg"{} width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#,
        y_offset.map_or(String::new(), |y| format!(r#" x="0" y="{y}""#))
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    if !opts.title.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
            w / 2.0,
            xml_escape(&opts.title)
        );
    }
    // Grid and ticks.
    let x_step = if x_ticks.len() > 1 {
        x_ticks[1] - x_ticks[0]
    } else {
        1.0
    };
    let y_step = if y_ticks.len() > 1 {
        y_ticks[1] - y_ticks[0]
    } else {
        1.0
    };
    for &t in &x_ticks {
        let x = sx(t);
        let _ = writeln!(
            s,
            r##"<line class="grid" x1="{x:.2}" y1="{top:.2}" x2="{x:.2}" y2="{:.2}" stroke="#e4e4e4"/><line x1="{x:.2}" y1="{:.2}" x2="{x:.2}" y2="{:.2}" stroke="#333"/><text class="tick" x="{x:.2}" y="{:.2}" text-anchor="middle">{}</text>"##,
            top + ph,
            top + ph,
            top + ph + 5.0,
            top + ph + 19.0,
            tick_label(t, x_step)
        );
    }
    for &t in &y_ticks {
        let y = sy(t);
        let _ = writeln!(
            s,
            r##"<line class="grid" x1="{left:.2}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}" stroke="#e4e4e4"/><line x1="{:.2}" y1="{y:.2}" x2="{left:.2}" y2="{y:.2}" stroke="#333"/><text class="tick" x="{:.2}" y="{:.2}" text-anchor="end">{}</text>"##,
            left + pw,
            left - 5.0,
            left - 8.0,
            y + 4.0,
            tick_label(t, y_step)
        );
    }
    // Axes box and labels.
    let _ = writeln!(
        s,
        r##"<rect x="{left:.2}" y="{top:.2}" width="{pw:.2}" height="{ph:.2}" fill="none" stroke="#333"/>"##
    );
    if !opts.x_label.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="{:.2}" y="{:.2}" text-anchor="middle" font-size="13">{}</text>"#,
            left + pw / 2.0,
            h - 14.0,
            xml_escape(&opts.x_label)
        );
    }
    if !opts.y_label.is_empty() {
        let (cx, cy) = (18.0, top + ph / 2.0);
        let _ = writeln!(
            s,
            r#"<text x="{cx}" y="{cy:.2}" text-anchor="middle" font-size="13" transform="rotate(-90 {cx} {cy:.2})">{}</text>"#,
            xml_escape(&opts.y_label)
        );
    }
    if pts().next().is_none() {
        let _ = writeln!(
            s,
            r##"<text x="{:.2}" y="{:.2}" text-anchor="middle" fill="#888">no data</text>"##,
            left + pw / 2.0,
            top + ph / 2.0
        );
    }
    // Lines and dots, clipped to the plot area.
    let _ = writeln!(
        s,
        r#"<clipPath id="{clip_id}"><rect x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}"/></clipPath><g clip-path="url(#{clip_id})">"#,
        left - 4.0,
        top - 4.0,
        pw + 8.0,
        ph + 8.0
    );
    for (i, ser) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let n_finite = ser.points.iter().filter(finite).count();
        let _ = writeln!(
            s,
            r#"<g class="series" data-series="{}" data-points="{n_finite}">"#,
            xml_escape(&ser.name)
        );
        for seg in ser
            .points
            .split(|&(x, y)| !(x.is_finite() && y.is_finite()))
            .filter(|seg| seg.len() > 1)
        {
            let coords: Vec<String> = seg
                .iter()
                .map(|&(x, y)| format!("{:.2},{:.2}", sx(x), sy(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" stroke-linejoin="round" points="{}"/>"#,
                coords.join(" ")
            );
        }
        if n_finite <= MAX_DOTS {
            for &(x, y) in ser.points.iter().filter(finite) {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.2}" cy="{:.2}" r="2.5" fill="{color}"><title>{}: {} = {}</title></circle>"#,
                    sx(x),
                    sy(y),
                    xml_escape(&ser.name),
                    x,
                    y
                );
            }
        }
        s.push_str("</g>\n");
    }
    s.push_str("</g>\n");
    // Legend rows above the plot.
    let (items, _) = legend_layout(series, w);
    let legend_top = 16.0 + if opts.title.is_empty() { 0.0 } else { 24.0 };
    for (i, (row, x)) in items.into_iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let y = legend_top + 20.0 * row as f64 + 8.0;
        let _ = writeln!(
            s,
            r#"<g class="legend"><line x1="{x:.2}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}" stroke="{color}" stroke-width="3"/><text x="{:.2}" y="{:.2}">{}</text></g>"#,
            x + 22.0,
            x + 28.0,
            y + 4.0,
            xml_escape(&series[i].name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Place legend entries left to right, wrapping rows: `(row, x)` per series
/// and the number of rows.
fn legend_layout(series: &[Series], width: f64) -> (Vec<(usize, f64)>, usize) {
    let (mut row, mut x) = (0usize, 72.0);
    let mut out = Vec::with_capacity(series.len());
    for ser in series {
        // About 7 px per character at 12 px plus the swatch.
        let item_w = 40.0 + 7.0 * ser.name.chars().count() as f64;
        if x + item_w > width - 16.0 && x > 72.0 {
            row += 1;
            x = 72.0;
        }
        out.push((row, x));
        x += item_w;
    }
    let rows = if series.is_empty() { 0 } else { row + 1 };
    (out, rows)
}

/// One series per key from metrics records: x = `step` (or the record's
/// index when it has none), y = the key's value; records without the key
/// are gaps. Dotted keys reach into nested objects (`timings.generate`).
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

/// Read `metrics_jsonl` and write an SVG chart of `keys` against the step
/// to `out_svg`, titled after the run folder holding the log. A key that no
/// record has is an error naming it.
pub fn metrics_svg(metrics_jsonl: &Path, out_svg: &Path, keys: &[&str]) -> Result<()> {
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
        ..ChartOptions::default()
    };
    metrics_svg_with(metrics_jsonl, out_svg, keys, &opts)
}

/// Read `metrics_jsonl` and write one panel per group of keys to `out_svg`,
/// stacked with a shared step axis, e.g.
/// `&[&["reward_mean", "accuracy"], &["timings.generate_s", "timings.train_s"]]`.
pub fn metrics_panels_svg(metrics_jsonl: &Path, out_svg: &Path, groups: &[&[&str]]) -> Result<()> {
    let records = read_metrics(metrics_jsonl)?;
    let mut panels = Vec::with_capacity(groups.len());
    for keys in groups {
        check_keys(metrics_jsonl, &records, keys)?;
        let opts = ChartOptions {
            height: 300,
            ..ChartOptions::default()
        };
        panels.push((opts, metrics_series(&records, keys)));
    }
    write_svg(out_svg, &panels_svg(&panels))
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

fn write_svg(out_svg: &Path, svg: &str) -> Result<()> {
    if let Some(dir) = out_svg.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(out_svg, svg).map_err(|e| Error::io(out_svg, e))
}

/// [`metrics_svg`] with a caller-chosen title, labels and size.
pub fn metrics_svg_with(
    metrics_jsonl: &Path,
    out_svg: &Path,
    keys: &[&str],
    opts: &ChartOptions,
) -> Result<()> {
    let records = read_metrics(metrics_jsonl)?;
    check_keys(metrics_jsonl, &records, keys)?;
    write_svg(
        out_svg,
        &line_chart_svg(&metrics_series(&records, keys), opts),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_cover_the_range() {
        assert_eq!(nice_ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(
            nice_ticks(1.0, 50.0, 8),
            vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
        );
        assert_eq!(
            nice_ticks(0.13, 0.61, 6),
            vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
        );
        // A constant value gets a range around it.
        let t = nice_ticks(3.0, 3.0, 5);
        assert!(t[0] <= 2.0 && *t.last().unwrap() >= 4.0, "{t:?}");
        assert_eq!(tick_label(0.25, 0.05), "0.25");
        assert_eq!(tick_label(40.0, 10.0), "40");
    }
}
