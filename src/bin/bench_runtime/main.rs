//! Runtime benchmark: step times of `rlsd` training on a tiny random Qwen2
//! (8 prompts x 8 responses x 48 new tokens, one optimizer step per batch).
//!
//! Cases, each `--warmup` untimed steps then `--steps` timed ones:
//! - `grpo-seq`, `rlsd-seq`: the plain loop [`rlsd::run::sequential::run_sequential`];
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
use rlsd::actors::{PromptSource, Runtime};
use rlsd::config::RunConfig;
use rlsd::data::{Example, TeacherPrompt};
use rlsd::model::{parse_kind, LoadedModel};
use rlsd::run::sequential::run_sequential;
use rlsd::stats::StageTimings;
use rlsd::verify::build_verifier;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

mod report;

use report::{f, intervals, merge_trl, read_json_line, summarize, CaseRun, Mark};

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
                context: Vec::new(),
                extra: Default::default(),
                images: Vec::new(),
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
                // Each case starts fresh in its scratch folder.
                .overwrite(true)
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
/// D counts the positions a step must forward: each group's prompt once (8
/// groups of 8) in training, generation and the teacher pass; in training and
/// generation each response without its last token (it predicts nothing),
/// in the teacher pass with it. The `*_rows` figures are the model used
/// until 2026-11-30, when training ran every row's prompt and response:
/// `6 N B (P + L)` (kept so that old and new floor fractions can be compared).
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
    let (groups, seqs, new) = (8.0, 64.0, 48.0);
    let n = n as f64;
    // Training runs each group's prompt once (`optim.share_prompt`, on by
    // default) and each response but its last token.
    let train = 6.0 * n * (groups * p + seqs * (new - 1.0));
    let train_rows = 6.0 * n * seqs * (p + new);
    // Generation forwards each group's prompt once, then each sampled token but the last.
    let gen = 2.0 * n * (groups * p + seqs * (new - 1.0));
    let teacher = 2.0 * n * (groups * pt + seqs * new);
    let teacher_short = 2.0 * n * (groups * pt_short + seqs * new);
    Ok(json!({
        "matmul_params": n,
        "prompt_tokens": p,
        "teacher_prompt_tokens": pt,
        "new_tokens": new,
        "sequences": seqs,
        "train_flops": train,
        "train_flops_rows": train_rows,
        "grpo_step_flops_rows": train_rows + gen,
        "rlsd_step_flops_rows": train_rows + gen + teacher,
        "rlsd_short_step_flops_rows": train_rows + gen + teacher_short,
        "generate_flops": gen,
        "teacher_flops": teacher,
        "teacher_prompt_tokens_short": pt_short,
        "teacher_flops_short": teacher_short,
        "rlsd_short_step_flops": train + gen + teacher_short,
        "grpo_step_flops": train + gen,
        "rlsd_step_flops": train + gen + teacher,
    }))
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
        floors.insert("rate_gflops".into(), json!(rate / 1e9));
        let names: Vec<String> = cases
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        // The current model, then the one used until 2026-11-30 (`_rows`).
        for model in ["", "_rows"] {
            let mut floor_of = |what: &str| {
                let s = f(&result["flops"][format!("{what}_step_flops{model}")]) / rate;
                floors.insert(format!("{what}_step_floor{model}_s"), json!(s));
                s
            };
            let grpo_floor = floor_of("grpo");
            let rlsd_floor = floor_of("rlsd");
            let short_floor = floor_of("rlsd_short");
            for c in &names {
                let floor = if c.starts_with("rlsd") && c.ends_with("-short") {
                    short_floor
                } else if c.starts_with("rlsd") {
                    rlsd_floor
                } else {
                    grpo_floor
                };
                for clock in ["wall", "cpu"] {
                    let t = step(c, &format!("median_step_{clock}_s"));
                    floors.insert(
                        format!("{c}_floor_fraction{model}_{clock}"),
                        json!(floor / t),
                    );
                }
            }
            if let Some(trl) = result.get("trl") {
                for clock in ["wall", "cpu"] {
                    let t = f(&trl[format!("median_step_{clock}_s")]);
                    floors.insert(
                        format!("trl_floor_fraction{model}_{clock}"),
                        json!(grpo_floor / t),
                    );
                }
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
            "FLOP floor at {:.1} GFLOP/s: grpo step {:.3} s, rlsd step {:.3} s \
             (until 2026-11-30's model, every row's prompt trained: {:.3} s, {:.3} s)",
            f(&fl["rate_gflops"]),
            f(&fl["grpo_step_floor_s"]),
            f(&fl["rlsd_step_floor_s"]),
            f(&fl["grpo_step_floor_rows_s"]),
            f(&fl["rlsd_step_floor_rows_s"])
        );
        let mut keys: Vec<&String> = fl
            .as_object()
            .map(|m| {
                m.keys()
                    .filter(|k| k.contains("_floor_fraction") && k.ends_with("_cpu"))
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        for k in keys {
            println!("  {k:<44} {:6.3}", f(&fl[k.as_str()]));
        }
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&result)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}
