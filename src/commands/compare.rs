//! `rlsd compare`: the paper's comparison on one base model.
//!
//! Every algorithm (GRPO, RLSD, OPSD, SDPO, GRPO+OPSD, CEPO by default) runs
//! from the same base model with the same budget (steps, prompts, responses,
//! learning rate, held-out set) for each seed, on-policy: each run is the
//! plain sequential loop ([`run_sequential`]), the reference the actor
//! runtime matches at `max_staleness = 0`. Each algorithm keeps its own
//! lambda schedule (RLSD 0.5 over 50 steps, CEPO 1.0 over 100: the
//! `[algo]` `lambda0` / `lambda_decay_steps` of the base config are cleared).
//! A seed sets the run's sampling seed and its data order; all algorithms of
//! one seed see the same prompts in the same order.
//!
//! Held-out validation (`[validation]`) runs before step 1 and every
//! `val_every` steps. What is written to the output folder:
//!
//! - `<algo>-seed<S>/metrics.jsonl`: every step's [`StepStats`];
//! - `summary.json`: every run's validation curve, clip fractions, wall time;
//! - `accuracy.svg`: held-out accuracy against the step, the mean over seeds
//!   per algorithm, and below it the spread (max - min over seeds);
//! - `results.md`: the table (accuracy at fixed steps, steps to reach GRPO's
//!   final accuracy, final accuracy with its spread, clip fractions, wall
//!   time) and the hardware.
//!
//! "Accuracy" is the held-out pass@1 of sampling at the validation
//! temperature (the mean over `validation.samples` samples a prompt); greedy
//! pass@1 and pass@K are reported beside it.

pub use super::compare_table::{CompareOptions, RunSummary};
use crate::config::RunConfig;
use crate::data::TeacherPrompt;
use crate::error::{Error, Result};
use crate::metrics::MetricsWriter;
use crate::model::{parse_kind, LoadedModel};
use crate::plot::{panels, write_image, ChartOptions, ImageFormat, Series};
use crate::rlsd::Algo;
use crate::run::sequential::run_sequential;
use crate::stats::StepStats;
use crate::verify::build_verifier;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

/// The config of one run: `base` with the algorithm, seed and budget set.
pub fn run_config(base: &RunConfig, algo: Algo, seed: u64, opts: &CompareOptions) -> RunConfig {
    let mut cfg = base.clone();
    cfg.algo.algo = algo;
    cfg.algo.lambda0 = None;
    cfg.algo.lambda_decay_steps = None;
    cfg.runtime.seed = seed;
    cfg.runtime.steps = opts.steps;
    cfg.runtime.max_staleness = 0;
    cfg.data.seed = base.data.seed.wrapping_add(seed);
    cfg.validation.every = opts.val_every;
    cfg.runtime.out_dir = opts.out.join(run_name(algo, seed));
    cfg
}

/// The folder name of a run, e.g. `grpo+opsd-seed2`.
pub fn run_name(algo: Algo, seed: u64) -> String {
    format!("{}-seed{seed}", algo.name())
}

fn one_run(base: &RunConfig, algo: Algo, seed: u64, opts: &CompareOptions) -> Result<RunSummary> {
    let cfg = run_config(base, algo, seed, opts);
    cfg.validate()?;
    let started = Instant::now();
    let dir = cfg.model.resolve()?;
    let kind = parse_kind(&cfg.model.dtype)?;
    let policy = LoadedModel::load(&dir, tch::Device::Cpu, kind)?;
    let teacher = LoadedModel::load(&dir, tch::Device::Cpu, kind)?;
    let verifier = build_verifier(&cfg.verifier)?;
    let template = TeacherPrompt::for_data(&cfg.data)?;
    let mut source = crate::run::source::from_config(&cfg)?;
    let (_, stats) = run_sequential(&cfg, policy, teacher, &*verifier, &mut *source, &template)?;
    let wall_s = started.elapsed().as_secs_f64();
    std::fs::create_dir_all(&cfg.runtime.out_dir)
        .map_err(|e| Error::io(&cfg.runtime.out_dir, e))?;
    let mut writer = MetricsWriter::create(&cfg.runtime.out_dir.join("metrics.jsonl"))?;
    for s in &stats {
        writer.append(s)?;
    }
    writer.sync()?;
    Ok(summarise(algo, seed, &stats, wall_s))
}

