//! `rlsd plot`: charts from runs' metrics logs.
//!
//! Each input is a run folder (holding `metrics.jsonl`) or a metrics
//! `.jsonl` file itself. With one input, draw its reward chart (reward,
//! accuracy, and lambda where the algorithm has one) and a panel chart
//! (reward and accuracy, validation, credit, clip fractions, lengths, losses,
//! stage timings; each panel keeping only the keys the log has). With several
//! (or `--out`), draw one key of every run on one chart, smoothed by a
//! trailing mean, to compare runs (RLSD against GRPO, seeds).

use crate::error::{Error, Result};
use crate::metrics::{lookup_number, read_metrics};
use crate::plot::{line_chart, metrics_series, panels, write_image, ChartOptions, ImageFormat};
use std::path::{Path, PathBuf};

/// Algorithms whose credit uses `lambda` (for the others it is not drawn).
pub const LAMBDA_ALGOS: &[&str] = &["rlsd", "cepo"];

/// Keys of the reward chart (`lambda` only where it means something).
pub const REWARD_KEYS: &[&str] = &["reward_mean", "accuracy", "lambda"];

/// One panel of the panel chart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Panel {
    /// Title above the panel.
    pub title: &'static str,
    /// Label of its y axis.
    pub y_label: &'static str,
    /// The keys it may show (empty: the log's `val*` keys).
    pub keys: &'static [&'static str],
}

/// Panels of the panel chart, each keeping only the keys the log has. Keys
/// of very different sizes get separate panels: `weight_mean` (w_t, which
/// can reach thousands before the clip) is not drawn on lambda's axis, nor
/// the gradient norm on the loss's.
pub const PANELS: &[Panel] = &[
    Panel {
        title: "reward and accuracy",
        y_label: "reward, accuracy",
        keys: &["reward_mean", "accuracy"],
    },
    Panel {
        title: "episodes: tool-call rate, turns",
        y_label: "rate, turns",
        keys: &[
            "episodes.tool_call_rate",
            "episodes.tool_calls_mean",
            "episodes.turns_mean",
        ],
    },
    Panel {
        title: "validation",
        y_label: "score",
        keys: &[],
    },
    Panel {
        title: "credit",
        y_label: "lambda, |delta|, |Ahat|",
        keys: &["lambda", "delta_abs_mean", "ahat_abs_mean"],
    },
    Panel {
        title: "token weight w_t, mean (before the clip)",
        y_label: "w_t",
        keys: &["weight_mean"],
    },
    Panel {
        title: "clip fractions",
        y_label: "fraction",
        keys: &["weight_clip_frac", "ratio_clip_frac", "dual_clip_frac"],
    },
    Panel {
        title: "response length (tokens)",
        y_label: "tokens",
        keys: &["response_len_mean", "response_len_max"],
    },
    Panel {
        title: "loss",
        y_label: "loss",
        keys: &["loss", "pg_loss", "kl"],
    },
    Panel {
        title: "gradient norm",
        y_label: "norm",
        keys: &["grad_norm"],
    },
    Panel {
        title: "stage seconds per step",
        y_label: "seconds",
        keys: &[
            "timings.generate_s",
            "timings.verify_s",
            "timings.teacher_s",
            "timings.credit_s",
            "timings.train_s",
            "timings.idle_s",
        ],
    },
];

/// Where a metrics log is and where its charts go.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSource {
    /// The `.jsonl` file.
    pub metrics: PathBuf,
    /// Legend label: the run folder's name, or the file's stem.
    pub label: String,
    /// Folder the charts are written to.
    pub out_dir: PathBuf,
    /// Prefix of the chart file names (empty for a run folder).
    pub prefix: String,
}

