//! `rlsd train` and `rlsd pretrain` as the binary runs them: the actor
//! runtime with a progress display, one rank of a data-parallel run, and the
//! base model's pretraining, each printing its summary.

use crate::config::RunConfig;
use crate::distributed::DistEnv;
use crate::error::{Error, Result};
use crate::pretrain::PretrainConfig;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Train with the actor runtime, drawing progress on the terminal; on
/// `resume`, continue the run in that folder. A run that ends failed is an
/// error carrying its reason (what was committed stays on disk).
pub fn train(cfg: RunConfig, resume: Option<PathBuf>, overwrite: bool) -> Result<()> {
    if cfg.runtime.placement == crate::config::Placement::Split {
        return Err(Error::config(
            "runtime.placement",
            "\"split\" places samplers and learners on different ranks: run it with \
             --nproc N or --gpus LIST (N >= 2), or under torchrun / Slurm",
        ));
    }
    if let Ok(dir) = cfg.model.resolve() {
        if crate::model::vision::VlConfig::is_vl_file(&dir.join("config.json")) {
            return train_vision_language(&cfg, resume, overwrite);
        }
    }
    let out_dir = cfg.runtime.out_dir.clone();
    let threads = crate::device::cpu_threads(
        cfg.runtime.cpu_threads,
        std::env::var("OMP_NUM_THREADS").ok().as_deref(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        cfg.runtime.max_staleness,
    );
    tch::set_num_threads(i32::try_from(threads).unwrap_or(i32::MAX));
    tracing::info!(threads, "libtorch intra-op CPU threads");
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
    let progress = Arc::new(Mutex::new(crate::progress::TrainProgress::new(
        cfg.algo.algo,
        cfg.runtime.steps,
        std::io::stderr().is_terminal(),
        std::io::stdout().is_terminal(),
    )));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(format!("starting the tokio runtime: {e}")))?;
    let mut builder = crate::actors::Runtime::builder(cfg)
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
        out_dir.join(crate::observe::report::REPORT_FILE).display()
    );
    if let Some(ck) = &report.last_checkpoint {
        println!("last checkpoint: {}", ck.display());
    }
    if report.failed {
        return Err(Error::Runtime(format!("run failed: {}", report.reason)));
    }
    // The model the run ends with, as a Hugging Face folder that
    // `checkpoint.keep_last` never prunes (docs/CHECKPOINTS.md).
    if let Some(ck) = &report.last_checkpoint {
        let dir = crate::run::final_model::write_final_model(&out_dir, ck)?;
        println!("final model: {}", dir.display());
    }
    Ok(())
}

/// `rlsd train` with a vision-language model: the sequential VL loop
/// ([`crate::run::vision_train`]), one line per step.
fn train_vision_language(cfg: &RunConfig, resume: Option<PathBuf>, overwrite: bool) -> Result<()> {
    println!(
        "rlsd train (vision-language, sequential): algo={} model={} steps={} batch={}x{} train_vision={} -> {}",
        cfg.algo.algo.name(),
        cfg.model.path,
        cfg.runtime.steps,
        cfg.rollout.batch_prompts,
        cfg.rollout.group_size,
        cfg.model.train_vision,
        cfg.runtime.out_dir.display()
    );
    let mut print = |s: &crate::stats::StepStats| {
        println!(
            "step {} reward {:.3} accuracy {:.3} loss {:.4} len {:.1}",
            s.step, s.reward_mean, s.accuracy, s.loss, s.response_len_mean
        );
    };
    let report = crate::run::vision_train::train_vision_language(
        cfg,
        crate::run::source::from_config(cfg)?,
        resume.as_deref(),
        overwrite,
        &mut print,
    )?;
    println!(
        "done: {} steps; metrics: {}",
        report.steps.len(),
        cfg.runtime.out_dir.join("metrics.jsonl").display()
    );
    if let Some(ck) = &report.last_checkpoint {
        println!("last checkpoint: {}", ck.display());
    }
    if let Some(dir) = &report.final_model {
        println!("final model: {}", dir.display());
    }
    Ok(())
}

/// One rank of a data-parallel run started by `--nproc`/`--gpus`, `torchrun`
/// or Slurm (`env` read from the rank variables); on `resume`, every rank
/// continues from that checkpoint (docs/DISTRIBUTED.md).
pub fn train_rank(
    cfg: &RunConfig,
    env: &DistEnv,
    resume: Option<PathBuf>,
    overwrite: bool,
) -> Result<()> {
    let r = crate::distributed::train_loop::train_rank(cfg, env, overwrite, resume.as_deref())?;
    println!(
        "rank {} of {} ({}): {} steps, weights {}",
        r.rank, r.world, r.role, r.steps, r.weights_sha256
    );
    Ok(())
}

/// `rlsd pretrain`: train the built-in task's base model and write its
/// report (`pretrain_report.json`) beside it.
pub fn pretrain(cfg: &PretrainConfig) -> Result<()> {
    let r = crate::pretrain::pretrain(cfg)?;
    let report = r.out_dir.join("pretrain_report.json");
    let json = serde_json::to_string_pretty(&r)
        .map_err(|e| Error::Runtime(format!("serialising the pretrain report: {e}")))?;
    super::write_text(&report, &(json + "\n"))?;
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
    // A vision-language pretraining run measures no answer log-probs.
    if r.heldout_teacher_answer_logprob.is_finite() {
        println!(
            "held-out mean log-prob of the answer tokens: teacher {:.3}, student {:.3}",
            r.heldout_teacher_answer_logprob, r.heldout_student_answer_logprob
        );
    }
    Ok(())
}
