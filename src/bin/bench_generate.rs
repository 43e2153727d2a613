//! Generation benchmark for long, uneven responses: rlsd's continuous
//! batching against static batching (rlsd's own, and Hugging Face
//! transformers' `generate`) on the same random Qwen2-shaped model.
//!
//! Workload: `--prompts` random prompts of `--prompt-len` tokens, sampled at
//! temperature 1 with a set of "stop" token ids holding about `1 / --mean` of
//! the vocabulary (every id `= 7 mod mean`), so each step stops a row with
//! probability about `1 / mean`: response lengths are geometric, most short
//! and a tail several times the mean, capped at `--max-new` (10x the mean by
//! default). At most `--rows` rows decode at once in every variant:
//!
//! - `rlsd continuous`: all prompts in one call, a KV budget of `--rows` rows;
//!   a finished row's slot takes the next prompt at the next step;
//! - `rlsd static`: chunks of `--rows` prompts, one call each (a chunk's
//!   finished rows leave its batch, but the next chunk waits for its longest);
//! - `transformers static`: `scripts/bench_generate_hf.py`, chunks of `--rows`
//!   through `model.generate` (finished rows keep computing padding).
//!
//! Tokens per second count generated tokens up to and including the stop
//! token. Prints one JSON object (also written to `--out`).

mod bench_common;

use anyhow::{bail, Context, Result};
use bench_common::cpu_seconds;
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rlsd::model::random::random_qwen2;
use rlsd::model::{
    generate_profiled, kv_bytes_per_position, prompt_seeds, GenerateOptions, GenerationProfile,
};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;
use tch::Device;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Generation with uneven lengths: continuous vs static batching vs transformers")]
struct Args {
    /// Vocabulary size.
    #[arg(long, default_value_t = 151_936)]
    vocab: i64,
    /// Hidden size (heads of 64, KV heads = heads / 2, MLP 4x).
    #[arg(long, default_value_t = 256)]
    hidden: i64,
    /// Decoder layers.
    #[arg(long, default_value_t = 2)]
    layers: i64,
    /// Prompts generated.
    #[arg(long, default_value_t = 64)]
    prompts: usize,
    /// Tokens per prompt.
    #[arg(long, default_value_t = 32)]
    prompt_len: usize,
    /// Mean response length the stop-id set aims at.
    #[arg(long, default_value_t = 32)]
    mean: i64,
    /// Most tokens per response.
    #[arg(long, default_value_t = 320)]
    max_new: usize,
    /// Rows decoding at once.
    #[arg(long, default_value_t = 16)]
    rows: usize,
    /// Intra-op threads for both sides.
    #[arg(long, default_value_t = 1)]
    threads: i32,
    /// Python with torch + transformers (`PYTHONPATH` is passed through).
    #[arg(long, default_value = "python3")]
    python: String,
    /// Skip the transformers side.
    #[arg(long)]
    skip_hf: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench_generate.json")]
    out: PathBuf,
}

fn profile_json(p: &GenerationProfile) -> Value {
    json!({
        "prefill_s": p.prefill_s, "decode_s": p.decode_s, "sample_s": p.sample_s,
        "cache_s": p.cache_s, "stop_s": p.stop_s, "steps": p.steps,
        "row_steps": p.row_steps, "tokens": p.tokens, "prefills": p.prefills,
    })
}

fn add(a: &mut GenerationProfile, b: &GenerationProfile) {
    a.prefill_s += b.prefill_s;
    a.decode_s += b.decode_s;
    a.sample_s += b.sample_s;
    a.cache_s += b.cache_s;
    a.stop_s += b.stop_s;
    a.steps += b.steps;
    a.row_steps += b.row_steps;
    a.tokens += b.tokens;
    a.prefills += b.prefills;
}

fn lengths_json(lens: &mut [usize]) -> Value {
    lens.sort_unstable();
    let q = |f: f64| lens[((lens.len() - 1) as f64 * f).round() as usize];
    json!({
        "total": lens.iter().sum::<usize>(), "mean": lens.iter().sum::<usize>() as f64 / lens.len() as f64,
        "median": q(0.5), "p90": q(0.9), "max": q(1.0), "min": q(0.0),
    })
}

