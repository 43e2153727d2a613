//! The `rlsd` command line. Thin: parse arguments, call the library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use rlsd::commands::{compare, console, train, ModelChoice};
use std::path::PathBuf;

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
    /// A peft LoRA adapter folder to apply to the model (sets `model.adapter`).
    #[arg(long, value_name = "DIR")]
    adapter: Option<PathBuf>,
}

impl RunArgs {
    fn load(&self) -> Result<rlsd::config::RunConfig> {
        self.load_with_model(None)
    }

    /// [`RunArgs::load`] with `--model` as `model.path` (a config without
    /// `runtime.out_dir` then runs in `runs/<model name>`).
    fn load_with_model(&self, model: Option<&str>) -> Result<rlsd::config::RunConfig> {
        let mut set = self.set.clone();
        if let Some(dir) = &self.adapter {
            set.push(format!("model.adapter={}", dir.display()));
        }
        Ok(rlsd::config::RunConfig::load_with_model(
            self.config.as_deref(),
            &set,
            model,
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
    Train(TrainArgs),
    /// Supervised warm-up that produces the built-in task's base model.
    Pretrain(PretrainArgs),
    /// Show where one train step would put its credit: roll out a step's
    /// prompts, verify, score with the teacher, and colour every response token
    /// by `Ahat_t / A` (an HTML page, and ANSI text on the terminal).
    Inspect(InspectArgs),
    /// Accuracy and mean reward (greedy or sampled) on N prompts of the configured data.
    Eval(EvalArgs),
    /// The paper's comparison: GRPO, RLSD, OPSD, SDPO, GRPO+OPSD and CEPO from
    /// the same base model, same budget, several seeds, on-policy, with
    /// held-out validation; writes summary.json, accuracy.svg and results.md.
    Compare(CompareArgs),
    /// Sample responses to a prompt through the model's chat template.
    Generate(GenerateArgs),
    /// Draw runs' metrics: redraw one run's charts, or compare runs on one chart.
    ///
    /// Each input is a run folder (holding metrics.jsonl) or a metrics .jsonl
    /// file. With one: draw its reward and panel charts (reward.svg and
    /// panels.svg in a run folder, <stem>-reward.svg ... next to a file). With
    /// several, or with --out: draw --key of every run on one chart.
    Plot(PlotArgs),
    /// Predict peak memory per actor and device for a config, and say whether it fits.
    Plan(PlanArgs),
    /// Write a model (a checkpoint's, or `--model` with `--adapter`) as a
    /// Hugging Face folder; `--merge` folds a LoRA adapter into the weights.
    Export(ExportArgs),
    /// Write a run's report: one HTML file with the charts, the resolved
    /// config and sampled completions coloured by their token credit.
    Report(ReportArgs),
    /// Show the run configuration.
    Config(ConfigArgs),
    /// Print the libtorch build, visible devices, and run a tensor self-check.
    Info,
}

/// The arguments of `rlsd train`.
#[derive(Debug, clap::Args)]
struct TrainArgs {
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
}

/// The arguments of `rlsd pretrain`.
#[derive(Debug, clap::Args)]
struct PretrainArgs {
    /// Pretrain configuration (TOML).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Override a key, e.g. `--set max_steps=200`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// The arguments of `rlsd inspect`.
#[derive(Debug, clap::Args)]
struct InspectArgs {
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
}

/// The arguments of `rlsd eval`.
#[derive(Debug, clap::Args)]
struct EvalArgs {
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
}

/// The arguments of `rlsd compare`.
#[derive(Debug, clap::Args)]
struct CompareArgs {
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
}

/// The arguments of `rlsd generate`.
#[derive(Debug, clap::Args)]
struct GenerateArgs {
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
    /// An image to show a vision-language model, placed before the prompt
    /// (repeatable, in order).
    #[arg(long = "image", value_name = "FILE")]
    images: Vec<std::path::PathBuf>,
    /// Print one JSON object: the prompt's token ids and each response's
    /// text, token ids and per-token log-probs.
    #[arg(long)]
    json: bool,
    /// Tokenise the prompt as given, without the model's chat template.
    #[arg(long)]
    raw: bool,
}

/// The arguments of `rlsd plot`.
#[derive(Debug, clap::Args)]
struct PlotArgs {
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
}

/// The arguments of `rlsd plan`.
#[derive(Debug, clap::Args)]
struct PlanArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Prompt length (tokens) to assume.
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// Memory per device in GiB (default: `runtime.device_memory_gib`, else detected).
    #[arg(long)]
    device_memory_gib: Option<f64>,
    /// Plan each rank of a data-parallel job of N ranks (each on
    /// `runtime.optimizer_device`, with `runtime.placement`).
    #[arg(long, value_name = "N")]
    nproc: Option<usize>,
}

/// The arguments of `rlsd export`.
#[derive(Debug, clap::Args)]
struct ExportArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// Output folder (must not exist or be empty).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Merge the adapter (W + scale * B A) and write a plain model.
    #[arg(long)]
    merge: bool,
}

/// The arguments of `rlsd report`.
#[derive(Debug, clap::Args)]
struct ReportArgs {
    /// The run folder (`runtime.out_dir`).
    #[arg(value_name = "RUN_DIR")]
    run_dir: PathBuf,
    /// Where to write it (default RUN_DIR/report.html).
    #[arg(long, value_name = "FILE.html")]
    out: Option<PathBuf>,
}

/// The arguments of `rlsd config`.
#[derive(Debug, clap::Args)]
struct ConfigArgs {
    #[command(subcommand)]
    action: ConfigAction,
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
    rlsd::fault::short_injected_panics();
    rlsd::logging::init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {}", report(&e));
        std::process::exit(exit_code(&e));
    }
}

/// 2 for bad input the user can fix in the config, its overrides or a data
/// row (as clap uses for bad arguments); 1 for anything else.
fn exit_code(e: &anyhow::Error) -> i32 {
    let usage = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<rlsd::Error>(),
            Some(
                rlsd::Error::Config { .. }
                    | rlsd::Error::ConfigSyntax { .. }
                    | rlsd::Error::Data { .. }
                    | rlsd::Error::PromptTooLong { .. }
            )
        )
    });
    if usage {
        2
    } else {
        1
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
        Command::Train(a) => a.run(),
        Command::Pretrain(a) => a.run(),
        Command::Compare(a) => a.run(),
        Command::Inspect(a) => a.run(),
        Command::Eval(a) => a.run(),
        Command::Generate(a) => a.run(),
        Command::Plot(a) => a.run(),
        Command::Export(a) => a.run(),
        Command::Plan(a) => a.run(),
        Command::Report(a) => a.run(),
        Command::Config(a) => a.run(),
        Command::Info => Ok(rlsd::commands::console::info()?),
    }
}

