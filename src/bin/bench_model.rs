//! Model benchmark: rlsd's decoder against Hugging Face transformers on the
//! same tiny random Qwen2 model (hidden 256, 4 layers, 4 heads, 2 KV heads,
//! vocab 64), in one run on one machine.
//!
//! - batched generation: 64 sequences, 16-token prompts, 48 new tokens
//!   (sampling at temperature 1, no early stop), tokens per second;
//! - forward + backward of 64 x 64 tokens (sum of token log-probs), seconds;
//! - peak resident memory of each process.
//!
//! The Rust side saves its random model to a temporary folder, then runs
//! `scripts/bench_model_hf.py` on that folder with the Python named in
//! `.libtorch-python` (or `--python`), and writes both sides and the ratios
//! as JSON (`--out`, default `bench_model.json`). See docs/BENCHMARKS.md.

mod bench_common;

use anyhow::{Context, Result};
use bench_common::cpu_seconds;
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rlsd::model::random::qwen2_shaped;
use rlsd::model::{generate, Config, GenerateOptions, LoadedModel};
use rlsd::policy::{Policy, PromptResponse};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Benchmark rlsd's decoder against transformers on a tiny random Qwen2")]
struct Args {
    /// `cpu` or `cuda` (the transformers side uses the same).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Timed repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Intra-op threads for both sides (0 = libtorch's default, one per core).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    /// Python with torch + transformers; defaults to `.libtorch-python`, then `python3`.
    #[arg(long)]
    python: Option<String>,
    /// Skip the transformers side.
    #[arg(long)]
    skip_hf: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench_model.json")]
    out: PathBuf,
}

const BATCH: usize = 64;
const PROMPT: usize = 16;
const NEW: usize = 48;
const TRAIN_T: usize = 64;

/// The benchmark's model: a random Qwen2 of hidden 256, 4 layers, vocab 64.
fn bench_config() -> Config {
    qwen2_shaped(64, 256, 4)
}

/// Wall-clock and CPU seconds since `start`.
struct Stopwatch {
    wall: Instant,
    cpu: f64,
}

