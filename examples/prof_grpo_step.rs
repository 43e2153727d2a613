//! Where the CPU time of the runtime benchmark's GRPO step goes (not a test):
//! generation, the train step, and the train step's parts (forward + backward
//! with the loss, gradient clipping, AdamW), in CPU seconds (user and system
//! apart) and minor page faults per part. Model: the folder written by
//! `scripts/bench_trl.py make-model` (docs/benchmarks/runtime.md); batch: its
//! 8 prompts x 8 responses x 48 new tokens at temperature 1. `--trim` calls
//! `rlsd::malloc::trim` after every train step, as the actor runtime does;
//! `--gen-only` stops after generation (for `perf record`).
//!
//!     cargo run --example prof_grpo_step -- MODEL_DIR [ITERS] [--trim] [--gen-only]

use rlsd::data::prompt::student_prompt_ids;
use rlsd::data::Example;
use rlsd::model::{generate_profiled, prompt_seeds, GenerateOptions, LoadedModel};
use rlsd::optim::OptimConfig;
use rlsd::policy::PromptResponse;
use rlsd::rlsd::{group_advantages, AlgoConfig};
use rlsd::train::{train_step, TrainBatch, Trainer};
use std::path::PathBuf;
use std::time::Instant;

/// `(user s, system s, minor faults)` of this process so far.
fn usage() -> (f64, f64, i64) {
    // SAFETY: getrusage writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    (s(u.ru_utime), s(u.ru_stime), u.ru_minflt)
}

/// Run `f` `n` times; print per-call wall, user, system seconds and faults.
fn timed<T>(what: &str, n: usize, mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let (u0, s0, f0) = usage();
    let t = Instant::now();
    let mut last = None;
    for _ in 0..n {
        last = Some(f()?);
    }
    let (u1, s1, f1) = usage();
    let k = n as f64;
    eprintln!(
        "{what:<28} wall {:.4} s  user {:.4} s  sys {:.4} s  faults {:.0}",
        t.elapsed().as_secs_f64() / k,
        (u1 - u0) / k,
        (s1 - s0) / k,
        (f1 - f0) as f64 / k
    );
    last.ok_or_else(|| anyhow::anyhow!("n = 0"))
}

fn main() -> anyhow::Result<()> {
    rlsd::malloc::use_one_arena();
    tch::set_num_threads(1);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let dir = PathBuf::from(
        pos.first()
            .ok_or_else(|| anyhow::anyhow!("usage: MODEL_DIR [ITERS]"))?,
    );
    let iters: usize = pos.get(1).map_or(Ok(3), |s| s.parse())?;
    let model = LoadedModel::load(&dir, tch::Device::Cpu, tch::Kind::Float)?;
    let tok = model.tokenizer.as_ref().expect("tokenizer");
    let text = std::fs::read_to_string(dir.join("prompts.jsonl"))?;
    let mut prompts = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()).take(8) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let ex = Example {
            id: v["id"].as_str().unwrap_or("").into(),
            prompt: v["prompt"].as_str().unwrap_or("").into(),
            answer: v["answer"].as_str().unwrap_or("").into(),
            privileged: String::new(),
            context: vec![],
            extra: Default::default(),
            images: Vec::new(),
        };
        let ids = student_prompt_ids(tok, &ex)?;
        for _ in 0..8 {
            prompts.push(ids.clone());
        }
    }
    let opts = GenerateOptions {
        max_new_tokens: 48,
        temperature: 1.0,
        ..GenerateOptions::default()
    };
    let seeds = prompt_seeds(7, prompts.len());
    let (gens, prof) = timed("generate (64 x 48)", iters, || {
        Ok(generate_profiled(&model.lm, &prompts, &seeds, &opts, None)?)
    })?;
    eprintln!(
        "  profile (last): prefill {:.3} decode {:.3} sample {:.3} cache {:.3} stop {:.3}",
        prof.prefill_s, prof.decode_s, prof.sample_s, prof.cache_s, prof.stop_s
    );
    if flag("--gen-only") {
        return Ok(());
    }
    let samples: Vec<PromptResponse> = prompts
        .iter()
        .zip(&gens)
        .map(|(p, g)| PromptResponse {
            image_key: 0,
            prompt: p.clone(),
            response: g.tokens.clone(),
        })
        .collect();
    let rewards: Vec<f32> = (0..64)
        .map(|i| ((i * 7 + 3) % 5 < 2) as u8 as f32)
        .collect();
    let batch = TrainBatch {
        samples,
        sampling_logprobs: gens.iter().map(|g| g.logprobs.clone()).collect(),
        advantages: group_advantages(&rewards, 8, true)?,
        step: 1,
        lambda: 0.0,
        lr: 3e-4,
        temperature: 1.0,
        ..TrainBatch::default()
    };
    let optim = OptimConfig {
        lr: 3e-4,
        weight_decay: 0.01,
        max_grad_norm: 1.0,
        ..OptimConfig::default()
    };
    let policy = LoadedModel::load(&dir, tch::Device::Cpu, tch::Kind::Float)?;
    let mut tr = Trainer::new(policy, AlgoConfig::with_algo(rlsd::rlsd::Algo::Grpo), optim)?;
    train_step(&mut tr, &batch)?; // warm-up: moments exist afterwards
    let trim = flag("--trim");
    let st = timed("train_step", iters, || {
        let st = train_step(&mut tr, &batch)?;
        if trim {
            rlsd::malloc::trim();
        }
        Ok(st)
    })?;
    eprintln!("  train_positions {}", st.train_positions);
    timed("grad_norm (no clip)", iters, || {
        Ok(tr.optimizer.grad_norm()?)
    })?;
    timed("AdamW step", iters, || Ok(tr.optimizer.step(1e-9)?))?;
    Ok(())
}
