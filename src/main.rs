//! The `rlsd` command line. Thin: parse arguments, call the library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rlsd::commands::ModelChoice;
use std::path::{Path, PathBuf};

/// Train language models with RL from verifiable rewards and self-distilled token credit (RLSD).
#[derive(Debug, Parser)]
#[command(name = "rlsd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The run configuration every model command reads.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Run configuration (TOML); defaults to the built-in run (configs/builtin.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Override a config key, e.g. `--set algo.lambda0=0.3` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl RunArgs {
    fn load(&self) -> Result<rlsd::config::RunConfig> {
        Ok(rlsd::config::RunConfig::load(
            self.config.as_deref(),
            &self.set,
        )?)
    }
}

/// Which model a command uses instead of the config's `model.path`.
#[derive(Debug, clap::Args)]
struct ModelArgs {
    /// Model folder or Hugging Face id (`Org/Name`, from the local cache or
    /// downloaded) instead of the config's `model.path`.
    #[arg(long, value_name = "DIR_OR_ID")]
    model: Option<PathBuf>,
    /// Checkpoint folder (from `rlsd train`) whose model to use.
    #[arg(long, value_name = "DIR", conflicts_with = "model")]
    checkpoint: Option<PathBuf>,
}

impl ModelArgs {
    fn choice(self) -> Result<ModelChoice> {
        Ok(ModelChoice::from_flags(self.model, self.checkpoint)?)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train with the actor runtime. With no arguments: the built-in task's base
    /// model, RLSD, on CPU, for a few minutes.
    Train {
        #[command(flatten)]
        run: RunArgs,
        /// Model folder or Hugging Face id to train (sets `model.path`).
        #[arg(long, value_name = "DIR_OR_ID")]
        model: Option<String>,
        /// Continue a run: `latest` (the newest complete checkpoint in the
        /// run folder), a run folder, or one checkpoint folder.
        #[arg(long)]
        resume: Option<PathBuf>,
        /// Start over in a run folder that already holds a run (deletes its
        /// metrics and checkpoints).
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
        /// Data-parallel training on CPU: start N ranks of this binary and
        /// supervise them (docs/DISTRIBUTED.md).
        #[arg(long, value_name = "N", conflicts_with = "gpus")]
        nproc: Option<usize>,
        /// Data-parallel training on these GPUs, one rank each (e.g. `0,1`).
        #[arg(long, value_name = "LIST")]
        gpus: Option<String>,
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
    /// Show where one train step would put its credit: roll out a step's
    /// prompts, verify, score with the teacher, and colour every response token
    /// by `Ahat_t / A` (an HTML page, and ANSI text on the terminal).
    Inspect {
        #[command(flatten)]
        run_args: RunArgs,
        #[command(flatten)]
        model: ModelArgs,
        /// Prompts to roll out (default: 2, or `rollout.batch_prompts` if smaller;
        /// each gets `rollout.group_size` responses).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        prompts: Option<u64>,
        /// The step the batch stands for (sets lambda and the sampling seed;
        /// default 1). With --run: the logged step to show (default the last).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        step: Option<u64>,
        /// Show a step that a training run logged to DIR/completions.jsonl
        /// instead of rolling out a new one (no model is loaded).
        #[arg(long, value_name = "DIR")]
        run: Option<PathBuf>,
        /// Where to write the HTML page.
        #[arg(long, value_name = "FILE.html", default_value = "inspect.html")]
        out: PathBuf,
        /// Also write the numbers (tokens, Ahat, w, delta per response) as JSON.
        #[arg(long, value_name = "FILE.json")]
        json: Option<PathBuf>,
        /// Don't print the coloured tokens to the terminal.
        #[arg(long)]
        quiet: bool,
    },
    /// Accuracy and mean reward (greedy or sampled) on N prompts of the configured data.
    Eval {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        model: ModelArgs,
        /// Prompts to evaluate (the first N of the data, in file order).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        n: u64,
        /// Sequences generated together.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
        batch_size: u64,
        /// Most new tokens per response (default: `rollout.max_new_tokens`).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max_new_tokens: Option<u64>,
        /// Sampling temperature; 0 (the default) decodes greedily. Use the run's
        /// `rollout.temperature` to measure the reward of the policy's own samples.
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        /// Sampling seed (with a temperature above 0).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Responses per prompt (K); above 1 reports pass@k and maj@K and
        /// needs --temperature above 0.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        samples: u64,
        /// Write the report (summary and every response) as JSON.
        #[arg(long, value_name = "FILE.json")]
        out: Option<PathBuf>,
    },
    /// The paper's comparison: GRPO, RLSD, OPSD, SDPO, GRPO+OPSD and CEPO from
    /// the same base model, same budget, several seeds, on-policy, with
    /// held-out validation; writes summary.json, accuracy.svg and results.md.
    Compare {
        #[command(flatten)]
        run: RunArgs,
        /// Algorithms, comma-separated, in table order.
        #[arg(long, default_value = "grpo,rlsd,opsd,sdpo,grpo+opsd,cepo")]
        algos: String,
        /// Seeds, comma-separated.
        #[arg(long, default_value = "0,1,2", value_delimiter = ',')]
        seeds: Vec<u64>,
        /// Training steps of every run.
        #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u64).range(1..))]
        steps: u64,
        /// Validate before step 1 and every this many steps.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        val_every: u64,
        /// Runs at a time (each on one libtorch thread).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
        jobs: u64,
        /// Output folder.
        #[arg(long, default_value = "runs/compare")]
        out: PathBuf,
        /// Replace an earlier comparison in --out.
        #[arg(long)]
        overwrite: bool,
    },
    /// Sample responses to a prompt through the model's chat template.
    Generate {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        model: ModelArgs,
        /// The user message.
        #[arg(long)]
        prompt: String,
        /// Responses to sample.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        n: u64,
        /// Sampling temperature; 0 decodes greedily.
        #[arg(long, default_value_t = 1.0)]
        temperature: f64,
        /// Most new tokens per response (default: the model's own limit:
        /// `max_new_tokens` of its generation_config.json, else the room left
        /// in its context window; generation also stops at EOS).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max_new_tokens: Option<u64>,
        /// Top-k cut-off (0 = off).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// Nucleus mass (1.0 = off).
        #[arg(long, default_value_t = 1.0)]
        top_p: f64,
        /// Sampling seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Draw runs' metrics: redraw one run's charts, or compare runs on one chart.
    ///
    /// Each input is a run folder (holding metrics.jsonl) or a metrics .jsonl
    /// file. With one: draw its reward and panel charts (reward.svg and
    /// panels.svg in a run folder, <stem>-reward.svg ... next to a file). With
    /// several, or with --out: draw --key of every run on one chart.
    Plot {
        /// Run folders (`runtime.out_dir`) or metrics .jsonl files.
        #[arg(required = true, value_name = "RUN_DIR|FILE")]
        run_dirs: Vec<PathBuf>,
        /// Comparison chart to write, .svg or .png (default compare.<format>
        /// when several runs are given).
        #[arg(long, value_name = "FILE.svg|FILE.png")]
        out: Option<PathBuf>,
        /// Image format of a single run's charts (and of the default comparison file).
        #[arg(long, default_value = "svg", value_parser = ["svg", "png"])]
        format: String,
        /// Metric to compare (any numeric key of metrics.jsonl, dotted for nested ones).
        #[arg(long, default_value = "reward_mean")]
        key: String,
        /// Smooth the comparison by the mean of the last N steps.
        #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..))]
        smooth: u64,
    },
    /// Predict peak memory per actor and device for a config, and say whether it fits.
    Plan {
        #[command(flatten)]
        run: RunArgs,
        /// Prompt length (tokens) to assume.
        #[arg(long, default_value_t = 512)]
        prompt_tokens: usize,
        /// Memory per device in GiB (default: `runtime.device_memory_gib`, else detected).
        #[arg(long)]
        device_memory_gib: Option<f64>,
    },
    /// Write a run's report: one HTML file with the charts, the resolved
    /// config and sampled completions coloured by their token credit.
    Report {
        /// The run folder (`runtime.out_dir`).
        #[arg(value_name = "RUN_DIR")]
        run_dir: PathBuf,
        /// Where to write it (default RUN_DIR/report.html).
        #[arg(long, value_name = "FILE.html")]
        out: Option<PathBuf>,
    },
    /// Show the run configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Print the libtorch build, visible devices, and run a tensor self-check.
    Info,
}

/// `rlsd config ...`.
#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print the resolved run configuration (the file, the built-in defaults
    /// for every key it leaves out, and the --set overrides) as TOML.
    Show {
        #[command(flatten)]
        run: RunArgs,
    },
}

fn main() {
    rlsd::malloc::use_one_arena();
    rlsd::actors::fault::short_injected_panics();
    rlsd::logging::init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {}", report(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, skipping a cause whose text the
/// message before it already holds (library errors embed their source).
fn report(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let s = cause.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
    }
    out
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train {
            run,
            model,
            resume,
            overwrite,
            nproc,
            gpus,
        } => {
            if nproc.is_some() || gpus.is_some() {
                return Ok(rlsd::dist::launch::launch_from_cli(nproc, gpus.as_deref())?);
            }
            if let Some(env) = rlsd::dist::DistEnv::from_env()? {
                let mut cfg = run.load()?;
                if let Some(m) = model {
                    cfg.model.path = m;
                }
                let r =
                    rlsd::dist::train_loop::train_rank(&cfg, &env, overwrite, resume.as_deref())?;
                println!(
                    "rank {} of {}: {} steps, weights {}",
                    r.rank, r.world, r.steps, r.weights_sha256
                );
                return Ok(());
            }
            train(&run, model, resume, overwrite)
        }
        Command::Pretrain { config, set } => pretrain(config, set),
        Command::Compare {
            run,
            algos,
            seeds,
            steps,
            val_every,
            jobs,
            out,
            overwrite,
        } => {
            let cfg = run.load()?;
            rlsd::commands::compare::check_out_dir(&out, overwrite)?;
            let opts = rlsd::commands::compare::CompareOptions {
                algos: rlsd::commands::compare::parse_algos(&algos)?,
                seeds,
                steps,
                val_every,
                jobs: jobs as usize,
                out: out.clone(),
            };
            let runs = rlsd::commands::compare::compare(&cfg, &opts)?;
            let failed = runs.iter().filter(|r| r.error.is_some()).count();
            println!(
                "{} runs ({failed} failed); wrote {}",
                runs.len(),
                out.join("results.md").display()
            );
            if failed > 0 {
                anyhow::bail!("{failed} of {} runs failed (see results.md)", runs.len());
            }
            Ok(())
        }
        Command::Inspect {
            run: Some(dir),
            step,
            out,
            json,
            quiet,
            ..
        } => inspect_logged(&dir, step, &out, json.as_deref(), quiet),
        Command::Inspect {
            run: None,
            run_args,
            model,
            prompts,
            step,
            out,
            json,
            quiet,
        } => {
            let cfg = run_args.load()?;
            let choice = model.choice()?;
            inspect(
                &cfg,
                &choice,
                prompts,
                step.unwrap_or(1),
                &out,
                json.as_deref(),
                quiet,
            )
        }
        Command::Eval {
            run,
            model,
            n,
            batch_size,
            max_new_tokens,
            temperature,
            seed,
            samples,
            out,
        } => {
            let cfg = run.load()?;
            let choice = model.choice()?;
            let opts = rlsd::commands::eval::EvalOptions {
                max_new_tokens: max_new_tokens.map_or(cfg.rollout.max_new_tokens, |m| m as usize),
                batch_size: batch_size as usize,
                temperature,
                seed,
                samples: samples as usize,
            };
            eval(&cfg, &choice, n as usize, &opts, out.as_deref())
        }
        Command::Generate {
            run,
            model,
            prompt,
            n,
            temperature,
            max_new_tokens,
            top_k,
            top_p,
            seed,
        } => {
            let cfg = run.load()?;
            let choice = model.choice()?;
            let limits =
                rlsd::commands::generate::GenerationLimits::from_dir(&choice.model_dir(&cfg)?)?;
            let req = rlsd::commands::generate::GenerateRequest {
                prompt,
                n: n as usize,
                temperature,
                max_new_tokens: max_new_tokens.map(|m| m as usize),
                limits,
                top_k,
                top_p,
                seed,
            };
            generate(&cfg, &choice, &req)
        }
        Command::Plot {
            run_dirs,
            out,
            format,
            key,
            smooth,
        } if run_dirs.len() > 1 || out.is_some() => {
            let out = out.unwrap_or_else(|| PathBuf::from(format!("compare.{format}")));
            rlsd::commands::plot::compare_runs(&run_dirs, &key, smooth as usize, &out)?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Plot {
            run_dirs, format, ..
        } => {
            for path in rlsd::commands::plot::plot_run(&run_dirs[0], format.parse()?)? {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Plan {
            run,
            prompt_tokens,
            device_memory_gib,
        } => Ok(rlsd::plan::plan_command(
            &run.load()?,
            prompt_tokens,
            device_memory_gib,
        )?),
        Command::Report { run_dir, out } => {
            let out = out.unwrap_or_else(|| run_dir.join(rlsd::observe::report::REPORT_FILE));
            rlsd::observe::report::write_report(&run_dir, &out)?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Config {
            action: ConfigAction::Show { run },
        } => {
            print!("{}", run.load()?.to_toml());
            Ok(())
        }
        Command::Info => info(),
    }
}

fn inspect(
    cfg: &rlsd::config::RunConfig,
    choice: &ModelChoice,
    prompts: Option<u64>,
    step: u64,
    out: &Path,
    json: Option<&Path>,
    quiet: bool,
) -> Result<()> {
    use rlsd::commands::inspect::{inspect_step, render_page, render_terminal};
    let model = rlsd::commands::load_model(cfg, choice, &cfg.runtime.sampler_device)?;
    let verifier = rlsd::verify::build_verifier(&cfg.verifier)?;
    let mut source = rlsd::actors::source::from_config(cfg)?;
    let n = prompts.map_or(cfg.rollout.batch_prompts.min(2), |p| p as usize);
    let examples = source.next_batch(n)?;
    let ins = inspect_step(cfg, &model, &model, verifier.as_ref(), examples, step)?;
    if !quiet {
        print!("{}", render_terminal(&ins)?);
    }
    let title = format!(
        "RLSD token credit: {} at step {} ({})",
        ins.algo,
        step,
        choice.model_dir(cfg)?.display()
    );
    write_file(out, &render_page(&ins, &title)?)?;
    if let Some(path) = json {
        write_file(path, &serde_json::to_string_pretty(&ins)?)?;
    }
    println!(
        "{} responses to {} prompts: accuracy {:.3}, mean reward {:.3}; page: {}",
        ins.responses.len(),
        ins.examples.len(),
        ins.accuracy(),
        ins.reward_mean(),
        out.display()
    );
    Ok(())
}

/// `rlsd inspect --run DIR`: render a step logged in DIR/completions.jsonl.
fn inspect_logged(
    dir: &Path,
    step: Option<u64>,
    out: &Path,
    json: Option<&Path>,
    quiet: bool,
) -> Result<()> {
    use rlsd::commands::inspect::{inspect_logged, render_page, render_terminal};
    let ins = inspect_logged(dir, step)?;
    if !quiet {
        print!("{}", render_terminal(&ins)?);
    }
    let title = format!(
        "RLSD token credit: {} at step {} ({})",
        ins.algo,
        ins.step,
        dir.display()
    );
    write_file(out, &render_page(&ins, &title)?)?;
    if let Some(path) = json {
        write_file(path, &serde_json::to_string_pretty(&ins)?)?;
    }
    println!(
        "step {}: {} logged responses to {} prompts: accuracy {:.3}, mean reward {:.3}; page: {}",
        ins.step,
        ins.responses.len(),
        ins.examples.len(),
        ins.accuracy(),
        ins.reward_mean(),
        out.display()
    );
    Ok(())
}

fn eval(
    cfg: &rlsd::config::RunConfig,
    choice: &ModelChoice,
    n: usize,
    opts: &rlsd::commands::eval::EvalOptions,
    out: Option<&Path>,
) -> Result<()> {
    use rlsd::commands::eval::{evaluate, progress_bar};
    let model = rlsd::commands::load_model(cfg, choice, &cfg.runtime.sampler_device)?;
    let verifier = rlsd::verify::build_verifier(&cfg.verifier)?;
    let data = rlsd::data::Dataset::from_config(&cfg.data)?;
    let take = n.min(data.len());
    if take < n {
        eprintln!(
            "note: {} has {} examples; evaluating all of them",
            data.source(),
            data.len()
        );
    }
    let examples = &data.examples()[..take];
    let bar = progress_bar(take);
    let mut report = evaluate(&model, examples, verifier.as_ref(), opts, Some(&bar))?;
    bar.finish_and_clear();
    report.model = choice.model_dir(cfg)?.display().to_string();
    report.data = data.source().to_string();
    println!(
        "eval: {} prompts of {} with {} ({}): accuracy {:.4}, mean reward {:.4}, mean length {:.1} tokens, {:.0}% stopped on EOS, {:.1}s",
        report.n,
        report.data,
        report.model,
        if opts.temperature == 0.0 {
            "greedy".to_string()
        } else {
            format!("sampled at T={}, seed {}", opts.temperature, opts.seed)
        },
        report.accuracy,
        report.reward_mean,
        report.response_len_mean,
        100.0 * report.stopped_on_eos_frac,
        report.wall_s
    );
    if report.samples > 1 {
        let pass: Vec<String> = report
            .pass_at_k
            .iter()
            .map(|(k, p)| format!("pass@{k} {p:.4}"))
            .collect();
        println!(
            "eval: {} samples per prompt: {}, maj@{} {:.4}",
            report.samples,
            pass.join(", "),
            report.samples,
            report.maj_at_k
        );
    }
    if let Some(path) = out {
        write_file(path, &serde_json::to_string_pretty(&report)?)?;
        println!("report: {}", path.display());
    }
    Ok(())
}

fn generate(
    cfg: &rlsd::config::RunConfig,
    choice: &ModelChoice,
    req: &rlsd::commands::generate::GenerateRequest,
) -> Result<()> {
    let model = rlsd::commands::load_model(cfg, choice, &cfg.runtime.sampler_device)?;
    let outs = rlsd::commands::generate::generate_text(&model, req)?;
    for (i, g) in outs.iter().enumerate() {
        println!(
            "--- response {} ({} tokens, {}, logprob {:.3})",
            i + 1,
            g.tokens,
            if g.stopped_on_eos {
                "eos"
            } else {
                "max tokens"
            },
            g.logprob
        );
        println!("{}", g.text);
    }
    Ok(())
}

/// Write a file, creating its folder; errors name the path.
fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn train(
    run: &RunArgs,
    model: Option<String>,
    resume: Option<PathBuf>,
    overwrite: bool,
) -> Result<()> {
    use std::io::IsTerminal;
    let mut cfg = run.load()?;
    if let Some(m) = model {
        cfg.model.path = m;
    }
    let out_dir = cfg.runtime.out_dir.clone();
    println!(
        "rlsd train: algo={} model={} steps={} batch={}x{} staleness={} -> {}",
        cfg.algo.algo.name(),
        cfg.model.path,
        cfg.runtime.steps,
        cfg.rollout.batch_prompts,
        cfg.rollout.group_size,
        cfg.runtime.max_staleness,
        out_dir.display()
    );
    let progress = std::sync::Arc::new(std::sync::Mutex::new(rlsd::progress::TrainProgress::new(
        cfg.algo.algo,
        cfg.runtime.steps,
        std::io::stderr().is_terminal(),
        std::io::stdout().is_terminal(),
    )));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let mut builder = rlsd::actors::Runtime::builder(cfg)
        .handle_ctrl_c(true)
        .overwrite(overwrite)
        .on_step({
            let progress = progress.clone();
            move |s| {
                if let Ok(mut p) = progress.lock() {
                    p.step(s);
                }
            }
        });
    if let Some(dir) = resume {
        builder = builder.resume(dir);
    }
    let report = rt.block_on(builder.run());
    if let Ok(mut p) = progress.lock() {
        p.finish();
    }
    let report = report?;
    let restarts: u32 = report.restarts.values().sum();
    println!(
        "done: {} steps, {} restarts, reason: {}",
        report.steps.len(),
        restarts,
        report.reason
    );
    println!(
        "metrics: {}  report: {}",
        out_dir.join("metrics.jsonl").display(),
        out_dir.join(rlsd::observe::report::REPORT_FILE).display()
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
    let report = r.out_dir.join("pretrain_report.json");
    std::fs::write(&report, serde_json::to_string_pretty(&r)? + "\n")
        .with_context(|| format!("writing {}", report.display()))?;
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
    println!(
        "held-out mean log-prob of the answer tokens: teacher {:.3}, student {:.3}",
        r.heldout_teacher_answer_logprob, r.heldout_student_answer_logprob
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
