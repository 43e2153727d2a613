//! Runtime benchmark: step times of `rlsd` training on a tiny random Qwen2
//! (8 prompts x 8 responses x 48 new tokens, one optimizer step per batch).
//!
//! Cases, each `--warmup` untimed steps then `--steps` timed ones:
//! - `grpo-seq`, `rlsd-seq`: the plain loop [`rlsd::actors::sequential::run_sequential`];
//! - `grpo-rt0`, `rlsd-rt0`: the actor runtime with `max_staleness = 0`;
//! - `grpo-rt1`, `rlsd-rt1`: the actor runtime with `max_staleness = 1`;
//! - `rlsd-rt0-short` (any case with `-short`): the teacher template is just
//!   the question and the answer instead of the project's default wording.
//!
//! A step's time is the interval between consecutive step boundaries (the
//! loop's prompt draws; the runtime's step callbacks), in wall time and in
//! process CPU time. The model folder, its `prompts.jsonl` and the TRL and
//! matmul figures come from `scripts/bench_trl.py`; `scripts/bench_runtime.sh`
//! runs everything and this binary merges it into one JSON file (`--out`).
//! See docs/benchmarks/runtime.md.

use anyhow::{Context, Result};
use clap::Parser;
use parking_lot::Mutex;
use rlsd::actors::sequential::run_sequential;
use rlsd::actors::{PromptSource, Runtime};
use rlsd::config::RunConfig;
use rlsd::data::{Example, TeacherPrompt};
use rlsd::model::{parse_kind, LoadedModel};
use rlsd::stats::StageTimings;
use rlsd::verify::build_verifier;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Teacher template of the `-short` cases: the question, then the privileged
/// answer, so the teacher's context is about as long as the student's.
const SHORT_TEMPLATE: &str = "{question}{answer} ";

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Step times of rlsd's runtime, its sequential loop, GRPO and RLSD")]
struct Args {
    /// Model folder written by `scripts/bench_trl.py make-model` (with prompts.jsonl).
    #[arg(long)]
    model: PathBuf,
    /// Timed steps per case.
    #[arg(long, default_value_t = 5)]
    steps: u64,
    /// Untimed steps at the start of each case.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Times every case is run (cases alternate within a round).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Comma-separated cases to run.
    #[arg(
        long,
        default_value = "grpo-seq,grpo-rt0,grpo-rt1,rlsd-seq,rlsd-rt0,rlsd-rt1,rlsd-rt0-short"
    )]
    cases: String,
    /// Intra-op threads (0 = libtorch's default, one per core).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    /// JSON line printed by `bench_trl.py trl`, merged into the output; give
    /// it more than once to pool several TRL runs (e.g. one before and one
    /// after the rlsd cases).
    #[arg(long)]
    trl_json: Vec<PathBuf>,
    /// Take the rlsd cases from this earlier output instead of running them
    /// (to merge TRL runs made after the cases).
    #[arg(long)]
    cases_json: Option<PathBuf>,
    /// JSON line printed by `bench_trl.py matmul`, merged into the output.
    #[arg(long)]
    matmul_json: Option<PathBuf>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench_runtime.json")]
    out: PathBuf,
}

/// Process CPU time (user + system) in seconds.
fn cpu_seconds() -> f64 {
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
struct Mark {
    wall: Instant,
    cpu: f64,
}

impl Mark {
    fn now() -> Self {
        Mark {
            wall: Instant::now(),
            cpu: cpu_seconds(),
        }
    }
}

/// The benchmark's prompts, cycled in file order; records a mark at every draw.
#[derive(Debug)]
struct BenchPrompts {
    examples: Vec<Example>,
    pos: usize,
    marks: Arc<Mutex<Vec<Mark>>>,
}

impl BenchPrompts {
    fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut examples = vec![];
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}", path.display(), i + 1))?;
            let field = |k: &str| -> Result<String> {
                v[k].as_str()
                    .map(str::to_string)
                    .with_context(|| format!("{}:{}: no string `{k}`", path.display(), i + 1))
            };
            let answer = field("answer")?;
            examples.push(Example {
                id: field("id")?,
                prompt: field("prompt")?,
                privileged: answer.clone(),
                answer,
            });
        }
        anyhow::ensure!(!examples.is_empty(), "{} has no prompts", path.display());
        Ok(BenchPrompts {
            examples,
            pos: 0,
            marks: Arc::default(),
        })
    }
}