impl TrainArgs {
    fn run(self) -> Result<()> {
        let TrainArgs {
            run,
            model,
            resume,
            overwrite,
            nproc,
            gpus,
        } = self;
        let cfg = run.load_with_model(model.as_deref())?;
        if nproc.is_some() || gpus.is_some() {
            // The ranks read the config again; a bad one or a placement
            // the job cannot hold is reported here once, before any rank.
            rlsd::distributed::launch::check_job(&cfg, nproc, gpus.as_deref())?;
            return Ok(rlsd::distributed::launch::launch_from_cli(
                nproc,
                gpus.as_deref(),
            )?);
        }
        match rlsd::distributed::DistEnv::from_env()? {
            Some(env) => Ok(train::train_rank(&cfg, &env, resume, overwrite)?),
            None => Ok(train::train(cfg, resume, overwrite)?),
        }
    }
}

impl PretrainArgs {
    fn run(self) -> Result<()> {
        let PretrainArgs { config, set } = self;
        Ok(train::pretrain(&rlsd::config::load_toml(
            config.as_deref(),
            &set,
        )?)?)
    }
}

impl CompareArgs {
    fn run(self) -> Result<()> {
        let CompareArgs {
            run,
            algos,
            seeds,
            steps,
            val_every,
            jobs,
            out,
            overwrite,
        } = self;
        let opts = compare::CompareOptions {
            algos: compare::parse_algos(&algos)?,
            seeds,
            steps,
            val_every,
            jobs: jobs as usize,
            out,
        };
        Ok(compare::compare_command(&run.load()?, &opts, overwrite)?)
    }
}