fn main() -> Result<()> {
    let a = Args::parse();
    tch::set_num_threads(a.threads);
    if a.mean < 2 || a.rows == 0 || a.prompts == 0 {
        bail!("--mean must be >= 2, --rows and --prompts >= 1");
    }
    let model = random_qwen2(a.vocab, a.hidden, a.layers, Device::Cpu, 3)?;
    let stop_ids: Vec<i64> = (0..a.vocab).filter(|t| t % a.mean == 7).collect();
    let mut rng = StdRng::seed_from_u64(11);
    let prompts: Vec<Vec<i64>> = (0..a.prompts)
        .map(|_| {
            (0..a.prompt_len)
                .map(|_| loop {
                    let t = rng.random_range(0..a.vocab);
                    if t % a.mean != 7 {
                        break t;
                    }
                })
                .collect()
        })
        .collect();
    let seeds = prompt_seeds(1, prompts.len());
    let base = GenerateOptions {
        max_new_tokens: a.max_new,
        eos_ids: stop_ids.clone(),
        pad_id: Some(0),
        ..Default::default()
    };
    let per_row = kv_bytes_per_position(&model.lm) * (a.prompt_len + a.max_new) as u64;
    let mut out = json!({
        "shape": {"vocab": a.vocab, "hidden": a.hidden, "layers": a.layers},
        "workload": {"prompts": a.prompts, "prompt_len": a.prompt_len, "mean": a.mean,
                     "max_new": a.max_new, "rows": a.rows, "stop_ids": stop_ids.len(),
                     "threads": a.threads},
    });

    // Warm-up (allocator, kernels).
    generate_profiled(&model.lm, &prompts[..2], &seeds[..2], &base, None)?;

    let run = |name: &str, chunk: usize, budget: u64| -> Result<Value> {
        let o = GenerateOptions {
            kv_cache_bytes: budget,
            ..base.clone()
        };
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let mut prof = GenerationProfile::default();
        let mut lens = vec![];
        for (p, s) in prompts.chunks(chunk).zip(seeds.chunks(chunk)) {
            let (gens, pr) = generate_profiled(&model.lm, p, s, &o, None)?;
            lens.extend(gens.iter().map(|g| g.tokens.len()));
            add(&mut prof, &pr);
        }
        let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        let tokens: usize = lens.iter().sum();
        eprintln!("{name}: {tokens} tokens in {wall:.1} s wall, {cpu:.1} s CPU");
        Ok(json!({
            "wall_s": wall, "cpu_s": cpu,
            "tokens_per_s": tokens as f64 / wall, "tokens_per_cpu_s": tokens as f64 / cpu,
            "lengths": lengths_json(&mut lens), "profile": profile_json(&prof),
        }))
    };
    out["rlsd_continuous"] = run("rlsd continuous", prompts.len(), per_row * a.rows as u64)?;
    out["rlsd_static"] = run("rlsd static", a.rows, 0)?;
    // Peak of this process (the rlsd variants; transformers runs in its own).
    out["rlsd_peak_rss_gib"] = json!(bench_common::status_bytes("VmHWM:") / f64::from(1u32 << 30));

    if !a.skip_hf {
        let dir = std::env::temp_dir().join(format!("rlsd-bench-generate-{}", std::process::id()));
        model.save(&dir)?;
        let work = dir.join("workload.json");
        std::fs::write(
            &work,
            json!({"prompts": prompts, "stop_ids": stop_ids, "max_new": a.max_new,
                   "rows": a.rows, "threads": a.threads})
            .to_string(),
        )?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench_generate_hf.py");
        let res = std::process::Command::new(&a.python)
            .arg(script)
            .arg(&dir)
            .arg(&work)
            .output()
            .with_context(|| format!("running {} {script}", a.python))?;
        let _ = std::fs::remove_dir_all(&dir);
        if !res.status.success() {
            bail!(
                "transformers side failed: {}",
                String::from_utf8_lossy(&res.stderr)
            );
        }
        let line = String::from_utf8_lossy(&res.stdout);
        let hf: Value = serde_json::from_str(line.trim().lines().last().unwrap_or(""))
            .context("parsing the transformers side's JSON")?;
        eprintln!("transformers static: {hf}");
        out["transformers_static"] = hf;
    }
    let text = serde_json::to_string_pretty(&out)?;
    std::fs::write(&a.out, &text)?;
    println!("{text}");
    Ok(())
}