impl PromptSource for BenchPrompts {
    fn next_batch(&mut self, n: usize) -> rlsd::Result<Vec<Example>> {
        self.marks.lock().push(Mark::now());
        let out = (0..n)
            .map(|i| self.examples[(self.pos + i) % self.examples.len()].clone())
            .collect();
        self.pos += n;
        Ok(out)
    }

    fn cursor(&self) -> Value {
        json!(self.pos)
    }

    fn restore(&mut self, cursor: &Value) -> rlsd::Result<()> {
        self.pos = cursor.as_u64().unwrap_or(0) as usize;
        Ok(())
    }
}

/// The run configuration of one case.
fn case_config(
    model: &Path,
    algo: &str,
    staleness: u64,
    steps: u64,
    out: &Path,
) -> Result<RunConfig> {
    let text = format!(
        r#"
[model]
path = {model:?}
dtype = "f32"

[algo]
algo = "{algo}"

[optim]
lr = 3e-4
weight_decay = 0.01
max_grad_norm = 1.0

[rollout]
batch_prompts = 8
group_size = 8
max_new_tokens = 48
temperature = 1.0

[verifier]
kind = "regex"
[verifier.regex]
pattern = "{{answer}}"

[runtime]
steps = {steps}
seed = 0
max_staleness = {staleness}
sampler_device = "cpu"
teacher_device = "cpu"
optimizer_device = "cpu"
out_dir = {out:?}

[checkpoint]
every_steps = 0
"#,
        model = model.display().to_string(),
        out = out.display().to_string(),
    );
    Ok(RunConfig::from_toml_str(&text)?)
}