/// The summary of a run's step stats.
pub fn summarise(algo: Algo, seed: u64, stats: &[StepStats], wall_s: f64) -> RunSummary {
    let mean = |f: &dyn Fn(&StepStats) -> f64| {
        let v: Vec<f64> = stats.iter().map(f).filter(|x| x.is_finite()).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let tail = &stats[stats.len() - stats.len().div_ceil(10).min(stats.len())..];
    let validation = stats
        .iter()
        .flat_map(|s| &s.validation)
        .map(|v| (v.after_step, v.pass1_sampled, v.pass1_greedy, v.pass_at_k))
        .collect();
    RunSummary {
        algo: algo.name().to_string(),
        seed,
        error: None,
        validation,
        final_train_reward: tail.iter().map(|s| s.reward_mean).sum::<f64>()
            / tail.len().max(1) as f64,
        weight_clip_low_frac: mean(&|s| s.weight_clip_low_frac),
        weight_clip_high_frac: mean(&|s| s.weight_clip_high_frac),
        ratio_clip_frac: mean(&|s| s.ratio_clip_frac),
        wall_s,
    }
}

/// Run every (algorithm, seed) pair, `opts.jobs` at a time, then write the
/// summary, the chart and the table. Returns the summaries in table order.
pub fn compare(base: &RunConfig, opts: &CompareOptions) -> Result<Vec<RunSummary>> {
    if opts.algos.is_empty() || opts.seeds.is_empty() || opts.steps == 0 {
        return Err(Error::InvalidInput(
            "compare needs at least one algorithm, one seed and one step".into(),
        ));
    }
    if opts.val_every == 0 {
        return Err(Error::InvalidInput(
            "compare needs --val-every > 0 (its curves are held-out accuracy)".into(),
        ));
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let started = Instant::now();
    let load_before = load_average();
    let queue: Mutex<VecDeque<(usize, Algo, u64)>> = Mutex::new(
        opts.algos
            .iter()
            .flat_map(|&a| opts.seeds.iter().map(move |&s| (a, s)))
            .enumerate()
            .map(|(i, (a, s))| (i, a, s))
            .collect(),
    );
    let n = opts.algos.len() * opts.seeds.len();
    let results: Mutex<Vec<Option<RunSummary>>> = Mutex::new(vec![None; n]);
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.clamp(1, n) {
            scope.spawn(|| {
                tch::set_num_threads(1);
                loop {
                    let next = queue.lock().map(|mut q| q.pop_front()).ok().flatten();
                    let Some((i, algo, seed)) = next else { break };
                    let name = run_name(algo, seed);
                    tracing::info!(run = %name, "compare: run started");
                    let summary = one_run(base, algo, seed, opts).unwrap_or_else(|e| {
                        tracing::error!(run = %name, error = %e, "compare: run failed");
                        RunSummary {
                            algo: algo.name().to_string(),
                            seed,
                            error: Some(e.to_string()),
                            validation: Vec::new(),
                            final_train_reward: f64::NAN,
                            weight_clip_low_frac: f64::NAN,
                            weight_clip_high_frac: f64::NAN,
                            ratio_clip_frac: f64::NAN,
                            wall_s: 0.0,
                        }
                    });
                    tracing::info!(run = %name, wall_s = summary.wall_s, "compare: run done");
                    if let Ok(mut r) = results.lock() {
                        r[i] = Some(summary);
                    }
                }
            });
        }
    });
    let runs: Vec<RunSummary> = results
        .into_inner()
        .map_err(|_| Error::InvalidInput("a compare worker panicked".into()))?
        .into_iter()
        .flatten()
        .collect();
    let wall_s = started.elapsed().as_secs_f64();
    let json = serde_json::json!({
        "algos": opts.algos.iter().map(|a| a.name()).collect::<Vec<_>>(),
        "seeds": opts.seeds,
        "steps": opts.steps,
        "val_every": opts.val_every,
        "jobs": opts.jobs,
        "wall_s": wall_s,
        "hardware": hardware(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "runs": runs,
    });
    let path = opts.out.join("summary.json");
    let text =
        serde_json::to_string_pretty(&json).map_err(|e| Error::InvalidInput(e.to_string()))?;
    std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))?;
    let curves = super::compare_table::curves(&runs, &opts.algos);
    write_image(&opts.out.join("accuracy.svg"), &chart(&curves)?)?;
    let md = super::compare_table::markdown(base, opts, &runs, &curves, wall_s, &hardware());
    let path = opts.out.join("results.md");
    std::fs::write(&path, md).map_err(|e| Error::io(&path, e))?;
    Ok(runs)
}

