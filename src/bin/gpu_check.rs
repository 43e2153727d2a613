//! Device checks run by scripts/gpu-check.sh on a machine with GPUs (no Rust
//! toolchain needed there: this binary is built here and carried over). One
//! stage per call, one JSON object on stdout:
//!
//! - `logits`: the tiny random model's logits on CPU vs `--device` (f32);
//! - `gen`: generation tokens/s of a Qwen2-0.5B-shaped model (random
//!   weights, `--dtype`), `--batch` sequences, 32-token prompts,
//!   `--new-tokens` each, no early stop;
//! - `train`: one GRPO train step (forward, backward, AdamW) of the same
//!   model on `--batch` sequences of `--seq` tokens, seconds and MFU against
//!   `--peak-tflops` (dense bf16; 989 for H100/H200 SXM).
//! - `overlap`: the actor runtime on one device (sampler, teacher and
//!   optimizer each on its own CUDA stream), a random model of
//!   `--overlap-shape` with the built-in task's tokenizer: the steady-state
//!   step time against the slowest stage's time, at `max_staleness` 1
//!   (generation of step k+1 overlaps training of step k) and 0 (no
//!   overlap, for contrast). Issue 11's goal: step within 10% of the
//!   slowest stage.
//!
//! Also runs on CPU with a small `--shape tiny` for a smoke test.

use anyhow::{bail, Context, Result};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rlsd::model::{generate, Arch, Config, GenerateOptions, LoadedModel};
use rlsd::optim::OptimConfig;
use rlsd::policy::PromptResponse;
use rlsd::rlsd::{Algo, AlgoConfig};
use rlsd::train::{train_step, TrainBatch, Trainer};
use serde_json::json;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Parser)]
#[command(about = "GPU checks for scripts/gpu-check.sh (one stage per call, JSON on stdout)")]
struct Args {
    /// `logits`, `gen`, `train` or `overlap`.
    stage: String,
    /// `cuda:0`, `cpu`, ...
    #[arg(long, default_value = "cuda:0")]
    device: String,
    /// `bf16`, `f16` or `f32` (gen, train).
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// `qwen2-0.5b` or `tiny`.
    #[arg(long, default_value = "qwen2-0.5b")]
    shape: String,
    /// Sequences.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// New tokens per sequence (gen).
    #[arg(long, default_value_t = 128)]
    new_tokens: usize,
    /// Tokens per sequence (train).
    #[arg(long, default_value_t = 4096)]
    seq: usize,
    /// Timed repetitions (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Dense peak of the device in TFLOP/s, for MFU.
    #[arg(long, default_value_t = 989.0)]
    peak_tflops: f64,
    /// Steps per run (overlap; the first two are warm-up).
    #[arg(long, default_value_t = 8)]
    steps: u64,
    /// Prompts per step (overlap; `--batch` is the group size there).
    #[arg(long, default_value_t = 16)]
    prompts: usize,
    /// Model of the overlap runs: `small` (hidden 1024, 8 layers), `medium`
    /// (hidden 2048, 16 layers) or `tiny`.
    #[arg(long, default_value = "small")]
    overlap_shape: String,
}

/// Qwen2-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads).
fn qwen2_05b() -> Config {
    Config {
        arch: Arch::Qwen2,
        vocab_size: 151_936,
        hidden_size: 896,
        intermediate_size: 4864,
        num_hidden_layers: 24,
        num_attention_heads: 14,
        num_key_value_heads: 2,
        head_dim: 64,
        max_position_embeddings: 32_768,
        rope_theta: 1_000_000.0,
        ..Config::tiny()
    }
}

fn shape(name: &str) -> Result<Config> {
    match name {
        "qwen2-0.5b" => Ok(qwen2_05b()),
        "tiny" => Ok(Config::tiny()),
        other => bail!("unknown --shape {other:?} (qwen2-0.5b, tiny)"),
    }
}

fn kind(name: &str) -> Result<Kind> {
    match name {
        "bf16" => Ok(Kind::BFloat16),
        "f16" => Ok(Kind::Half),
        "f32" => Ok(Kind::Float),
        other => bail!("unknown --dtype {other:?} (bf16, f16, f32)"),
    }
}

