//! Benchmark (not a test): CPU time of the actor runtime over the plain
//! sequential loop on the same config (the built-in task's default run, or
//! any `--set` overrides), at `max_staleness` 0 and 1.
//!
//! CPU time (user + system of this process, from `getrusage`) is measured
//! rather than wall time because the machine this was written on is shared
//! with other builds; the cases run back to back, alternating, `ROUNDS`
//! times. Each case trains `STEPS` steps from the same start in a fresh
//! scratch folder. Usage:
//!
//! ```sh
//! cargo run --example bench_overhead -- STEPS ROUNDS [KEY=VALUE ...]
//! ```
//!
//! Prints one JSON line per case run and a summary table (docs/benchmarks/recovery.md).
//! libtorch runs one intra-op thread (and the script sets
//! `OMP_NUM_THREADS=1`): on a loaded machine, OpenMP threads spin-waiting
//! for a descheduled partner inflate CPU time by whole factors, which would
//! measure the neighbours instead of the runtime.

use anyhow::{Context, Result};
use rlsd::actors::Runtime;
use rlsd::config::RunConfig;
use rlsd::data::TeacherPrompt;
use rlsd::model::{parse_kind, LoadedModel};
use rlsd::run::sequential::run_sequential;
use rlsd::verify::build_verifier;

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes the struct it is given.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn config(steps: u64, staleness: u64, out: &std::path::Path, sets: &[String]) -> Result<RunConfig> {
    let mut all = vec![
        format!("runtime.steps={steps}"),
        format!("runtime.max_staleness={staleness}"),
        format!("runtime.out_dir=\"{}\"", out.display()),
        "checkpoint.every_steps=0".into(),
        "observe.tensorboard=false".into(),
        "observe.completions_per_step=0".into(),
    ];
    all.extend(sets.iter().cloned());
    Ok(RunConfig::load(None, &all)?)
}

/// CPU and wall seconds of one case.
fn run_case(case: &str, steps: u64, sets: &[String]) -> Result<(f64, f64)> {
    let scratch = tempfile::tempdir()?;
    let t0 = std::time::Instant::now();
    let c0 = cpu_seconds();
    match case {
        "seq" => {
            let cfg = config(steps, 0, scratch.path(), sets)?;
            let kind = parse_kind(&cfg.model.dtype)?;
            let dir = cfg.model.resolve()?;
            let dev = rlsd::device::parse_device(&cfg.runtime.optimizer_device)?;
            let policy = LoadedModel::load(&dir, dev, kind)?;
            let teacher = LoadedModel::load(&dir, dev, kind)?;
            let verifier = build_verifier(&cfg.verifier)?;
            let mut source = rlsd::run::source::from_config(&cfg)?;
            let template = TeacherPrompt::new(cfg.data.teacher_template.clone())?;
            let (_, stats) = run_sequential(
                &cfg,
                policy,
                teacher,
                verifier.as_ref(),
                source.as_mut(),
                &template,
            )?;
            anyhow::ensure!(stats.len() as u64 == steps, "seq trained {}", stats.len());
        }
        rt => {
            let staleness = rt.trim_start_matches("rt").parse::<u64>()?;
            let cfg = config(steps, staleness, scratch.path(), sets)?;
            let report = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(Runtime::builder(cfg).run())?;
            anyhow::ensure!(!report.failed, "{}", report.reason);
            anyhow::ensure!(
                report.steps.len() as u64 == steps,
                "{rt} trained {}",
                report.steps.len()
            );
        }
    }
    Ok((cpu_seconds() - c0, t0.elapsed().as_secs_f64()))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps: u64 = args.first().context("STEPS")?.parse()?;
    let rounds: usize = args.get(1).context("ROUNDS")?.parse()?;
    let sets = args[2..].to_vec();
    tch::set_num_threads(1);
    let cases = ["seq", "rt0", "rt1"];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        for (i, case) in cases.iter().enumerate() {
            let (c, w) = run_case(case, steps, &sets)?;
            println!(
                "{}",
                serde_json::json!({"round": round, "case": case, "steps": steps, "cpu_s": c, "wall_s": w})
            );
            cpu[i].push(c);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let seq = mean(&cpu[0]);
    println!("case  cpu_s/step  vs seq");
    for (i, case) in cases.iter().enumerate() {
        let m = mean(&cpu[i]);
        println!(
            "{case:<5} {:>10.4} {:>+7.1}%",
            m / steps as f64,
            (m / seq - 1.0) * 100.0
        );
    }
    Ok(())
}