/// Resolve a run folder or metrics file, with errors naming the path.
pub fn resolve(path: &Path) -> Result<MetricsSource> {
    if !path.exists() {
        return Err(Error::InvalidInput(format!(
            "{} does not exist (expected a run folder or a metrics .jsonl file)",
            path.display()
        )));
    }
    if path.is_dir() {
        let metrics = path.join("metrics.jsonl");
        if !metrics.is_file() {
            let mut others: Vec<String> = std::fs::read_dir(path)
                .map_err(|e| Error::io(path, e))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".jsonl"))
                .collect();
            others.sort();
            let hint = if others.is_empty() {
                "is it a run folder written by `rlsd train`?".to_string()
            } else {
                format!(
                    "it holds {}: pass a metrics file itself",
                    others
                        .iter()
                        .map(|n| path.join(n).display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(Error::InvalidInput(format!(
                "{} has no metrics.jsonl; {hint}",
                path.display()
            )));
        }
        return Ok(MetricsSource {
            metrics,
            label: dir_label(path),
            out_dir: path.to_path_buf(),
            prefix: String::new(),
        });
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let (label, prefix) = if stem == "metrics" {
        (dir_label(&parent), String::new())
    } else {
        (stem.clone(), format!("{stem}-"))
    };
    Ok(MetricsSource {
        metrics: path.to_path_buf(),
        label,
        out_dir: parent,
        prefix,
    })
}

/// A folder's legend label: its name (the absolute path's last part for `.`).
fn dir_label(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| {
            let abs = dir.canonicalize().ok()?;
            Some(abs.file_name()?.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| dir.display().to_string())
}

/// Whether `lambda` belongs on the charts of these records: some record's
/// `algo` uses it, or no record names an algorithm.
pub fn lambda_applies(records: &[serde_json::Value]) -> bool {
    let mut named = false;
    for r in records {
        if let Some(a) = r.get("algo").and_then(|a| a.as_str()) {
            named = true;
            if LAMBDA_ALGOS.contains(&a) {
                return true;
            }
        }
    }
    !named
}

/// Dotted paths of the numeric fields whose top-level key starts with
/// `val` (validation results, whatever their names), in first-seen order.
pub fn validation_keys(records: &[serde_json::Value]) -> Vec<String> {
    fn walk(v: &serde_json::Value, path: String, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    walk(x, format!("{path}.{k}"), out);
                }
            }
            serde_json::Value::Number(_) if !out.contains(&path) => out.push(path),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for r in records {
        if let Some(m) = r.as_object() {
            for (k, v) in m.iter().filter(|(k, _)| k.starts_with("val")) {
                match v {
                    serde_json::Value::Object(_) => walk(v, k.clone(), &mut out),
                    serde_json::Value::Number(_) if !out.contains(k) => out.push(k.clone()),
                    _ => {}
                }
            }
        }
    }
    out
}

/// The panels of one log's panel chart: each with the keys the log has.
pub fn run_panels(records: &[serde_json::Value]) -> Vec<(ChartOptions, Vec<crate::plot::Series>)> {
    let lambda = lambda_applies(records);
    let val = validation_keys(records);
    let mut out = Vec::new();
    for panel in PANELS {
        let keys: Vec<&str> = if panel.keys.is_empty() {
            val.iter().map(String::as_str).collect()
        } else {
            panel.keys.to_vec()
        };
        let present: Vec<&str> = keys
            .into_iter()
            .filter(|k| lambda || *k != "lambda")
            .filter(|k| records.iter().any(|r| lookup_number(r, k).is_some()))
            .collect();
        if present.is_empty() {
            continue;
        }
        let opts = ChartOptions {
            title: panel.title.to_string(),
            y_label: panel.y_label.to_string(),
            height: 300,
            ..ChartOptions::default()
        };
        out.push((opts, metrics_series(records, &present)));
    }
    out
}

/// Title and y label of a run's reward chart.
pub fn reward_options(label: &str, records: &[serde_json::Value]) -> ChartOptions {
    let y_label = if lambda_applies(records) {
        "reward, accuracy, lambda"
    } else {
        "reward, accuracy"
    };
    ChartOptions {
        title: format!("{label}: reward by step"),
        y_label: y_label.to_string(),
        ..ChartOptions::default()
    }
}

/// The reward chart's series: reward, accuracy, and lambda where it applies.
pub fn reward_series(records: &[serde_json::Value]) -> Vec<crate::plot::Series> {
    let lambda = lambda_applies(records);
    let keys: Vec<&str> = REWARD_KEYS
        .iter()
        .copied()
        .filter(|k| lambda || *k != "lambda")
        .filter(|k| records.iter().any(|r| lookup_number(r, k).is_some()))
        .collect();
    metrics_series(records, &keys)
}

/// Draw the reward chart and the panel chart of a run folder or metrics
/// file in `format`; returns the files written (`reward.svg`, `panels.svg`
/// in a run folder; `<stem>-reward.svg`, ... next to a file).
pub fn plot_run(path: &Path, format: ImageFormat) -> Result<Vec<PathBuf>> {
    let src = resolve(path)?;
    let records = read_metrics(&src.metrics)?;
    if records.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{} has no records to draw",
            src.metrics.display()
        )));
    }
    let ext = format.extension();
    let reward = src.out_dir.join(format!("{}reward.{ext}", src.prefix));
    let opts = reward_options(&src.label, &records);
    write_image(
        &reward,
        &line_chart(&reward_series(&records), &opts, format)?,
    )?;
    let panels_path = src.out_dir.join(format!("{}panels.{ext}", src.prefix));
    write_image(&panels_path, &panels(&run_panels(&records), format)?)?;
    Ok(vec![reward, panels_path])
}

