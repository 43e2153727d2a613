//! Memory benchmark (docs/benchmarks/memory.md): peak resident memory of one
//! process doing one thing, read from `/proc/self/status` (`VmHWM`).
//!
//! - `step`: one RLSD train step of a random Qwen2-shaped model on random
//!   responses, with the memory-bounded path (chunked head, token budget,
//!   optional checkpointing) or `--plain` (one head chunk, no budget, no
//!   checkpointing: the computation of the unbounded path); prints the peak,
//!   the step time, bytes per response token and the memory model's prediction.
//! - `make-weights DIR --shape qwen2.5-1.5b`: a random bf16 checkpoint of a
//!   published shape, streamed to disk (never held in memory).
//! - `load DIR`: load a checkpoint as float32 by the mapped loader, or with
//!   `--read-all` by reading the whole file first (the old way); prints the peak.
//!
//! Run one measurement per process: the peak is the process's.

mod bench_common;

use anyhow::{bail, Context, Result};
use bench_common::{cpu_seconds, status_bytes};
use clap::{Parser, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rlsd::memory::{known_shape, optimizer_items, total, GIB};
use rlsd::model::random::qwen2_shaped;
use rlsd::model::{trunk_positions, Config, LoadedModel};
use rlsd::optim::OptimConfig;
use rlsd::policy::PromptResponse;
use rlsd::rlsd::AlgoConfig;
use rlsd::train::{plan_micro_batches, train_step, TrainBatch, Trainer};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Peak memory of a train step or a checkpoint load")]
struct Args {
    #[command(subcommand)]
    what: What,
    /// Intra-op threads (keep low on a shared machine).
    #[arg(long, default_value_t = 1, global = true)]
    threads: i32,
}

#[derive(Debug, Subcommand)]
enum What {
    /// One RLSD train step on a random Qwen2-shaped model.
    Step {
        #[arg(long, default_value_t = 151_936)]
        vocab: i64,
        #[arg(long, default_value_t = 256)]
        hidden: i64,
        #[arg(long, default_value_t = 2)]
        layers: i64,
        /// Responses (8 prompts x 8 by default).
        #[arg(long, default_value_t = 64)]
        rows: usize,
        #[arg(long, default_value_t = 32)]
        prompt: usize,
        #[arg(long, default_value_t = 512)]
        response: usize,
        /// The unbounded path: one head chunk, no token budget, no checkpointing.
        #[arg(long)]
        plain: bool,
        /// Recompute decoder layers in the backward.
        #[arg(long)]
        checkpoint: bool,
        /// `optim.max_tokens_per_micro_batch` (default: the config default).
        #[arg(long)]
        budget: Option<usize>,
        /// Run every row's prompt (`optim.share_prompt = false`).
        #[arg(long)]
        no_share: bool,
    },
    /// Write a random bf16 checkpoint of a published shape.
    MakeWeights {
        dir: PathBuf,
        #[arg(long, default_value = "qwen2.5-1.5b")]
        shape: String,
    },
    /// Load a checkpoint as float32.
    Load {
        dir: PathBuf,
        /// Read the whole file into memory first (the old loader).
        #[arg(long)]
        read_all: bool,
    },
}

#[allow(clippy::too_many_arguments)]
fn step(
    vocab: i64,
    hidden: i64,
    layers: i64,
    rows: usize,
    prompt: usize,
    response: usize,
    plain: bool,
    checkpoint: bool,
    budget: Option<usize>,
    share: bool,
) -> Result<serde_json::Value> {
    let cfg = qwen2_shaped(vocab, hidden, layers);
    let rss0 = status_bytes("VmRSS:");
    let model = LoadedModel::random(cfg.clone(), Device::Cpu, 1)?;
    let mut optim = OptimConfig {
        lr: 1e-5,
        activation_checkpointing: checkpoint,
        share_prompt: share,
        ..OptimConfig::default()
    };
    if let Some(b) = budget {
        optim.max_tokens_per_micro_batch = b;
    }
    if plain {
        optim.max_tokens_per_micro_batch = 0;
        optim.logit_chunk_tokens = rows * response;
        optim.activation_checkpointing = false;
        optim.share_prompt = false;
    }
    let mut rng = StdRng::seed_from_u64(7);
    let mut tok = |n: usize| -> Vec<i64> { (0..n).map(|_| rng.random_range(0..vocab)).collect() };
    let group = 8.min(rows.max(1));
    let prompts: Vec<Vec<i64>> = (0..rows.div_ceil(group)).map(|_| tok(prompt)).collect();
    let samples: Vec<PromptResponse> = (0..rows)
        .map(|i| PromptResponse {
            image_key: 0,
            prompt: prompts[i / group].clone(),
            response: tok(response),
        })
        .collect();
    let lp = |s: f32| -> Vec<Vec<f32>> { (0..rows).map(|_| vec![s; response]).collect() };
    let batch = TrainBatch {
        samples,
        sampling_logprobs: lp(-(vocab as f32).ln()),
        teacher_logprobs: Some(lp(-(vocab as f32).ln() + 0.1)),
        teacher_neg_logprobs: None,
        ref_logprobs: None,
        teacher_support: None,
        correct: None,
        advantages: (0..rows)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect(),
        step: 1,
        lambda: 0.5,
        lr: 1e-5,
        temperature: 1.0,
        response_mask: None,
    };
    // The positions the trunk runs, over the step's micro-batches.
    let (order, ranges) = plan_micro_batches(
        &batch.samples,
        optim.micro_batch_size,
        optim.max_tokens_per_micro_batch,
        optim.share_prompt,
    );
    let planned: Vec<PromptResponse> = order.iter().map(|&i| batch.samples[i].clone()).collect();
    let positions: usize = ranges
        .iter()
        .map(|r| trunk_positions(&planned[r.clone()], optim.share_prompt))
        .sum();
    let micro_batches = ranges.len();
    let predicted = optimizer_items(&cfg, Kind::Float, &optim, rows, prompt, response);
    let mut trainer = Trainer::new(model, AlgoConfig::default(), optim)?;
    let rss_ready = status_bytes("VmRSS:");
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let stats = train_step(&mut trainer, &batch)?;
    let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    if stats.skipped {
        bail!("step skipped: {:?}", stats.skip_reason);
    }
    let peak = status_bytes("VmHWM:");
    // The bench publishes no snapshot: compare without that line.
    let model_pred: f64 = total(&predicted)
        - predicted
            .iter()
            .filter(|i| i.what == "weight snapshot")
            .map(|i| i.bytes)
            .sum::<f64>();
    let tokens = (rows * response) as f64;
    Ok(json!({
        "what": "step",
        "vocab": vocab, "hidden": hidden, "layers": layers,
        "rows": rows, "prompt": prompt, "response": response,
        "plain": plain, "checkpoint": checkpoint, "share_prompt": trainer.optim.share_prompt,
        "trunk_positions": positions, "micro_batches": micro_batches,
        "budget": trainer.optim.max_tokens_per_micro_batch,
        "loss": stats.loss, "grad_norm": stats.grad_norm,
        "step_s": secs,
        "step_cpu_s": cpu,
        "rss_start_gib": rss0 / GIB,
        "rss_before_step_gib": rss_ready / GIB,
        "peak_gib": peak / GIB,
        "step_bytes_per_token": (peak - rss_ready) / tokens,
        "predicted_gib": (model_pred + 0.3 * GIB) / GIB,
        "predicted_items": predicted.iter().map(|i| json!([i.what, i.bytes / GIB])).collect::<Vec<_>>(),
    }))
}

/// Stream a random bf16 safetensors file of `shape` into `dir` (plus config.json).
fn make_weights(dir: &Path, shape: &str) -> Result<serde_json::Value> {
    let cfg = known_shape(shape).with_context(|| format!("unknown shape {shape}"))?;
    std::fs::create_dir_all(dir)?;
    // The names and shapes come from an (unallocated) var store walk: build
    // the list from a zero-layer-free description instead of allocating.
    let h = cfg.hidden_size;
    let q = cfg.num_attention_heads * cfg.head_dim;
    let k = cfg.num_key_value_heads * cfg.head_dim;
    let i = cfg.intermediate_size;
    let mut tensors: Vec<(String, Vec<i64>)> =
        vec![("model.embed_tokens.weight".into(), vec![cfg.vocab_size, h])];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (n, s) in [
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
            ("self_attn.q_proj.weight", vec![q, h]),
            ("self_attn.q_proj.bias", vec![q]),
            ("self_attn.k_proj.weight", vec![k, h]),
            ("self_attn.k_proj.bias", vec![k]),
            ("self_attn.v_proj.weight", vec![k, h]),
            ("self_attn.v_proj.bias", vec![k]),
            ("self_attn.o_proj.weight", vec![h, q]),
            ("mlp.gate_proj.weight", vec![i, h]),
            ("mlp.up_proj.weight", vec![i, h]),
            ("mlp.down_proj.weight", vec![h, i]),
        ] {
            tensors.push((format!("{p}.{n}"), s));
        }
    }
    tensors.push(("model.norm.weight".into(), vec![h]));
    if !cfg.tie_word_embeddings {
        tensors.push(("lm_head.weight".into(), vec![cfg.vocab_size, h]));
    }
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (n, s) in &tensors {
        let bytes = 2 * s.iter().product::<i64>() as usize;
        header.insert(
            n.clone(),
            json!({"dtype": "BF16", "shape": s, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut text = serde_json::to_string(&header)?;
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let path = dir.join("model.safetensors");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    f.write_all(&(text.len() as u64).to_le_bytes())?;
    f.write_all(text.as_bytes())?;
    let mut rng = StdRng::seed_from_u64(3);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = offset;
    while left > 0 {
        let n = left.min(buf.len());
        for pair in buf[..n].chunks_exact_mut(2) {
            // bf16 of a value in about [-0.03, 0.03]: sign, exponent 0x79-0x7b, random mantissa.
            let bits: u16 =
                (rng.random_range(0x3C80u16..0x3CF0)) | (u16::from(rng.random::<bool>()) << 15);
            pair.copy_from_slice(&bits.to_le_bytes());
        }
        f.write_all(&buf[..n])?;
        left -= n;
    }
    f.flush()?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&cfg.to_hf_json("bfloat16"))?,
    )?;
    Ok(json!({"what": "make-weights", "file_gib": (offset as f64) / GIB}))
}

fn load(dir: &Path, read_all: bool) -> Result<serde_json::Value> {
    let t0 = Instant::now();
    let params = if read_all {
        let cfg = Config::from_file(&dir.join("config.json"))?;
        let m = LoadedModel::empty(cfg, Device::Cpu)?;
        let vars = m.vs.variables();
        let tensors = Tensor::read_safetensors(dir.join("model.safetensors"))?;
        tch::no_grad(|| -> Result<()> {
            for (name, t) in tensors {
                if let Some(v) = vars.get(&name) {
                    v.shallow_clone().f_copy_(&t)?;
                }
            }
            Ok(())
        })?;
        m.vs.variables().values().map(|t| t.numel()).sum::<usize>()
    } else {
        let m = LoadedModel::load(dir, Device::Cpu, Kind::Float)?;
        m.vs.variables().values().map(|t| t.numel()).sum::<usize>()
    };
    Ok(json!({
        "what": "load", "read_all": read_all, "params": params,
        "weights_f32_gib": params as f64 * 4.0 / GIB,
        "peak_gib": status_bytes("VmHWM:") / GIB,
        "load_s": t0.elapsed().as_secs_f64(),
    }))
}

fn main() -> Result<()> {
    rlsd::malloc::use_one_arena();
    let args = Args::parse();
    tch::set_num_threads(args.threads);
    let out = match &args.what {
        What::Step {
            vocab,
            hidden,
            layers,
            rows,
            prompt,
            response,
            plain,
            checkpoint,
            budget,
            no_share,
        } => step(
            *vocab,
            *hidden,
            *layers,
            *rows,
            *prompt,
            *response,
            *plain,
            *checkpoint,
            *budget,
            !*no_share,
        )?,
        What::MakeWeights { dir, shape } => make_weights(dir, shape)?,
        What::Load { dir, read_all } => load(dir, *read_all)?,
    };
    println!("{out}");
    Ok(())
}
