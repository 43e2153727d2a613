//! `rlsd plot RUN_DIR`: redraw a run's charts from its `metrics.jsonl`.
//!
//! Writes `reward.svg` (reward, accuracy, lambda; the same chart the runtime
//! draws at the end of a run) and `panels.svg` (stacked panels: reward and
//! accuracy, lambda and the credit statistics, losses, and the per-stage
//! timings), each panel keeping only the keys the log actually has.

use crate::error::{Error, Result};
use crate::metrics::{lookup_number, read_metrics};
use crate::plot::{metrics_series, metrics_svg, panels_svg, ChartOptions};
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
    let metrics = run_dir.join("metrics.jsonl");
    if !metrics.is_file() {
        return Err(Error::InvalidInput(format!(
            "{} not found: is {} a run directory written by `rlsd train`?",
            metrics.display(),
            run_dir.display()
        )));
    }
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