/// Draw `key` of every run (folder or metrics file) on one chart written to
/// `out` (SVG or PNG by its extension): one line per run, named after its
/// folder or file, each point the mean of the last `smooth` values (1 = raw).
/// A run without `key` anywhere in its log is an error naming it.
pub fn compare_runs(paths: &[PathBuf], key: &str, smooth: usize, out: &Path) -> Result<()> {
    if paths.is_empty() {
        return Err(Error::InvalidInput(
            "plot needs at least one run folder or metrics file".into(),
        ));
    }
    let format = ImageFormat::from_path(out)?;
    let smooth = smooth.max(1);
    let mut series = Vec::with_capacity(paths.len());
    for p in paths {
        let src = resolve(p)?;
        let records = read_metrics(&src.metrics)?;
        let mut s = metrics_series(&records, &[key]).remove(0);
        if !s.points.iter().any(|p| p.1.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "{}: no record has a numeric `{key}`",
                src.metrics.display()
            )));
        }
        s.name = src.label;
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
    write_image(out, &line_chart(&series, &opts, format)?)
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
    use super::*;
    use serde_json::json;

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

    #[test]
    fn lambda_only_for_algorithms_that_use_it() {
        let grpo = vec![json!({"step": 1, "algo": "grpo", "lambda": 0.5, "reward_mean": 0.1})];
        let rlsd = vec![json!({"step": 1, "algo": "rlsd", "lambda": 0.5, "reward_mean": 0.1})];
        let names = |s: Vec<crate::plot::Series>| s.into_iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(names(reward_series(&grpo)), vec!["reward_mean"]);
        assert_eq!(names(reward_series(&rlsd)), vec!["reward_mean", "lambda"]);
        assert!(lambda_applies(&[json!({"lambda": 0.5})]));
    }

    #[test]
    fn validation_keys_are_found_by_prefix() {
        let recs = vec![
            json!({"step": 1, "reward_mean": 0.1}),
            json!({"step": 2, "val_accuracy": 0.5, "validation": {"pass_at_k": {"4": 0.7}, "n": 10}}),
        ];
        assert_eq!(
            validation_keys(&recs),
            vec!["val_accuracy", "validation.n", "validation.pass_at_k.4"]
        );
        let p = run_panels(&recs);
        let val = p.iter().find(|(o, _)| o.title == "validation").unwrap();
        assert_eq!(val.1.len(), 3);
    }
}