/// A model with random weights drawn on the device (std 0.02; norms one).
fn random_on(config: Config, device: Device, k: Kind) -> Result<LoadedModel> {
    let mut m = LoadedModel::empty(config, device)?;
    tch::manual_seed(0);
    tch::no_grad(|| -> Result<()> {
        for (name, var) in m.vs.variables() {
            if !name.ends_with("norm.weight") && !name.ends_with(".bias") {
                let _ = var.shallow_clone().f_normal_(0.0, 0.02)?;
            }
        }
        Ok(())
    })?;
    m.vs.set_kind(k);
    Ok(m)
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn params(m: &LoadedModel) -> usize {
    m.vs.trainable_variables().iter().map(|t| t.numel()).sum()
}

fn logits(device: Device) -> Result<serde_json::Value> {
    let cpu = LoadedModel::random(Config::tiny(), Device::Cpu, 3)?;
    let dev = LoadedModel::random(Config::tiny(), device, 3)?;
    let ids = Tensor::from_slice(&[5i64, 9, 11, 20, 21, 30, 40, 7]).view([1, 8]);
    let a = cpu.lm.forward_all(&ids, None)?;
    let b = dev
        .lm
        .forward_all(&ids.to_device(device), None)?
        .to_device(Device::Cpu);
    let diff = (&a - &b).abs().max().double_value(&[]);
    let scale = a.abs().max().double_value(&[]);
    Ok(
        json!({"stage": "logits", "max_abs_diff": diff, "max_abs_logit": scale, "ok": diff <= 1e-3 * scale.max(1.0)}),
    )
}

fn gen(a: &Args, device: Device) -> Result<serde_json::Value> {
    let m = random_on(shape(&a.shape)?, device, kind(&a.dtype)?)?;
    let mut rng = StdRng::seed_from_u64(1);
    let vocab = m.config.vocab_size as i64;
    let prompts: Vec<Vec<i64>> = (0..a.batch)
        .map(|_| (0..32).map(|_| rng.random_range(10..vocab)).collect())
        .collect();
    let opts = GenerateOptions {
        max_new_tokens: a.new_tokens,
        temperature: 1.0,
        eos_ids: vec![],
        ..GenerateOptions::default()
    };
    let _ = generate(
        &m.lm,
        &prompts[..a.batch.min(2)],
        &GenerateOptions {
            max_new_tokens: 4,
            ..opts.clone()
        },
        &mut rng,
    )?;
    let mut times = Vec::new();
    let mut tokens = 0;
    for _ in 0..a.repeats.max(1) {
        sync(device);
        let t0 = Instant::now();
        let out = generate(&m.lm, &prompts, &opts, &mut rng)?;
        sync(device);
        times.push(t0.elapsed().as_secs_f64());
        tokens = out.iter().map(|g| g.tokens.len()).sum::<usize>();
    }
    let s = median(times);
    Ok(
        json!({"stage": "gen", "shape": a.shape, "dtype": a.dtype, "params": params(&m), "batch": a.batch,
              "new_tokens": a.new_tokens, "generated_tokens": tokens, "seconds": s, "tokens_per_s": tokens as f64 / s,
              "peak_mem_note": "see nvidia-smi in the summary"}),
    )
}

fn train(a: &Args, device: Device) -> Result<serde_json::Value> {
    let config = shape(&a.shape)?;
    let (layers, hidden) = (config.num_hidden_layers, config.hidden_size);
    let m = random_on(config, device, kind(&a.dtype)?)?;
    let n_params = params(&m);
    let optim = OptimConfig {
        lr: 1e-6,
        micro_batch_size: 1,
        logit_chunk_tokens: 2048,
        activation_checkpointing: true,
        ..OptimConfig::default()
    };
    let mut t = Trainer::new(m, AlgoConfig::with_algo(Algo::Grpo), optim)?;
    let mut rng = StdRng::seed_from_u64(2);
    let vocab = t.policy.config.vocab_size as i64;
    let prompt_len = 64.min(a.seq / 2);
    let resp_len = a.seq - prompt_len;
    let samples: Vec<PromptResponse> = (0..a.batch)
        .map(|_| PromptResponse {
            image_key: 0,
            prompt: (0..prompt_len)
                .map(|_| rng.random_range(10..vocab))
                .collect(),
            response: (0..resp_len).map(|_| rng.random_range(10..vocab)).collect(),
        })
        .collect();
    let batch = TrainBatch {
        sampling_logprobs: vec![vec![-12.0; resp_len]; a.batch],
        advantages: (0..a.batch)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect(),
        samples,
        step: 1,
        lambda: 0.0,
        lr: 1e-6,
        temperature: 1.0,
        ..TrainBatch::default()
    };
    let mut times = Vec::new();
    for i in 0..a.repeats.max(1) + 1 {
        sync(device);
        let t0 = Instant::now();
        let s = train_step(
            &mut t,
            &TrainBatch {
                step: i as u64 + 1,
                ..batch.clone()
            },
        )?;
        sync(device);
        if s.skipped {
            bail!("train step skipped: {:?}", s.skip_reason);
        }
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64()); // the first is warm-up
        }
    }
    let s = median(times);
    let tokens = (a.batch * a.seq) as f64;
    // 6 N per token (forward + backward) plus causal attention, and the
    // recomputed forward of activation checkpointing is not counted (MFU, not HFU).
    let flops =
        6.0 * n_params as f64 * tokens + 6.0 * (layers * hidden) as f64 * a.seq as f64 * tokens;
    Ok(
        json!({"stage": "train", "shape": a.shape, "dtype": a.dtype, "params": n_params, "batch": a.batch, "seq": a.seq,
              "seconds": s, "tokens_per_s": tokens / s, "tflops": flops / s / 1e12, "mfu": flops / s / 1e12 / a.peak_tflops}),
    )
}