/// Held-out accuracy against the step: the mean over seeds per algorithm,
/// and a second panel with the spread (max - min over seeds).
fn chart(curves: &[super::compare_table::Curve]) -> Result<Vec<u8>> {
    let mean: Vec<Series> = curves
        .iter()
        .map(|c| Series {
            name: format!("{} (mean of {})", c.algo, c.seeds),
            points: c.points.iter().map(|p| (p.step as f64, p.mean)).collect(),
        })
        .collect();
    let spread: Vec<Series> = curves
        .iter()
        .map(|c| Series {
            name: c.algo.clone(),
            points: c
                .points
                .iter()
                .map(|p| (p.step as f64, p.max - p.min))
                .collect(),
        })
        .collect();
    panels(
        &[
            (
                ChartOptions {
                    title: "held-out pass@1 (sampled), mean over seeds".into(),
                    y_label: "accuracy".into(),
                    height: 480,
                    ..ChartOptions::default()
                },
                mean,
            ),
            (
                ChartOptions {
                    title: "spread over seeds (max - min)".into(),
                    y_label: "accuracy".into(),
                    height: 300,
                    ..ChartOptions::default()
                },
                spread,
            ),
        ],
        ImageFormat::Svg,
    )
}

/// The CPU model and count, and the libtorch version.
pub fn hardware() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cpus} logical CPUs available to the process")
}

/// `/proc/loadavg`'s first three numbers ("" where it cannot be read).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Parse `--algos` (comma-separated names as in `algo.algo`).
pub fn parse_algos(text: &str) -> Result<Vec<Algo>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            serde_json::from_value::<Algo>(serde_json::Value::String(s.to_string())).map_err(|_| {
                Error::InvalidInput(format!(
                    "--algos: unknown algorithm `{s}` (grpo, rlsd, opsd, sdpo, grpo+opsd, cepo)"
                ))
            })
        })
        .collect()
}

/// The output folder must not hold an earlier comparison unless `overwrite`.
pub fn check_out_dir(out: &Path, overwrite: bool) -> Result<()> {
    if out.join("summary.json").exists() && !overwrite {
        return Err(Error::InvalidInput(format!(
            "{} already holds a comparison (summary.json); pass --overwrite or another --out",
            out.display()
        )));
    }
    Ok(())
}

/// `rlsd compare` as the binary runs it: refuse an earlier comparison in
/// `opts.out` unless `overwrite`, run everything, print where the table is;
/// an error when any run failed (the others are still written).
pub fn compare_command(base: &RunConfig, opts: &CompareOptions, overwrite: bool) -> Result<()> {
    check_out_dir(&opts.out, overwrite)?;
    let runs = compare(base, opts)?;
    let failed = runs.iter().filter(|r| r.error.is_some()).count();
    println!(
        "{} runs ({failed} failed); wrote {}",
        runs.len(),
        opts.out.join("results.md").display()
    );
    if failed > 0 {
        return Err(Error::Runtime(format!(
            "{failed} of {} runs failed (see {})",
            runs.len(),
            opts.out.join("results.md").display()
        )));
    }
    Ok(())
}
