//! `rlsd plot`: charts from runs' `metrics.jsonl`.
//!
//! With one run folder, redraw its `reward.svg` (reward, accuracy, lambda; the
//! same chart the runtime draws at the end of a run) and `panels.svg` (stacked
//! panels: reward and accuracy, lambda and the credit statistics, losses, and
//! the per-stage timings), each panel keeping only the keys the log actually
//! has. With several (or `--out`), draw one key of every run on one chart,
//! smoothed by a trailing mean, to compare runs (RLSD against GRPO, seeds).

use crate::error::{Error, Result};
use crate::metrics::{lookup_number, read_metrics};
use crate::plot::{line_chart_svg, metrics_series, metrics_svg, panels_svg, ChartOptions};
use std::path::{Path, PathBuf};

/// Keys of `reward.svg`.
pub const REWARD_KEYS: &[&str] = &["reward_mean", "accuracy", "lambda"];

/// Panels of `panels.svg`: a title and the keys it may show.
pub const PANELS: &[(&str, &[&str])] = &[
    ("reward and accuracy", &["reward_mean", "accuracy"]),
    (
        "credit",
        &[
            "lambda",
            "weight_clip_frac",
            "delta_abs_mean",
            "ratio_clip_frac",
        ],
    ),
    ("loss and gradient norm", &["loss", "pg_loss", "grad_norm"]),
    (
        "stage seconds per step",
        &[
            "timings.generate_s",
            "timings.verify_s",
            "timings.teacher_s",
            "timings.credit_s",
            "timings.train_s",
            "timings.idle_s",
        ],
    ),
];

/// Redraw `RUN_DIR/reward.svg` and `RUN_DIR/panels.svg`; returns the files written.
pub fn plot_run(run_dir: &Path) -> Result<Vec<PathBuf>> {
    if !run_dir.is_dir() {
        return Err(Error::InvalidInput(format!(
            "run directory {} does not exist",
            run_dir.display()
        )));
    }
    let metrics = metrics_of(run_dir)?;
    let reward = run_dir.join("reward.svg");
    metrics_svg(&metrics, &reward, REWARD_KEYS)?;

    let records = read_metrics(&metrics)?;
    let mut panels = Vec::new();
    for (title, keys) in PANELS {
        let present: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| records.iter().any(|r| lookup_number(r, k).is_some()))
            .collect();
        if present.is_empty() {
            continue;
        }
        let opts = ChartOptions {
            title: (*title).to_string(),
            height: 300,
            ..ChartOptions::default()
        };
        panels.push((opts, metrics_series(&records, &present)));
    }
    let panels_path = run_dir.join("panels.svg");
    std::fs::write(&panels_path, panels_svg(&panels)).map_err(|e| Error::io(&panels_path, e))?;
    Ok(vec![reward, panels_path])
}

/// Draw `key` of every run on one chart written to `out`: one line per run,
/// named after its folder, each point the mean of the last `smooth` values
/// (1 = raw). A run without `metrics.jsonl`, or without `key` anywhere in it,
/// is an error naming it.
pub fn compare_runs(run_dirs: &[PathBuf], key: &str, smooth: usize, out: &Path) -> Result<()> {
    if run_dirs.is_empty() {
        return Err(Error::InvalidInput(
            "plot needs at least one run folder".into(),
        ));
    }
    let smooth = smooth.max(1);
    let mut series = Vec::with_capacity(run_dirs.len());
    for dir in run_dirs {
        let metrics = metrics_of(dir)?;
        let records = read_metrics(&metrics)?;
        let mut s = metrics_series(&records, &[key]).remove(0);
        if !s.points.iter().any(|p| p.1.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "{}: no record has a numeric `{key}`",
                metrics.display()
            )));
        }
        s.name = run_label(dir);
        s.points = trailing_mean(&s.points, smooth);
        series.push(s);
    }
    let title = if smooth > 1 {
        format!("{key}, mean of the last {smooth} steps")
    } else {
        key.to_string()
    };
    let opts = ChartOptions {
        title,
        y_label: key.to_string(),
        ..ChartOptions::default()
    };
    let svg = line_chart_svg(&series, &opts);
    if let Some(parent) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    std::fs::write(out, svg).map_err(|e| Error::io(out, e))
}

/// `RUN_DIR/metrics.jsonl`, or an error saying the folder is not a run.
fn metrics_of(run_dir: &Path) -> Result<PathBuf> {
    let metrics = run_dir.join("metrics.jsonl");
    if !metrics.is_file() {
        return Err(Error::InvalidInput(format!(
            "{} not found: is {} a run directory written by `rlsd train`?",
            metrics.display(),
            run_dir.display()
        )));
    }
    Ok(metrics)
}

/// A run's legend label: its folder name (the path when it has none).
fn run_label(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// Each point's y replaced by the mean of the finite y values among it and
/// the `window - 1` points before it (NaN when there are none).
pub fn trailing_mean(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let window = window.max(1);
    points
        .iter()
        .enumerate()
        .map(|(i, &(x, _))| {
            let from = (i + 1).saturating_sub(window);
            let vals: Vec<f64> = points[from..=i]
                .iter()
                .map(|p| p.1)
                .filter(|y| y.is_finite())
                .collect();
            let y = if vals.is_empty() {
                f64::NAN
            } else {
                vals.iter().sum::<f64>() / vals.len() as f64
            };
            (x, y)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::trailing_mean;

    #[test]
    fn trailing_mean_by_hand() {
        let pts = vec![(1.0, 1.0), (2.0, 3.0), (3.0, f64::NAN), (4.0, 5.0)];
        let m = trailing_mean(&pts, 2);
        assert_eq!(m[0], (1.0, 1.0));
        assert_eq!(m[1], (2.0, 2.0));
        assert_eq!(m[2], (3.0, 3.0)); // the NaN is skipped
        assert_eq!(m[3], (4.0, 5.0));
        assert_eq!(trailing_mean(&pts, 1)[1], (2.0, 3.0));
        assert!(trailing_mean(&[(1.0, f64::NAN)], 3)[0].1.is_nan());
    }
}