/// A random model of `shape` with the built-in task's tokenizer and token
/// ids, saved into `dir` in `dtype`.
fn overlap_model(shape: &str, dtype: Kind, device: Device, dir: &std::path::Path) -> Result<()> {
    let base_dir = rlsd::config::builtin_model_dir();
    let base = LoadedModel::load(&base_dir, Device::Cpu, Kind::Float)
        .with_context(|| format!("the built-in model at {}", base_dir.display()))?;
    let (hidden, layers, heads) = match shape {
        "tiny" => (
            base.config.hidden_size,
            base.config.num_hidden_layers,
            base.config.num_attention_heads,
        ),
        "small" => (1024, 8, 16),
        "medium" => (2048, 16, 16),
        other => bail!("unknown --overlap-shape {other:?} (tiny, small, medium)"),
    };
    let config = Config {
        hidden_size: hidden,
        intermediate_size: if shape == "tiny" {
            base.config.intermediate_size
        } else {
            hidden * 11 / 4
        },
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: heads.min(base.config.num_key_value_heads.max(4)),
        head_dim: hidden / heads,
        max_position_embeddings: base.config.max_position_embeddings.max(1024),
        ..base.config.clone()
    };
    let mut m = random_on(config, device, dtype)?;
    m.tokenizer = base.tokenizer.clone();
    m.save(dir)?;
    Ok(())
}