fn median(xs: &[f64]) -> f64 {
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
fn intervals(starts: &[Mark], end: Mark) -> Vec<(f64, f64)> {
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
fn mean_timings(ts: &[StageTimings]) -> Value {
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
struct CaseRun {
    steps: Vec<(f64, f64)>,
    timings: Vec<StageTimings>,
    wall_total: f64,
}

/// The JSON summary of a case over all its rounds (warm-up steps left out).
fn summarize(name: &str, runs: &[CaseRun], warmup: usize) -> Result<Value> {
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

/// Run one case once.
fn run_case(args: &Args, name: &str, scratch: &Path) -> Result<CaseRun> {
    let (algo, mode) = name
        .split_once('-')
        .with_context(|| format!("case {name:?} is not ALGO-MODE"))?;
    let (mode, short) = match mode.strip_suffix("-short") {
        Some(m) => (m, true),
        None => (mode, false),
    };
    let staleness = match mode {
        "seq" | "rt0" => 0,
        "rt1" => 1,
        other => anyhow::bail!("unknown mode {other:?} in case {name:?} (seq, rt0, rt1)"),
    };
    let total = args.warmup + args.steps;
    let out_dir = scratch.join(name);
    let mut cfg = case_config(&args.model, algo, staleness, total, &out_dir)?;
    if short {
        cfg.data.teacher_template = SHORT_TEMPLATE.into();
    }
    let source = BenchPrompts::load(&args.model.join("prompts.jsonl"))?;
    let draws = source.marks.clone();
    let t0 = Instant::now();
    let (steps, timings): (Vec<(f64, f64)>, Vec<StageTimings>) = if mode == "seq" {
        let kind = parse_kind(&cfg.model.dtype)?;
        let policy = LoadedModel::load(&args.model, tch::Device::Cpu, kind)?;
        let teacher = LoadedModel::load(&args.model, tch::Device::Cpu, kind)?;
        let verifier = build_verifier(&cfg.verifier)?;
        let template = TeacherPrompt::new(cfg.data.teacher_template.clone())?;
        let mut source = source;
        let (_, stats) = run_sequential(&cfg, policy, teacher, &*verifier, &mut source, &template)?;
        let end = Mark::now();
        let starts = draws.lock().clone();
        (
            intervals(&starts, end),
            stats.into_iter().map(|s| s.timings).collect(),
        )
    } else {
        let marks: Arc<Mutex<Vec<(Mark, StageTimings)>>> = Arc::default();
        let m2 = marks.clone();
        let start = Mark::now();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let report = rt.block_on(
            Runtime::builder(cfg)
                .prompts(source)
                .on_step(move |s| m2.lock().push((Mark::now(), s.timings.clone())))
                .run(),
        )?;
        anyhow::ensure!(!report.failed, "case {name}: run failed: {}", report.reason);
        let marks = marks.lock().clone();
        let ends: Vec<Mark> = marks.iter().map(|(m, _)| *m).collect();
        let mut starts = vec![start];
        starts.extend_from_slice(&ends[..ends.len().saturating_sub(1)]);
        let end = *ends.last().context("no step finished")?;
        (
            intervals(&starts, end),
            marks.into_iter().map(|(_, t)| t).collect(),
        )
    };
    let wall_total = t0.elapsed().as_secs_f64();
    anyhow::ensure!(
        steps.len() as u64 == total,
        "case {name}: {} step times for {total} steps",
        steps.len()
    );
    let run = CaseRun {
        steps,
        timings,
        wall_total,
    };
    eprintln!(
        "[bench_runtime] {name}: {} steps in {:.1} s",
        run.steps.len(),
        run.wall_total
    );
    Ok(run)
}

/// FLOPs of one step from the parameter count and token counts: 6ND for the
/// training forward+backward, 2ND for generation, 2ND for RLSD's teacher pass.
/// N counts the parameters of every matmul (linear weights and the tied
/// embedding used as the output head); attention scores are left out.
fn flop_model(model_dir: &Path) -> Result<Value> {
    let m = LoadedModel::load(model_dir, tch::Device::Cpu, tch::Kind::Float)?;
    let n: i64 =
        m.vs.variables()
            .values()
            .filter(|t| t.dim() == 2)
            .map(|t| t.numel() as i64)
            .sum();
    let tok = m.tokenizer.as_ref().context("the model has no tokenizer")?;
    let prompts = BenchPrompts::load(&model_dir.join("prompts.jsonl"))?;
    let ex = &prompts.examples[0];
    let p = rlsd::data::prompt::student_prompt_ids(tok, ex)?.len() as f64;
    let teacher_len = |t: &str| -> Result<f64> {
        let tmpl = TeacherPrompt::new(t)?;
        Ok(tmpl.ids(tok, ex)?.len() as f64)
    };
    let pt = teacher_len(rlsd::data::DEFAULT_TEACHER_TEMPLATE)?;
    let pt_short = teacher_len(SHORT_TEMPLATE)?;
    let (seqs, new) = (64.0, 48.0);
    let n = n as f64;
    let train = 6.0 * n * seqs * (p + new);
    // Generation forwards the prompt once, then each sampled token but the last.
    let gen = 2.0 * n * seqs * (p + new - 1.0);
    let teacher = 2.0 * n * seqs * (pt + new);
    let teacher_short = 2.0 * n * seqs * (pt_short + new);
    Ok(json!({
        "matmul_params": n,
        "prompt_tokens": p,
        "teacher_prompt_tokens": pt,
        "new_tokens": new,
        "sequences": seqs,
        "train_flops": train,
        "generate_flops": gen,
        "teacher_flops": teacher,
        "teacher_prompt_tokens_short": pt_short,
        "teacher_flops_short": teacher_short,
        "rlsd_short_step_flops": train + gen + teacher_short,
        "grpo_step_flops": train + gen,
        "rlsd_step_flops": train + gen + teacher,
    }))
}

fn read_json_line(path: &Path) -> Result<Value> {
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
fn merge_trl(paths: &[PathBuf]) -> Result<Value> {
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

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn main() -> Result<()> {
    rlsd::malloc::use_one_arena();
    let args = Args::parse();
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    let scratch = std::env::temp_dir().join(format!("rlsd-bench-runtime-{}", std::process::id()));
    let names: Vec<&str> = args
        .cases
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    // Rounds alternate the cases, so a change in the machine's load during
    // the run reaches every case alike.
    let cases = match &args.cases_json {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let v: Value = serde_json::from_str(&text)?;
            v.get("cases")
                .cloned()
                .with_context(|| format!("{} has no `cases`", p.display()))?
        }
        None => {
            let mut runs: Vec<Vec<CaseRun>> = names.iter().map(|_| Vec::new()).collect();
            for _ in 0..args.rounds.max(1) {
                for (i, name) in names.iter().enumerate() {
                    runs[i].push(run_case(&args, name, &scratch)?);
                }
            }
            let mut cases = serde_json::Map::new();
            for (name, r) in names.iter().zip(&runs) {
                cases.insert(name.to_string(), summarize(name, r, args.warmup as usize)?);
            }
            let _ = std::fs::remove_dir_all(&scratch);
            Value::Object(cases)
        }
    };
    let flops = flop_model(&args.model)?;
    let mut result = json!({
        "workload": "8 prompts x 8 responses x 48 new tokens (no early stop), one optimizer step per batch, f32, CPU",
        "threads": tch::get_num_threads(),
        "steps": args.steps,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "flops": flops,
        "cases": cases.clone(),
    });

    let step = |case: &str, what: &str| f(&cases[case][what]);
    let mut ratios = serde_json::Map::new();
    let mut ratio = |key: &str, num: f64, den: f64| {
        if num.is_finite() && den.is_finite() && den > 0.0 {
            ratios.insert(key.to_string(), json!(num / den));
        }
    };
    for clock in ["wall", "cpu"] {
        let k = format!("median_step_{clock}_s");
        for st in ["rt0", "rt1"] {
            ratio(
                &format!("runtime_{st}_over_sequential_grpo_{clock}"),
                step(&format!("grpo-{st}"), &k),
                step("grpo-seq", &k),
            );
            ratio(
                &format!("runtime_{st}_over_sequential_rlsd_{clock}"),
                step(&format!("rlsd-{st}"), &k),
                step("rlsd-seq", &k),
            );
        }
        for m in ["seq", "rt0", "rt1"] {
            ratio(
                &format!("rlsd_over_grpo_{m}_{clock}"),
                step(&format!("rlsd-{m}"), &k),
                step(&format!("grpo-{m}"), &k),
            );
            ratio(
                &format!("rlsd_short_over_grpo_{m}_{clock}"),
                step(&format!("rlsd-{m}-short"), &k),
                step(&format!("grpo-{m}"), &k),
            );
        }
    }

    if !args.trl_json.is_empty() {
        let trl = merge_trl(&args.trl_json)?;
        for clock in ["wall", "cpu"] {
            for m in ["seq", "rt0", "rt1"] {
                ratio(
                    &format!("trl_over_rlsd_grpo_{m}_{clock}"),
                    f(&trl[format!("median_step_{clock}_s")]),
                    step(&format!("grpo-{m}"), &format!("median_step_{clock}_s")),
                );
            }
        }
        result["trl"] = trl;
    }
    if let Some(p) = &args.matmul_json {
        let mm = read_json_line(p)?;
        // Floors at the best measured rate (CPU-time based, so other
        // processes on the machine do not slow the rate down).
        let rate = [
            "square_2048_cpu_gflops",
            "mlp_shape_cpu_gflops",
            "attn_shape_cpu_gflops",
        ]
        .iter()
        .map(|k| f(&mm[*k]))
        .filter(|x| x.is_finite())
        .fold(f64::NAN, f64::max)
            * 1e9;
        let mut floors = serde_json::Map::new();
        let grpo_floor = f(&result["flops"]["grpo_step_flops"]) / rate;
        let rlsd_floor = f(&result["flops"]["rlsd_step_flops"]) / rate;
        floors.insert("rate_gflops".into(), json!(rate / 1e9));
        floors.insert("grpo_step_floor_s".into(), json!(grpo_floor));
        floors.insert("rlsd_step_floor_s".into(), json!(rlsd_floor));
        let short_floor = f(&result["flops"]["rlsd_short_step_flops"]) / rate;
        floors.insert("rlsd_short_step_floor_s".into(), json!(short_floor));
        let names: Vec<String> = cases
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for c in names {
            let floor = if c.starts_with("rlsd") && c.ends_with("-short") {
                short_floor
            } else if c.starts_with("rlsd") {
                rlsd_floor
            } else {
                grpo_floor
            };
            for clock in ["wall", "cpu"] {
                let t = step(&c, &format!("median_step_{clock}_s"));
                floors.insert(format!("{c}_floor_fraction_{clock}"), json!(floor / t));
            }
        }
        if let Some(trl) = result.get("trl").cloned() {
            for clock in ["wall", "cpu"] {
                let t = f(&trl[format!("median_step_{clock}_s")]);
                floors.insert(format!("trl_floor_fraction_{clock}"), json!(grpo_floor / t));
            }
        }
        result["matmul"] = mm;
        result["floor"] = Value::Object(floors);
    }
    result["ratios"] = Value::Object(ratios);

    if let Some(r) = result["ratios"].as_object() {
        println!("ratios (wall / cpu):");
        let mut keys: Vec<&String> = r.keys().filter(|k| k.ends_with("_wall")).collect();
        keys.sort();
        for k in keys {
            let base = k.trim_end_matches("_wall");
            println!(
                "  {base:<42} {:6.3} / {:6.3}",
                f(&r[k.as_str()]),
                f(&r[&format!("{base}_cpu")])
            );
        }
    }
    if let Some(fl) = result.get("floor") {
        println!(
            "FLOP floor at {:.1} GFLOP/s: grpo step {:.3} s, rlsd step {:.3} s",
            f(&fl["rate_gflops"]),
            f(&fl["grpo_step_floor_s"]),
            f(&fl["rlsd_step_floor_s"])
        );
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&result)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}
