//! Benchmark of `train_step` (not a test): step time per algorithm and
//! micro-batch size and `optim.share_prompt` (with the trunk positions each
//! runs, and CPU seconds), and the share of the RLSD math (delta, credit, loss)
//! next to the policy's forward + backward. Prints one JSON object.
//!
//! Model: random Qwen2, hidden 256, 4 layers, 4 heads, 2 KV heads, vocab 64;
//! batch: 64 responses (groups of 8) of 48 tokens after 16-token prompts.
//! `--builtin`: the built-in model's shape and a batch like its default run.
//!
//!     cargo run --release --example bench_train_step [-- --device cuda:0 --iters 10 --threads 1]

#[path = "../src/bin/bench_common/mod.rs"]
mod bench_common;

use bench_common::{cpu_seconds, status_bytes};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rlsd::model::{token_logprobs, trunk_positions, Config, LoadedModel};
use rlsd::optim::OptimConfig;
use rlsd::policy::{Policy, PromptResponse};
use rlsd::rlsd::{group_advantages, Algo, AlgoConfig};
use rlsd::train::{
    effective_algo, micro_batch_loss, plan_micro_batches, train_step, TrainBatch, Trainer,
};
use std::time::Instant;
use tch::Device;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let device = match arg("--device").as_deref() {
        Some("cuda:0") | Some("cuda") => Device::Cuda(0),
        _ => Device::Cpu,
    };
    let iters: usize = arg("--iters").map_or(Ok(5), |s| s.parse())?;
    // One intra-op thread by default, so CPU seconds are the computation's.
    tch::set_num_threads(arg("--threads").map_or(Ok(1), |s| s.parse())?);
    // `--builtin`: the built-in model's shape (assets/tiny-arith, random
    // weights) and a batch like its default run's: 16 prompts x 16 responses,
    // 20-token prompts, responses of 4-48 tokens.
    let builtin = args.iter().any(|a| a == "--builtin");
    let cfg = if builtin {
        Config::from_file(std::path::Path::new("assets/tiny-arith/config.json"))?
    } else {
        Config {
            hidden_size: 256,
            intermediate_size: 512,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 64,
            ..Config::tiny()
        }
    };
    let (b, prompt_len, resp_len, group) = if builtin {
        (256usize, 20usize, 48usize, 16usize)
    } else {
        (64, 16, 48, 8)
    };
    let mut rng = StdRng::seed_from_u64(0);
    let samples: Vec<PromptResponse> = (0..b)
        .map(|i| {
            let mut prng = StdRng::seed_from_u64((i / group) as u64);
            let len = if builtin {
                rng.random_range(4..=resp_len)
            } else {
                resp_len
            };
            PromptResponse {
                image_key: 0,
                prompt: (0..prompt_len).map(|_| prng.random_range(0..64)).collect(),
                response: (0..len).map(|_| rng.random_range(0..64)).collect(),
            }
        })
        .collect();
    let rewards: Vec<f32> = (0..b).map(|_| f32::from(rng.random_bool(0.4))).collect();
    let m = LoadedModel::random(cfg.clone(), device, 1)?;
    let prompts: Vec<Vec<i64>> = samples.iter().map(|s| s.prompt.clone()).collect();
    let teacher_prompts: Vec<Vec<i64>> = samples
        .iter()
        .map(|s| [s.prompt.as_slice(), &[7, 8, 9, 10]].concat())
        .collect();
    let responses: Vec<Vec<i64>> = samples.iter().map(|s| s.response.clone()).collect();
    let sampling = token_logprobs(&m.lm, &prompts, &responses, 1.0)?;
    let teacher = token_logprobs(&m.lm, &teacher_prompts, &responses, 1.0)?;
    let batch = TrainBatch {
        samples,
        sampling_logprobs: sampling,
        teacher_logprobs: Some(teacher),
        teacher_neg_logprobs: None,
        ref_logprobs: None,
        teacher_support: None,
        correct: None,
        advantages: group_advantages(&rewards, group, true)?,
        step: 1,
        lambda: 0.5,
        lr: 1e-5,
        temperature: 1.0,
        response_mask: None,
    };

    let mut results = Vec::new();
    for algo in [Algo::Grpo, Algo::Rlsd] {
        for micro in [0usize, 16] {
            for share in [false, true] {
                let optim = OptimConfig {
                    micro_batch_size: micro,
                    share_prompt: share,
                    ..OptimConfig::default()
                };
                // The positions the trunk runs (a property of the plan, not timed).
                let (order, ranges) = plan_micro_batches(
                    &batch.samples,
                    optim.micro_batch_size,
                    optim.max_tokens_per_micro_batch,
                    share,
                );
                let planned: Vec<PromptResponse> =
                    order.iter().map(|&i| batch.samples[i].clone()).collect();
                let positions: usize = ranges
                    .iter()
                    .map(|r| trunk_positions(&planned[r.clone()], share))
                    .sum();
                let mut tr = Trainer::new(
                    LoadedModel::random(cfg.clone(), device, 1)?,
                    AlgoConfig::with_algo(algo),
                    optim,
                )?;
                let first = train_step(&mut tr, &batch)?; // warm-up
                let (t, c) = (Instant::now(), cpu_seconds());
                for _ in 0..iters {
                    train_step(&mut tr, &batch)?;
                }
                let step_s = t.elapsed().as_secs_f64() / iters as f64;
                let step_cpu_s = (cpu_seconds() - c) / iters as f64;
                results.push(serde_json::json!({
                    "algo": algo.name(), "micro_batch_size": micro, "share_prompt": share,
                    "trunk_positions": positions, "step_s": step_s, "step_cpu_s": step_cpu_s,
                    "first_loss": first.loss, "first_grad_norm": first.grad_norm,
                }));
                eprintln!("{}", results.last().unwrap_or(&serde_json::Value::Null));
            }
        }
    }
    // The RLSD math alone on the policy's (precomputed) log-probs.
    let scores = m.response_scores(&batch.samples, 1.0)?;
    let acfg = AlgoConfig::default();
    let algo = effective_algo(&acfg, &batch)?;
    let norm = batch.loss_norm();
    let t = Instant::now();
    for _ in 0..iters * 10 {
        let out = micro_batch_loss(
            &acfg,
            algo,
            &batch,
            0..b,
            &scores.logprobs.detach(),
            &scores.entropy.detach(),
            norm,
        )?;
        let _ = f64::try_from(&out.loss.loss)?;
    }
    let math_s = t.elapsed().as_secs_f64() / (iters * 10) as f64;
    let out = serde_json::json!({
        "device": format!("{device:?}"),
        "model": {"hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers, "vocab": cfg.vocab_size},
        "batch": {"responses": b, "group": group, "prompt_tokens": prompt_len, "response_tokens_max": resp_len},
        "iters": iters,
        "train_step": results,
        "rlsd_math_only_s": math_s,
        "peak_rss_gib": status_bytes("VmHWM:") / f64::from(1u32 << 30),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
