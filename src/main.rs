//! The `rlsd` command line. Thin: parse arguments, call the library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Train language models with RL from verifiable rewards and self-distilled token credit (RLSD).
#[derive(Debug, Parser)]
#[command(name = "rlsd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train with the actor runtime. With no arguments: the built-in task's base
    /// model, RLSD, on CPU, for a few minutes.
    Train {
        /// Run configuration (TOML); defaults to the paper's values on the built-in task.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Override a config key, e.g. `--set algo.lambda0=0.3` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Continue from a checkpoint folder.
        #[arg(long)]
        resume: Option<PathBuf>,
    },
    /// Supervised warm-up that produces the built-in task's base model.
    Pretrain {
        /// Pretrain configuration (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Override a key, e.g. `--set max_steps=200`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Print the libtorch build, visible devices, and run a tensor self-check.
    Info,
}

fn main() {
    rlsd::logging::init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train {
            config,
            set,
            resume,
        } => train(config, set, resume),
        Command::Pretrain { config, set } => pretrain(config, set),
        Command::Info => info(),
    }
}

fn train(config: Option<PathBuf>, set: Vec<String>, resume: Option<PathBuf>) -> Result<()> {
    let cfg = rlsd::config::RunConfig::load(config.as_deref(), &set)?;
    let out_dir = cfg.runtime.out_dir.clone();
    println!(
        "rlsd train: algo={:?} model={} steps={} batch={}x{} staleness={} -> {}",
        cfg.algo.algo,
        cfg.model.path,
        cfg.runtime.steps,
        cfg.rollout.batch_prompts,
        cfg.rollout.group_size,
        cfg.runtime.max_staleness,
        out_dir.display()
    );
    println!(
        "{:>5} {:>8} {:>8} {:>7} {:>7} {:>8} {:>7} {:>7}",
        "step", "reward", "acc", "lambda", "len", "w_clip", "gnorm", "sec"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let mut builder = rlsd::actors::Runtime::builder(cfg)
        .handle_ctrl_c(true)
        .on_step(|s| {
            println!(
                "{:>5} {:>8.3} {:>8.3} {:>7.3} {:>7.1} {:>8.3} {:>7.3} {:>7.2}",
                s.step,
                s.reward_mean,
                s.accuracy,
                s.lambda,
                s.response_len_mean,
                s.weight_clip_frac,
                s.grad_norm,
                s.timings.generate_s
                    + s.timings.verify_s
                    + s.timings.teacher_s
                    + s.timings.credit_s
                    + s.timings.train_s,
            )
        });
    if let Some(dir) = resume {
        builder = builder.resume(dir);
    }
    let report = rt.block_on(builder.run())?;
    let restarts: u32 = report.restarts.values().sum();
    println!(
        "done: {} steps, {} restarts, reason: {}",
        report.steps.len(),
        restarts,
        report.reason
    );
    println!(
        "metrics: {}  reward curve: {}",
        out_dir.join("metrics.jsonl").display(),
        out_dir.join("reward.svg").display()
    );
    if let Some(ck) = &report.last_checkpoint {
        println!("last checkpoint: {}", ck.display());
    }
    if report.failed {
        anyhow::bail!("run failed: {}", report.reason);
    }
    Ok(())
}

fn pretrain(config: Option<PathBuf>, set: Vec<String>) -> Result<()> {
    let cfg: rlsd::pretrain::PretrainConfig = rlsd::config::load_toml(config.as_deref(), &set)?;
    let r = rlsd::pretrain::pretrain(&cfg)?;
    println!(
        "pretrained {} parameters for {} steps ({} examples, final loss {:.4}) in {:.1}s",
        r.parameters, r.steps, r.examples_seen, r.final_loss, r.wall_seconds
    );
    println!(
        "held-out greedy accuracy: {:.1}% of {} problems; saved to {}",
        100.0 * r.heldout_accuracy,
        r.heldout_problems,
        r.out_dir.display()
    );
    Ok(())
}

fn info() -> Result<()> {
    println!("rlsd {}", env!("CARGO_PKG_VERSION"));
    println!("{}", rlsd::device::describe());
    let x = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    let y = (&x * &x).sum(tch::Kind::Float);
    println!("self-check: sum([1,2,3]^2) = {}", y.double_value(&[]));
    Ok(())
}
