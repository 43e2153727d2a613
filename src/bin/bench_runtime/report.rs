//! Measuring and summarising `bench_runtime`'s cases: step boundaries in
//! wall and CPU time, medians, stage means, and the TRL runs it merges.

use anyhow::{Context, Result};
use rlsd::stats::StageTimings;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::SHORT_TEMPLATE;

/// Process CPU time (user + system) in seconds.
pub fn cpu_seconds() -> f64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a plain struct we own; RUSAGE_SELF is always valid.
    let u = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr());
        u.assume_init()
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// A step boundary: wall clock and process CPU time.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    pub wall: Instant,
    pub cpu: f64,
}

impl Mark {
    pub fn now() -> Self {
        Mark {
            wall: Instant::now(),
            cpu: cpu_seconds(),
        }
    }
}

/// Median (NaN for an empty slice).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// Per-step (wall, cpu) seconds from step boundaries: `starts[i]` opens step
/// `i`, and `end` closes the last one.
pub fn intervals(starts: &[Mark], end: Mark) -> Vec<(f64, f64)> {
    let mut b = starts.to_vec();
    b.push(end);
    b.windows(2)
        .map(|w| {
            (
                w[1].wall.duration_since(w[0].wall).as_secs_f64(),
                w[1].cpu - w[0].cpu,
            )
        })
        .collect()
}

/// Mean of each stage timing over the timed steps.
pub fn mean_timings(ts: &[StageTimings]) -> Value {
    let n = ts.len().max(1) as f64;
    let f = |g: fn(&StageTimings) -> f64| ts.iter().map(g).sum::<f64>() / n;
    json!({
        "generate_s": f(|t| t.generate_s),
        "verify_s": f(|t| t.verify_s),
        "teacher_s": f(|t| t.teacher_s),
        "credit_s": f(|t| t.credit_s),
        "train_s": f(|t| t.train_s),
        "idle_s": f(|t| t.idle_s),
    })
}

/// One run of one case: every step's (wall, cpu) seconds, warm-up included,
/// the stage timings the steps reported, and the whole run's wall time.
#[derive(Debug, Default)]
pub struct CaseRun {
    pub steps: Vec<(f64, f64)>,
    pub timings: Vec<StageTimings>,
    pub wall_total: f64,
}

/// The JSON summary of a case over all its rounds (warm-up steps left out).
pub fn summarize(name: &str, runs: &[CaseRun], warmup: usize) -> Result<Value> {
    let (algo, mode) = name
        .split_once('-')
        .with_context(|| format!("case {name:?} is not ALGO-MODE"))?;
    let short = mode.ends_with("-short");
    let mode = mode.trim_end_matches("-short");
    let timed: Vec<(f64, f64)> = runs
        .iter()
        .flat_map(|r| r.steps[warmup.min(r.steps.len())..].iter().copied())
        .collect();
    let timings: Vec<StageTimings> = runs
        .iter()
        .flat_map(|r| r.timings[warmup.min(r.timings.len())..].iter().cloned())
        .collect();
    let wall: Vec<f64> = timed.iter().map(|s| s.0).collect();
    let cpu: Vec<f64> = timed.iter().map(|s| s.1).collect();
    println!(
        "{name:>9}: step {:.3} s wall, {:.3} s cpu (median of {})",
        median(&wall),
        median(&cpu),
        wall.len()
    );
    Ok(json!({
        "algo": algo,
        "mode": if mode == "seq" { "sequential" } else { "runtime" },
        "max_staleness": if mode == "rt1" { 1 } else { 0 },
        "teacher_template": if short { SHORT_TEMPLATE } else { rlsd::data::DEFAULT_TEACHER_TEMPLATE },
        "rounds_step_wall_s": runs.iter().map(|r| r.steps.iter().map(|s| s.0).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "rounds_step_cpu_s": runs.iter().map(|r| r.steps.iter().map(|s| s.1).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "median_step_wall_s": median(&wall),
        "median_step_cpu_s": median(&cpu),
        "mean_stage_s": mean_timings(&timings),
        "rounds_wall_s": runs.iter().map(|r| r.wall_total).collect::<Vec<_>>(),
    }))
}

/// The last JSON object line of a file (the scripts print one per run).
pub fn read_json_line(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{} holds no JSON line", path.display()))?;
    Ok(serde_json::from_str(line)?)
}

/// Pool TRL runs: the first run's fields, every run under `runs`, and the
/// medians over the timed steps of all of them.
pub fn merge_trl(paths: &[PathBuf]) -> Result<Value> {
    let runs = paths
        .iter()
        .map(|p| read_json_line(p))
        .collect::<Result<Vec<_>>>()?;
    let mut out = runs[0].clone();
    for clock in ["wall", "cpu"] {
        let timed: Vec<f64> = runs
            .iter()
            .flat_map(|r| {
                let warmup = r["warmup"].as_u64().unwrap_or(0) as usize;
                let steps = r[format!("step_{clock}_s")]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                steps
                    .into_iter()
                    .skip(warmup)
                    .filter_map(|v| v.as_f64())
                    .collect::<Vec<_>>()
            })
            .collect();
        out[format!("median_step_{clock}_s")] = json!(median(&timed));
        out[format!("timed_steps_{clock}")] = json!(timed.len());
    }
    out["runs"] = Value::Array(runs);
    Ok(out)
}

/// A JSON number as f64 (NaN when missing).
pub fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}