impl InspectArgs {
    fn run(self) -> Result<()> {
        let InspectArgs {
            run,
            run_args,
            model,
            prompts,
            step,
            out,
            json,
            quiet,
        } = self;
        let out = console::InspectOutput {
            page: &out,
            json: json.as_deref(),
            quiet,
        };
        match run {
            Some(dir) => Ok(console::inspect_run(&dir, step, out)?),
            None => Ok(console::inspect(
                &run_args.load()?,
                &model.choice()?,
                prompts,
                step.unwrap_or(1),
                out,
            )?),
        }
    }
}

impl EvalArgs {
    fn run(self) -> Result<()> {
        let EvalArgs {
            run,
            model,
            n,
            batch_size,
            max_new_tokens,
            temperature,
            seed,
            samples,
            out,
        } = self;
        let cfg = run.load()?;
        let opts = rlsd::run::evaluate::EvalOptions {
            max_new_tokens: max_new_tokens.map_or(cfg.rollout.max_new_tokens, |m| m as usize),
            batch_size: batch_size as usize,
            temperature,
            seed,
            samples: samples as usize,
            filters: Default::default(),
        };
        Ok(console::eval(
            &cfg,
            &model.choice()?,
            n as usize,
            &opts,
            out.as_deref(),
        )?)
    }
}

impl GenerateArgs {
    fn run(self) -> Result<()> {
        let GenerateArgs {
            run,
            model,
            prompt,
            n,
            temperature,
            max_new_tokens,
            top_k,
            top_p,
            seed,
            images,
            json,
            raw,
        } = self;
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
            raw,
        };
        let dir = choice.model_dir(&cfg)?;
        if rlsd::commands::generate_vl::is_vl_model(&dir) {
            return Ok(rlsd::commands::generate_vl::generate_vl(
                &cfg, &choice, &req, &images, json,
            )?);
        }
        if !images.is_empty() {
            anyhow::bail!(
                "--image needs a vision-language model; {} is text-only",
                dir.display()
            );
        }
        Ok(console::generate(&cfg, &choice, &req, json)?)
    }
}

impl ExportArgs {
    fn run(self) -> Result<()> {
        let ExportArgs {
            run,
            model,
            out,
            merge,
        } = self;
        let merged = rlsd::commands::export::export(&run.load()?, &model.choice()?, &out, merge)?;
        let what = if merged { " (adapter merged)" } else { "" };
        println!("wrote {}{what}", out.display());
        Ok(())
    }
}

impl PlanArgs {
    fn run(self) -> Result<()> {
        let PlanArgs {
            run,
            prompt_tokens,
            device_memory_gib,
            nproc,
        } = self;
        match nproc {
            Some(n) => Ok(rlsd::distributed::rank_memory::plan_job_command(
                &run.load()?,
                n,
                prompt_tokens,
                device_memory_gib,
            )?),
            None => Ok(rlsd::memory::plan_command(
                &run.load()?,
                prompt_tokens,
                device_memory_gib,
            )?),
        }
    }
}

impl ReportArgs {
    fn run(self) -> Result<()> {
        let ReportArgs { run_dir, out } = self;
        let out = out.unwrap_or_else(|| run_dir.join(rlsd::observe::report::REPORT_FILE));
        rlsd::observe::report::write_report(&run_dir, &out)?;
        println!("wrote {}", out.display());
        Ok(())
    }
}

impl ConfigArgs {
    fn run(self) -> Result<()> {
        let ConfigArgs {
            action: ConfigAction::Show { run },
        } = self;
        print!("{}", rlsd::config::show::show(&run.load()?));
        Ok(())
    }
}

impl PlotArgs {
    fn run(self) -> Result<()> {
        let PlotArgs {
            run_dirs,
            out,
            format,
            key,
            smooth,
        } = self;
        if run_dirs.len() > 1 || out.is_some() {
            let out = out.unwrap_or_else(|| PathBuf::from(format!("compare.{format}")));
            rlsd::observe::charts::compare_runs(&run_dirs, &key, smooth as usize, &out)?;
            println!("wrote {}", out.display());
            return Ok(());
        }
        for path in rlsd::observe::charts::plot_run(&run_dirs[0], format.parse()?)? {
            println!("wrote {}", path.display());
        }
        Ok(())
    }
}