impl Stopwatch {
    fn start() -> Stopwatch {
        Stopwatch {
            wall: Instant::now(),
            cpu: cpu_seconds(),
        }
    }
    fn stop(&self) -> (f64, f64) {
        (self.wall.elapsed().as_secs_f64(), cpu_seconds() - self.cpu)
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Seconds the generation workload spends in its weight matmuls alone (the
/// same `linear` calls on random inputs: prefill of 64 x 16 tokens, then 47
/// steps of 64 tokens), a floor no implementation in float32 gets under.
fn matmul_floor(model: &LoadedModel, device: Device, repeats: usize) -> Result<(f64, f64)> {
    let vars = model.vs.variables();
    let mut weights = vec![];
    for l in 0..model.config.num_hidden_layers {
        for n in [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ] {
            weights.push(vars[&format!("model.layers.{l}.{n}.weight")].shallow_clone());
        }
    }
    let head = vars["model.embed_tokens.weight"].shallow_clone();
    let _guard = tch::no_grad_guard();
    let run = |rows: i64| {
        for w in &weights {
            let x = tch::Tensor::ones([rows, w.size()[1]], (Kind::Float, device));
            let _ = x.linear::<tch::Tensor>(w, None);
        }
        let x = tch::Tensor::ones([BATCH as i64, head.size()[1]], (Kind::Float, device));
        let _ = x.linear::<tch::Tensor>(&head, None);
    };
    let (mut wall, mut cpu) = (vec![], vec![]);
    for i in 0..=repeats {
        let sw = Stopwatch::start();
        run((BATCH * PROMPT) as i64);
        for _ in 1..NEW {
            run(BATCH as i64);
        }
        if i > 0 {
            let (w, c) = sw.stop();
            wall.push(w);
            cpu.push(c);
        }
    }
    Ok((median(wall), median(cpu)))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device = match args.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => anyhow::bail!("unknown device {other:?} (cpu or cuda)"),
    };
    let repeats = args.repeats.max(1);
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    let model = LoadedModel::random(bench_config(), device, 0)?;
    let dir = std::env::temp_dir().join(format!("rlsd-bench-model-{}", std::process::id()));
    model.save(&dir)?;

    let mut rng = StdRng::seed_from_u64(1);
    let prompts: Vec<Vec<i64>> = (0..BATCH)
        .map(|_| (0..PROMPT).map(|_| rng.random_range(0..64)).collect())
        .collect();
    let opts = GenerateOptions {
        max_new_tokens: NEW,
        ..Default::default()
    };
    // Warm-up, then timed runs.
    generate(&model.lm, &prompts, &opts, &mut rng)?;
    let (mut gen_times, mut gen_cpu) = (vec![], vec![]);
    for _ in 0..repeats {
        let sw = Stopwatch::start();
        let out = generate(&model.lm, &prompts, &opts, &mut rng)?;
        if device.is_cuda() {
            tch::Cuda::synchronize(0);
        }
        let (w, c) = sw.stop();
        gen_times.push(w);
        gen_cpu.push(c);
        anyhow::ensure!(
            out.iter().all(|g| g.tokens.len() == NEW),
            "a row stopped early"
        );
    }
    let gen_s = median(gen_times);
    let gen_cpu_s = median(gen_cpu);
    let gen_tok_s = (BATCH * NEW) as f64 / gen_s;
    let (floor_s, floor_cpu_s) = matmul_floor(&model, device, repeats)?;

    let batch: Vec<PromptResponse> = (0..BATCH)
        .map(|_| PromptResponse {
            image_key: 0,
            prompt: (0..TRAIN_T / 2).map(|_| rng.random_range(0..64)).collect(),
            response: (0..TRAIN_T / 2).map(|_| rng.random_range(0..64)).collect(),
        })
        .collect();
    let (mut fb_times, mut fb_cpu) = (vec![], vec![]);
    for i in 0..=repeats {
        model.vs.variables().values().for_each(|v| {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        });
        let sw = Stopwatch::start();
        let scores = model.response_scores(&batch, 1.0)?;
        scores.logprobs.sum(Kind::Float).backward();
        if device.is_cuda() {
            tch::Cuda::synchronize(0);
        }
        if i > 0 {
            let (w, c) = sw.stop();
            fb_times.push(w);
            fb_cpu.push(c);
        }
    }
    let fb_s = median(fb_times);
    let fb_cpu_s = median(fb_cpu);
    let rust = json!({
        "generate_seconds": gen_s,
        "generate_tokens_per_s": gen_tok_s,
        "forward_backward_seconds": fb_s,
        "peak_rss_mib": bench_common::status_bytes("VmHWM:") / (1024.0 * 1024.0),
        "generate_cpu_seconds": gen_cpu_s,
        "forward_backward_cpu_seconds": fb_cpu_s,
        "generate_matmul_floor_seconds": floor_s,
        "generate_matmul_floor_cpu_seconds": floor_cpu_s,
        "generate_matmul_floor_tokens_per_s": (BATCH * NEW) as f64 / floor_s,
    });
    println!(
        "rlsd:         generate {gen_tok_s:6.0} tok/s ({gen_s:.3} s wall, {gen_cpu_s:.2} s cpu)   \
         fwd+bwd {fb_s:.3} s wall, {fb_cpu_s:.2} s cpu"
    );
    println!(
        "matmul floor: generate {:6.0} tok/s ({floor_s:.3} s wall, {floor_cpu_s:.2} s cpu): \
         the weight matmuls alone",
        (BATCH * NEW) as f64 / floor_s
    );

    let mut result = json!({
        "model": { "arch": "qwen2", "hidden": 256, "layers": 4, "heads": 4, "kv_heads": 2,
                   "vocab": 64, "intermediate": 1024 },
        "workload": { "generate": format!("{BATCH} seqs x {PROMPT}-token prompts x {NEW} new tokens, sampling T=1"),
                      "forward_backward": format!("{BATCH} x {TRAIN_T} tokens, sum of response log-probs") },
        "device": args.device,
        "threads": tch::get_num_threads(),
        "repeats": repeats,
        "rlsd": rust,
    });

    if !args.skip_hf {
        let python = args.python.clone().unwrap_or_else(|| {
            std::fs::read_to_string(".libtorch-python")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "python3".into())
        });
        let output = std::process::Command::new(&python)
            .arg("scripts/bench_model_hf.py")
            .arg(&dir)
            .args(["--device", &args.device, "--repeats", &repeats.to_string()])
            .args(["--threads", &args.threads.to_string()])
            .output()
            .with_context(|| format!("running {python} scripts/bench_model_hf.py"))?;
        anyhow::ensure!(
            output.status.success(),
            "transformers side failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let hf: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}"))
            .context("transformers side printed no JSON")?;
        let hf_tok_s = hf["generate_tokens_per_s"].as_f64().unwrap_or(f64::NAN);
        let hf_fb = hf["forward_backward_seconds"].as_f64().unwrap_or(f64::NAN);
        let num = |k: &str| hf[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "transformers: generate {hf_tok_s:6.0} tok/s ({:.3} s wall, {:.2} s cpu)   \
             fwd+bwd {hf_fb:.3} s wall, {:.2} s cpu",
            num("generate_seconds"),
            num("generate_cpu_seconds"),
            num("forward_backward_cpu_seconds")
        );
        let gen_ratio = gen_tok_s / hf_tok_s;
        let fb_ratio = hf_fb / fb_s;
        let gen_cpu_ratio = num("generate_cpu_seconds") / gen_cpu_s;
        let fb_cpu_ratio = num("forward_backward_cpu_seconds") / fb_cpu_s;
        println!(
            "speed-up rlsd vs transformers (wall / cpu): generate {gen_ratio:.2}x / \
             {gen_cpu_ratio:.2}x (target >= 2), fwd+bwd {fb_ratio:.2}x / {fb_cpu_ratio:.2}x (target >= 1)"
        );
        println!(
            "peak RSS MiB: rlsd {:.0}, transformers {:.0}",
            rust["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
            hf["peak_rss_mib"].as_f64().unwrap_or(f64::NAN)
        );
        result["transformers"] = hf;
        result["ratio"] =
            json!({ "generate_speedup": gen_ratio, "forward_backward_speedup": fb_ratio });
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::write(&args.out, serde_json::to_string_pretty(&result)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}
