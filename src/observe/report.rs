//! A run's report as one self-contained HTML file: a summary, the charts
//! (inline SVG), the resolved configuration, and sampled completions with
//! every token coloured by its credit `Ahat_t / A` (the `rlsd inspect` view).
//!
//! Written by [`super::Observer::finish`] at the end of a run, and by
//! `rlsd report RUN` from the files in a run folder at any time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::charts::{resolve, reward_options, reward_series, run_panels};
use super::inspection::render_sections;
use crate::metrics::{lookup_number, read_metrics};
use crate::plot::{line_chart_svg, panels_svg, xml_escape};
use crate::{Error, Result};

use super::completions::{read_completions, COMPLETIONS_FILE};
use super::CONFIG_FILE;

/// The report's file name inside a run folder.
pub const REPORT_FILE: &str = "report.html";

/// Logged steps shown in the report (the first and the last).
const STEPS_SHOWN: usize = 2;

/// Summary rows: key and label.
const SUMMARY: &[(&str, &str)] = &[
    ("reward_mean", "mean reward"),
    ("accuracy", "accuracy"),
    ("response_len_mean", "response length"),
    ("grad_norm", "gradient norm"),
    ("weight_clip_frac", "weight clip fraction"),
    ("ratio_clip_frac", "ratio clip fraction"),
];

