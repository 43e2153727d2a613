//! Benchmark (not a test): verifier throughput on the built-in task's
//! responses, in-process (`math`) against the `command` verifier, both one
//! process per response (the one-shot protocol) and one long-lived worker
//! (`worker = true`, the JSON-lines protocol, examples/python_env).
//!
//! ```sh
//! cargo run --release --example bench_verifier -- [N] [THREADS] > docs/benchmarks/verifier-DATE.json
//! ```
//!
//! Responses are the task's worked solutions (half with a slipped step, so
//! half are wrong). Each case scores them on `THREADS` blocking threads as the
//! verifier pool does (default 2, `runtime.verifier_workers`'s default); the
//! worker is also driven through `verify_group` (a whole group of 8 in flight
//! at once). Tokens are counted with the built-in task's tokenizer
//! (assets/tiny-arith). Prints one JSON object.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use rand::SeedableRng;
use rlsd::data::{ArithmeticTask, Example, TaskConfig};
use rlsd::verify::{
    CommandConfig, CommandVerifier, Extraction, MathConfig, MathVerifier, Verifier,
};

/// Score every (example, response) on `threads` threads; seconds taken.
fn run_pool(
    v: Arc<dyn Verifier>,
    items: Arc<Vec<(Example, String)>>,
    threads: usize,
) -> (f64, f32) {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (v, items, next) = (v.clone(), items.clone(), next.clone());
            std::thread::spawn(move || {
                let mut total = 0.0f32;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((ex, r)) = items.get(i) else { break };
                    total += v.verify(ex, r).reward;
                }
                total
            })
        })
        .collect();
    let total: f32 = handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum();
    (t0.elapsed().as_secs_f64(), total)
}

fn case(name: &str, n: usize, tokens: usize, secs: f64, reward_sum: f32) -> serde_json::Value {
    serde_json::json!({
        "case": name,
        "responses": n,
        "seconds": secs,
        "responses_per_s": n as f64 / secs,
        "tokens_per_s": tokens as f64 / secs,
        "mean_reward": reward_sum / n as f32,
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(4000);
    let threads: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let root = env!("CARGO_MANIFEST_DIR");

    let task = ArithmeticTask::new(TaskConfig::default())?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // Groups of G = 8 responses to one problem, as a GRPO step samples them.
    let mut items: Vec<(Example, String)> = Vec::with_capacity(n);
    while items.len() < n {
        let p = task.problem(&mut rng);
        let ex = p.to_example(format!("bench-{}", items.len() / 8));
        for g in 0..8 {
            let text = if g % 2 == 0 {
                p.solution()
            } else {
                p.flawed_solution(&mut rng).0
            };
            items.push((ex.clone(), text));
        }
    }
    items.truncate(n);
    let tok = tokenizers::Tokenizer::from_file(format!("{root}/assets/tiny-arith/tokenizer.json"))
        .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
    let lens: Vec<usize> = items
        .iter()
        .map(|(_, r)| tok.encode(r.as_str(), false).map(|e| e.len()).unwrap_or(0))
        .collect();
    let chars_per = |k: usize| lens[..k].iter().sum::<usize>();
    let items = Arc::new(items);
    let mut cases = Vec::new();

    let math: Arc<dyn Verifier> = Arc::new(MathVerifier::new(MathConfig {
        // As configs/builtin.toml: `Answer: n` phrases.
        extraction: Extraction::Phrase,
        ..MathConfig::default()
    })?);
    let (s, r) = run_pool(math, items.clone(), threads);
    cases.push(case("in-process math", n, chars_per(n), s, r));

    // One process per response is slow: a fortieth of the responses is plenty.
    let few = (n / 40).max(1);
    let once: Arc<dyn Verifier> = Arc::new(CommandVerifier::new(CommandConfig {
        program: "python3".into(),
        args: vec![format!("{root}/tests/fixtures/verify/good.py")],
        timeout_ms: 20_000,
        worker: false,
    })?);
    let subset = Arc::new(items[..few].to_vec());
    let (s, r) = run_pool(once, subset, threads);
    cases.push(case(
        "command, process per response",
        few,
        chars_per(few),
        s,
        r,
    ));

    let worker_cfg = CommandConfig {
        program: "python3".into(),
        args: vec![format!("{root}/examples/python_env/calculator_env.py")],
        timeout_ms: 20_000,
        worker: true,
    };
    let worker = CommandVerifier::new(worker_cfg.clone())?;
    // Start the process before timing (the first request pays python's start).
    worker.verify(&items[0].0, &items[0].1);
    let (s, r) = run_pool(Arc::new(worker), items.clone(), threads);
    cases.push(case(
        "command, worker (pool threads)",
        n,
        chars_per(n),
        s,
        r,
    ));

    let worker = CommandVerifier::new(worker_cfg)?;
    worker.verify(&items[0].0, &items[0].1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let t0 = Instant::now();
    let total: f32 = rt.block_on(async {
        let mut total = 0.0;
        for group in items.chunks(8) {
            let responses: Vec<String> = group.iter().map(|(_, r)| r.clone()).collect();
            let v = worker.verify_group(&group[0].0, &responses).await;
            total += v.iter().map(|v| v.reward).sum::<f32>();
        }
        total
    });
    cases.push(case(
        "command, worker (verify_group of 8)",
        n,
        chars_per(n),
        t0.elapsed().as_secs_f64(),
        total,
    ));

    let out = serde_json::json!({
        "bench": "verifier throughput on the built-in task",
        "threads": threads,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cases": cases,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
