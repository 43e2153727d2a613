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
    /// `logits`, `gen` or `train`.
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

fn main() -> Result<()> {
    let a = Args::parse();
    let device =
        rlsd::device::parse_device(&a.device).with_context(|| format!("--device {}", a.device))?;
    let out = match a.stage.as_str() {
        "logits" => logits(device)?,
        "gen" => gen(&a, device)?,
        "train" => train(&a, device)?,
        other => bail!("unknown stage {other:?} (logits, gen, train)"),
    };
    println!("{out}");
    Ok(())
}