/// The resolved configuration of a run folder: `config.toml`, else the
/// newest checkpoint's copy.
fn run_config(run_dir: &Path) -> Option<(PathBuf, String)> {
    let direct = run_dir.join(CONFIG_FILE);
    if let Ok(t) = std::fs::read_to_string(&direct) {
        return Some((direct, t));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(run_dir.join("checkpoints"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(CONFIG_FILE))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    let p = found.pop()?;
    let t = std::fs::read_to_string(&p).ok()?;
    Some((p, t))
}

/// First, last and mean of the last ten values of `key`.
fn summary_row(records: &[serde_json::Value], key: &str) -> Option<(f64, f64, f64)> {
    let vals: Vec<f64> = records
        .iter()
        .filter_map(|r| lookup_number(r, key))
        .filter(|v| v.is_finite())
        .collect();
    let first = *vals.first()?;
    let last = *vals.last()?;
    let tail = &vals[vals.len().saturating_sub(10)..];
    Some((first, last, tail.iter().sum::<f64>() / tail.len() as f64))
}

/// Build the report of the run folder `run_dir`.
pub fn render_report(run_dir: &Path) -> Result<String> {
    let src = resolve(run_dir)?;
    let records = read_metrics(&src.metrics)?;
    let mut body = String::new();

    // Summary.
    let algo = records
        .iter()
        .rev()
        .find_map(|r| r.get("algo").and_then(|a| a.as_str()))
        .unwrap_or("?");
    let last_step = records
        .iter()
        .filter_map(|r| lookup_number(r, "step"))
        .fold(0.0f64, f64::max);
    let _ = writeln!(
        body,
        "<table class=\"summary\"><tr><td>run folder</td><td><code>{}</code></td></tr>\
         <tr><td>algorithm</td><td><b>{}</b></td></tr><tr><td>steps logged</td><td>{} (last step {})</td></tr></table>",
        xml_escape(&run_dir.display().to_string()),
        xml_escape(algo),
        records.len(),
        last_step
    );
    body.push_str("<table class=\"summary\"><tr><th></th><th>first</th><th>last</th><th>mean of last 10</th></tr>\n");
    for (key, label) in SUMMARY {
        if let Some((f, l, m)) = summary_row(&records, key) {
            let _ = writeln!(
                body,
                "<tr><td>{label} <code>{key}</code></td><td>{f:.4}</td><td>{l:.4}</td><td>{m:.4}</td></tr>"
            );
        }
    }
    body.push_str("</table>\n");

    // Charts.
    body.push_str("<h2>Charts</h2>\n");
    if records.is_empty() {
        body.push_str("<p>metrics.jsonl has no records yet.</p>\n");
    } else {
        let opts = reward_options(&src.label, &records);
        let _ = writeln!(
            body,
            "<div class=\"chart\">{}</div>",
            strip_xml_prolog(&line_chart_svg(&reward_series(&records), &opts)?)
        );
        for panel in run_panels(&records) {
            let _ = writeln!(
                body,
                "<div class=\"chart\">{}</div>",
                strip_xml_prolog(&panels_svg(&[panel])?)
            );
        }
    }

    // Completions.
    body.push_str("<h2>Sampled completions</h2>\n");
    let mut style = String::new();
    let comp_path = run_dir.join(COMPLETIONS_FILE);
    if comp_path.is_file() {
        let steps = read_completions(&comp_path)?;
        let mut chosen: Vec<&super::StepCompletions> = Vec::new();
        if let Some(first) = steps.first() {
            chosen.push(first);
        }
        if let Some(last) = steps
            .last()
            .filter(|l| steps.len() > 1 && l.step != steps[0].step)
        {
            chosen.push(last);
        }
        chosen.truncate(STEPS_SHOWN);
        if chosen.is_empty() {
            body.push_str("<p>completions.jsonl has no steps yet.</p>\n");
        }
        for s in chosen {
            let ins = super::inspection::Inspection::from_logged(s);
            let (st, sections) = render_sections(&ins)?;
            style = st;
            let _ = writeln!(
                body,
                "<details open><summary>step {} ({}, lambda {:.4}): {} responses, accuracy {:.3}, mean reward {:.3}</summary>\n{}</details>",
                s.step,
                xml_escape(&s.algo),
                s.lambda,
                ins.responses.len(),
                ins.accuracy(),
                ins.reward_mean(),
                sections
            );
        }
    } else {
        let _ = writeln!(
            body,
            "<p>No {COMPLETIONS_FILE} in this run folder (observe.completions_per_step = 0, or a run from an older rlsd).</p>"
        );
    }

    // Configuration.
    body.push_str("<h2>Configuration</h2>\n");
    match run_config(run_dir) {
        Some((path, text)) => {
            let _ = writeln!(
                body,
                "<p>from <code>{}</code></p><pre class=\"config\">{}</pre>",
                xml_escape(&path.display().to_string()),
                xml_escape(&text)
            );
        }
        None => body.push_str("<p>No config.toml in this run folder or its checkpoints.</p>\n"),
    }

    let title = format!("rlsd run report: {}", src.label);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>{t}</title>\n<style>\n{style}\n\
         body{{font-family:system-ui,sans-serif;margin:24px auto;max-width:1000px;color:#222}}\
         table.summary{{border-collapse:collapse;margin:8px 0 16px}}table.summary td,table.summary th{{padding:2px 14px 2px 0;text-align:left}}\
         .chart svg{{max-width:100%;height:auto}}pre.config{{background:#f6f6f6;padding:10px;font-size:13px;overflow:auto}}\
         details{{margin:12px 0}}summary{{font-weight:600;cursor:pointer}}\n\
         </style></head><body>\n<h1>{t}</h1>\n{body}</body></html>\n",
        t = xml_escape(&title),
    );
    Ok(h)
}

/// An SVG document without a leading `<?xml ...?>` line, for inlining in HTML.
fn strip_xml_prolog(svg: &str) -> &str {
    let s = svg.trim_start();
    if s.starts_with("<?xml") {
        s.find("?>").map_or(s, |i| s[i + 2..].trim_start())
    } else {
        s
    }
}

/// Write the report of `run_dir` to `out`; returns `out`.
pub fn write_report(run_dir: &Path, out: &Path) -> Result<PathBuf> {
    if !run_dir.is_dir() {
        return Err(Error::InvalidInput(format!(
            "{} is not a folder: `rlsd report` takes a run folder",
            run_dir.display()
        )));
    }
    let html = render_report(run_dir)?;
    crate::plot::write_image(out, html.as_bytes())?;
    Ok(out.to_path_buf())
}