/// One actor-runtime run for the overlap stage: per step, the stage times
/// and the wall time between consecutive commits.
fn overlap_run(a: &Args, model: &std::path::Path, staleness: u64) -> Result<serde_json::Value> {
    use rlsd::actors::Runtime;
    use rlsd::config::RunConfig;
    use std::sync::{Arc, Mutex};
    let out = tempfile_dir("rlsd-overlap-run")?;
    let set: Vec<String> = vec![
        format!("model.path=\"{}\"", model.display()),
        format!("model.dtype=\"{}\"", a.dtype),
        format!("runtime.steps={}", a.steps),
        format!("runtime.max_staleness={staleness}"),
        "runtime.teacher_sync_interval=1".into(),
        format!("runtime.sampler_device=\"{}\"", a.device),
        format!("runtime.teacher_device=\"{}\"", a.device),
        format!("runtime.optimizer_device=\"{}\"", a.device),
        format!("runtime.out_dir=\"{}\"", out.display()),
        "checkpoint.every_steps=0".into(),
        format!("rollout.batch_prompts={}", a.prompts),
        format!("rollout.group_size={}", a.batch),
        format!("rollout.max_new_tokens={}", a.new_tokens),
        // A random model never stops by itself: every response is full length.
        "algo.algo=\"rlsd\"".into(),
    ];
    let cfg = RunConfig::load(None, &set)?;
    let commits: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = commits.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let t0 = Instant::now();
    let report = rt.block_on(
        Runtime::builder(cfg)
            .on_step(move |_| seen.lock().expect("commit times").push(Instant::now()))
            .run(),
    )?;
    let wall = t0.elapsed().as_secs_f64();
    rt.shutdown_background();
    let _ = std::fs::remove_dir_all(&out);
    if report.failed {
        bail!("the run failed: {}", report.reason);
    }
    let times = commits.lock().expect("commit times").clone();
    // Steady state: intervals between commits from the third step on.
    let warm = 2.min(times.len().saturating_sub(2));
    let intervals: Vec<f64> = times
        .windows(2)
        .skip(warm)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    if intervals.is_empty() {
        bail!(
            "too few steps to measure ({} committed); raise --steps",
            times.len()
        );
    }
    let steps = report.steps.get(warm + 1..).unwrap_or(&[]);
    let mean = |f: &dyn Fn(&rlsd::stats::StepStats) -> f64| {
        steps.iter().map(f).sum::<f64>() / steps.len().max(1) as f64
    };
    let generate = mean(&|s| s.timings.generate_s);
    let verify = mean(&|s| s.timings.verify_s);
    let teacher = mean(&|s| s.timings.teacher_s);
    let credit = mean(&|s| s.timings.credit_s);
    let train = mean(&|s| s.timings.train_s);
    let step = intervals.iter().sum::<f64>() / intervals.len() as f64;
    let slowest = generate.max(verify).max(teacher).max(credit).max(train);
    let serial = generate + verify + teacher + credit + train;
    Ok(json!({
        "max_staleness": staleness, "steps": report.steps.len(), "wall_s": wall,
        "step_s": step, "generate_s": generate, "verify_s": verify, "teacher_s": teacher,
        "credit_s": credit, "train_s": train, "slowest_stage_s": slowest, "stages_sum_s": serial,
        "step_over_slowest": step / slowest.max(1e-9),
    }))
}

/// A fresh folder under the system's temporary directory.
fn tempfile_dir(prefix: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn overlap(a: &Args, device: Device) -> Result<serde_json::Value> {
    let dir = tempfile_dir("rlsd-overlap-model")?;
    overlap_model(&a.overlap_shape, kind(&a.dtype)?, device, &dir)?;
    let overlapped = overlap_run(a, &dir, 1);
    let serial = overlap_run(a, &dir, 0);
    let _ = std::fs::remove_dir_all(&dir);
    let (overlapped, serial) = (overlapped?, serial?);
    let ratio = overlapped["step_over_slowest"].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "stage": "overlap", "shape": a.overlap_shape, "dtype": a.dtype, "streams": rlsd::cuda::streams_enabled(),
        "prompts": a.prompts, "group": a.batch, "new_tokens": a.new_tokens,
        "staleness_1": overlapped, "staleness_0": serial,
        "step_over_slowest": ratio, "goal_within_10pct": ratio <= 1.10,
    }))
}

fn main() -> Result<()> {
    let a = Args::parse();
    let device =
        rlsd::device::parse_device(&a.device).with_context(|| format!("--device {}", a.device))?;
    let out = match a.stage.as_str() {
        "logits" => logits(device)?,
        "gen" => gen(&a, device)?,
        "train" => train(&a, device)?,
        "overlap" => overlap(&a, device)?,
        other => bail!("unknown stage {other:?} (logits, gen, train, overlap)"),
    };
    println!("{out}");
    Ok(())
}
