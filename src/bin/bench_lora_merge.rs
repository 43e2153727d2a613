//! Generation speed with a LoRA adapter applied unmerged (the default
//! sampler replica: `W x + scale B (A x)` per adapted projection) against
//! merged (`model.merge_for_generation`: `(W + scale B A) x`), on the same
//! weights, alternating the two variants `--reps` times.
//!
//! The model is a folder (default: the built-in task's assets/tiny-arith)
//! with rank-`--rank` adapters on all seven projections, `B` set non-zero.
//! Workload: `--prompts` prompts of 8 tokens, greedy, `--new` new tokens
//! each (no stop). Tokens per second count generated tokens; CPU seconds
//! (user + system) are reported too, since the build machine is shared.
//! Prints one JSON object.

#[allow(dead_code)] // status_bytes: not read here
mod bench_common;

use anyhow::Result;
use bench_common::cpu_seconds;
use clap::Parser;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rlsd::actors::commit::{Frozen, ReplicaSpec};
use rlsd::model::lora_config::TARGET_MODULES;
use rlsd::model::{generate, GenerateOptions, LoadedModel, LoraConfig};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "LoRA generation: unmerged vs merged adapters")]
struct Args {
    /// Model folder.
    #[arg(long, default_value = "assets/tiny-arith")]
    model: PathBuf,
    /// Adapter rank.
    #[arg(long, default_value_t = 8)]
    rank: i64,
    /// Prompts per call.
    #[arg(long, default_value_t = 16)]
    prompts: usize,
    /// New tokens per prompt.
    #[arg(long, default_value_t = 64)]
    new: usize,
    /// Alternating repetitions of each variant.
    #[arg(long, default_value_t = 5)]
    reps: usize,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let mut policy = LoadedModel::load(&a.model, Device::Cpu, Kind::Float)?;
    policy.attach_lora(&LoraConfig {
        rank: a.rank,
        alpha: 2.0 * a.rank as f64,
        target_modules: TARGET_MODULES.map(String::from).to_vec(),
        ..LoraConfig::default()
    })?;
    tch::no_grad(|| {
        for (n, v) in policy.vs.variables() {
            if n.contains(".lora_B.") {
                v.shallow_clone().copy_(&(Tensor::randn_like(&v) * 0.01));
            }
        }
    });
    let weights = Frozen::new(policy.sync_snapshot(1)?);
    let (unmerged, _) = ReplicaSpec::pair(&policy, Device::Cpu, Device::Cpu, false)?;
    let (merged, _) = ReplicaSpec::pair(&policy, Device::Cpu, Device::Cpu, true)?;
    let models = [unmerged.build(&weights)?, merged.build(&weights)?];
    let opts = GenerateOptions {
        max_new_tokens: a.new,
        greedy: true,
        ..GenerateOptions::default()
    };
    let prompts: Vec<Vec<i64>> = (0..a.prompts as i64)
        .map(|p| (0..8).map(|t| 3 + (p * 5 + t * 3) % 20).collect())
        .collect();
    let mut rates = [Vec::new(), Vec::new()];
    let mut cpu = [0.0, 0.0];
    let mut ids = [Vec::new(), Vec::new()];
    for _ in 0..a.reps {
        for (i, m) in models.iter().enumerate() {
            let (t0, c0) = (Instant::now(), cpu_seconds());
            let mut rng = StdRng::seed_from_u64(0);
            let gens = tch::no_grad(|| generate(&m.lm, &prompts, &opts, &mut rng))?;
            let tokens: usize = gens.iter().map(|g| g.tokens.len()).sum();
            rates[i].push(tokens as f64 / t0.elapsed().as_secs_f64());
            cpu[i] += cpu_seconds() - c0;
            ids[i] = gens.into_iter().map(|g| g.tokens).collect::<Vec<_>>();
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let out = json!({
        "model": a.model,
        "rank": a.rank,
        "prompts": a.prompts,
        "new_tokens": a.new,
        "reps": a.reps,
        "unmerged_tokens_per_s": median(&mut rates[0]),
        "merged_tokens_per_s": median(&mut rates[1]),
        "unmerged_cpu_s": cpu[0],
        "merged_cpu_s": cpu[1],
        "greedy_ids_equal": ids[0] == ids[1],
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
