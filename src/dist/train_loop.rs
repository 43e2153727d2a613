//! One rank of a data-parallel run: the sequential step loop
//! ([`crate::actors::sequential::run_steps`]) with rank hooks: each step's
//! prompt groups split across ranks ([`super::shard`]), a per-rank sampling
//! seed, [`super::DataParallel`] installed as the trainer's gradient sync,
//! rollout statistics summed over ranks, and checkpoints committed for all
//! ranks or none ([`super::checkpoint`]). Every rank draws the same prompts
//! (same data, same seed), keeps its groups, rolls out, verifies, scores
//! with the teacher and computes advantages on them (groups never straddle
//! ranks), then takes the same AdamW step. Rank 0 writes the run folder
//! (`config.toml`, `metrics.jsonl` with global batch statistics,
//! `checkpoints/`, `final/`); every rank writes `ranks/rank<r>.json` with a
//! digest of its weights.

use super::checkpoint::{agree_equal, load_resume, RankState};
use super::fault::RankFault;
use super::sync::DataParallel;
use super::{DistEnv, GlooGroup, GradSync, ProcessGroup, Store};
use crate::actors::run_folder::{prepare_fresh, resolve_resume, RunLock};
use crate::actors::runtime::check_same_shape;
use crate::actors::sequential::{run_steps, LoopModels, StepDone, StepHooks};
use crate::config::RunConfig;
use crate::data::{Example, TeacherPrompt};
use crate::device::parse_device;
use crate::error::{Error, Result};
use crate::model::LoadedModel;
use crate::pipeline::{step_seed, CreditBatch, StepPlan};
use crate::stats::StepStats;
use crate::train::Trainer;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tch::Device;

pub use super::checkpoint::weights_digest;

/// What a rank reports at the end.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RankReport {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
    /// Steps trained.
    pub steps: u64,
    /// The checkpoint step this run resumed from, if it did.
    #[serde(default)]
    pub resumed_from: Option<u64>,
    /// SHA-256 of every trainable parameter's bytes, in name order.
    pub weights_sha256: String,
    /// Seconds in collectives over the run.
    pub collective_s: f64,
    /// Seconds from start to the first step (group, model, checkpoint load).
    #[serde(default)]
    pub setup_s: f64,
    /// Seconds of each checkpoint commit (agreement, write, acknowledgement).
    #[serde(default)]
    pub checkpoint_s: Vec<f64>,
    /// The last committed checkpoint.
    #[serde(default)]
    pub last_checkpoint: Option<PathBuf>,
    /// Seconds of the whole loop.
    pub wall_s: f64,
}

/// The device a rank trains on: `RLSD_DIST_DEVICE` (set by `--gpus`) or
/// `runtime.optimizer_device`.
fn rank_device(cfg: &RunConfig) -> Result<Device> {
    match std::env::var("RLSD_DIST_DEVICE") {
        Ok(d) => parse_device(&d),
        Err(_) => parse_device(&cfg.runtime.optimizer_device),
    }
}

/// Join the job's process group: Gloo on CPU, NCCL on CUDA (`gpu` feature);
/// rendezvous and every collective fail after `timeout`.
pub fn join_group(
    env: &DistEnv,
    device: Device,
    timeout: Duration,
) -> Result<(Store, Box<dyn ProcessGroup>)> {
    let store = if env.host_store {
        Store::server(&env.master_addr, env.master_port, timeout)?
    } else {
        Store::client(&env.master_addr, env.master_port, timeout)?
    };
    let pg: Box<dyn ProcessGroup> = match device {
        Device::Cpu => Box::new(GlooGroup::new(
            &store,
            "rlsd/gloo/",
            &env.bind,
            env.rank,
            env.world,
            timeout,
        )?),
        #[cfg(feature = "gpu")]
        Device::Cuda(_) => Box::new(super::nccl::NcclGroup::new(
            &store,
            "rlsd/nccl/",
            device,
            env.rank,
            env.world,
            timeout,
        )?),
        other => {
            return Err(Error::Distributed(format!(
            "no process group for device {other:?} (CUDA ranks need a build with --features gpu)"
        )))
        }
    };
    Ok((store, pg))
}

/// Run `cfg.runtime.steps` data-parallel steps as rank `env.rank`, or, with
/// `resume` (`latest`, a run folder, a checkpoint root or one checkpoint
/// folder, as for `rlsd train --resume`), continue from the newest complete
/// checkpoint: every rank loads the same one (the ranks agree on its step
/// and weights before training).
pub fn train_rank(
    cfg: &RunConfig,
    env: &DistEnv,
    overwrite: bool,
    resume: Option<&Path>,
) -> Result<RankReport> {
    let started = Instant::now();
    let device = rank_device(cfg)?;
    let out = cfg.runtime.out_dir.clone();
    let ckpt_root = out.join(&cfg.checkpoint.dir);
    let resume_dir = resume
        .map(|arg| resolve_resume(arg, &ckpt_root, &cfg.checkpoint.dir))
        .transpose()?;
    // Rank 0 owns the run folder for the whole job.
    let _lock = if env.rank == 0 {
        let lock = RunLock::acquire(&out)?;
        if resume_dir.is_none() {
            prepare_fresh(&out, &ckpt_root, overwrite)?;
        }
        std::fs::create_dir_all(out.join("ranks")).map_err(|e| Error::io(&out, e))?;
        std::fs::write(out.join("config.toml"), cfg.to_toml())
            .map_err(|e| Error::io(out.join("config.toml"), e))?;
        Some(lock)
    } else {
        None
    };
    let timeout = env
        .timeout
        .unwrap_or_else(|| cfg.runtime.collective_timeout());
    let (_store, pg) = join_group(env, device, timeout)?;
    let verifier = crate::verify::build_verifier(&cfg.verifier)?;
    let mut source = crate::actors::source::from_config(cfg)?;
    let template = TeacherPrompt::new(cfg.data.teacher_template.clone())?;
    let kind = crate::model::parse_kind(&cfg.model.dtype)?;
    let resumed = resume_dir.as_deref().map(load_resume).transpose()?;
    if let Some(r) = &resumed {
        check_same_shape(&cfg.model.resolved_path(), &r.checkpoint.model_dir)?;
    }
    let policy = match &resumed {
        Some(r) => LoadedModel::load(&r.checkpoint.model_dir, device, kind)?,
        None => LoadedModel::load(&cfg.model.resolve()?, device, kind)?,
    };
    let teacher = policy.replicate(device)?;
    let mut models = LoopModels {
        trainer: Trainer::new(policy, cfg.algo.clone(), cfg.optim.clone())?,
        teacher,
        teacher_version: 0,
    };
    let mut dp = DataParallel::new(pg, device);
    let start_step = match &resumed {
        Some(r) => {
            r.install(&mut models)?;
            source.restore(&r.cursor)?;
            if let Some(w) = r.world.filter(|w| *w != env.world) {
                tracing::warn!(
                    was = w,
                    now = env.world,
                    "resuming with another number of ranks: same global batch, other summation order"
                );
            }
            // Every rank must continue from the same checkpoint and weights.
            let mut h = Sha256::new();
            h.update(r.step.to_le_bytes());
            h.update(weights_digest(&models.trainer.optimizer.parameters())?.as_bytes());
            agree_equal(&mut dp, &h.finalize(), "resumed checkpoint")?;
            tracing::info!(rank = env.rank, step = r.step, dir = %r.checkpoint.dir.display(), "resumed");
            r.step
        }
        None => {
            dp.broadcast_params(&models.trainer.optimizer.parameters())?;
            0
        }
    };
    dp.group().barrier()?;
    models.trainer.grad_sync = Some(Box::new(dp));
    let metrics = if env.rank == 0 {
        let path = out.join("metrics.jsonl");
        Some(if resumed.is_some() {
            crate::metrics::MetricsWriter::resume(&path, start_step)?
        } else {
            crate::metrics::MetricsWriter::create(&path)?
        })
    } else {
        None
    };
    let mut hooks = RankHooks {
        cfg,
        rank: env.rank,
        world: env.world,
        fault: RankFault::from_env(env.rank)?,
        metrics,
        collective_s: 0.0,
        checkpoint_s: Vec::new(),
        last_checkpoint: resumed.as_ref().map(|r| r.checkpoint.dir.clone()),
    };
    let setup_s = started.elapsed().as_secs_f64();
    run_steps(
        cfg,
        &mut models,
        start_step + 1,
        &*verifier,
        &mut *source,
        &template,
        &mut hooks,
    )?;
    let params = models.trainer.optimizer.parameters();
    let report = RankReport {
        rank: env.rank,
        world: env.world,
        steps: cfg.runtime.steps,
        resumed_from: resumed.as_ref().map(|r| r.step),
        weights_sha256: weights_digest(&params)?,
        collective_s: hooks.collective_s,
        setup_s,
        checkpoint_s: hooks.checkpoint_s,
        last_checkpoint: hooks.last_checkpoint,
        wall_s: started.elapsed().as_secs_f64(),
    };
    write_report(&out, &report)?;
    if env.rank == 0 {
        models.trainer.policy.save(&out.join("final"))?;
    }
    if let Some(sync) = models.trainer.grad_sync.as_mut() {
        // Nobody leaves before everyone has written its report.
        sync.sum_values(&mut [0.0])?;
    }
    Ok(report)
}

/// The rank-specific parts of the step loop ([`run_steps`]).
struct RankHooks<'a> {
    cfg: &'a RunConfig,
    rank: usize,
    world: usize,
    fault: Option<RankFault>,
    /// Rank 0's metrics log.
    metrics: Option<crate::metrics::MetricsWriter>,
    collective_s: f64,
    checkpoint_s: Vec<f64>,
    last_checkpoint: Option<PathBuf>,
}

impl StepHooks for RankHooks<'_> {
    fn step_started(&mut self, step: u64) -> Result<()> {
        RankFault::strike(self.fault.as_ref(), step, false);
        Ok(())
    }

    fn plan(
        &mut self,
        cfg: &RunConfig,
        step: u64,
        all: Vec<Example>,
        cursor: serde_json::Value,
    ) -> StepPlan {
        // Every rank draws the same prompts and keeps its whole groups.
        let mine = super::shard::group_range(all.len(), self.world, self.rank);
        let mut plan = StepPlan::new(cfg, step, 0, all[mine].to_vec(), cursor);
        // Ranks sample different prompts; a per-rank seed keeps their RNG
        // streams apart.
        plan.seed = step_seed(
            cfg.runtime.seed ^ (self.rank as u64).wrapping_mul(0xA24B_AED4_963E_E407),
            step,
        );
        plan
    }

    fn completions(&self, cfg: &RunConfig) -> usize {
        if self.rank == 0 {
            cfg.observe.completions_per_step
        } else {
            0
        }
    }

    fn finish_stats(
        &mut self,
        trainer: &mut Trainer<LoadedModel>,
        batch: &CreditBatch,
        stats: &mut StepStats,
    ) -> Result<()> {
        // train_step's counts and losses are global already.
        let sync = trainer
            .grad_sync
            .as_mut()
            .ok_or_else(|| Error::Distributed("grad sync lost".into()))?;
        global_rollout_stats(sync.as_mut(), batch, stats)?;
        self.collective_s += stats.timings.collective_s;
        Ok(())
    }

    fn step_done(&mut self, done: StepDone<'_>) -> Result<()> {
        let step = done.stats.step;
        // A step's metrics line is on disk before its checkpoint.
        if let Some(m) = self.metrics.as_mut() {
            m.append(&done.stats)?;
            m.sync()?;
        }
        if !super::checkpoint::due(self.cfg, step) {
            return Ok(());
        }
        let t = Instant::now();
        let models = &mut *done.models;
        let mut sync = models
            .trainer
            .grad_sync
            .take()
            .ok_or_else(|| Error::Distributed("grad sync lost".into()))?;
        let state = RankState {
            step,
            models,
            cursor: &done.cursor,
            world: self.world,
        };
        let fault = self.fault;
        let committed =
            super::checkpoint::commit(sync.as_mut(), self.rank, self.cfg, &state, &|| {
                RankFault::strike(fault.as_ref(), step, true)
            });
        models.trainer.grad_sync = Some(sync);
        let dir = committed?;
        let secs = t.elapsed().as_secs_f64();
        tracing::info!(rank = self.rank, step, secs, dir = %dir.display(), "checkpoint committed");
        self.checkpoint_s.push(secs);
        self.last_checkpoint = Some(dir);
        Ok(())
    }
}

fn write_report(out: &Path, r: &RankReport) -> Result<()> {
    let dir = out.join("ranks");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = dir.join(format!("rank{}.json", r.rank));
    let text = serde_json::to_string_pretty(r)
        .map_err(|e| Error::Distributed(format!("{}: {e}", path.display())))?;
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}

/// Reward, accuracy, length and truncation over all ranks' samples (each
/// rank's `fill_rollout_stats` saw only its own).
fn global_rollout_stats(
    sync: &mut dyn GradSync,
    batch: &CreditBatch,
    stats: &mut StepStats,
) -> Result<()> {
    let (r, s) = (batch.rollouts(), batch.scores());
    let mut v = [
        r.len() as f64,
        s.iter().map(|x| f64::from(x.reward)).sum(),
        s.iter().filter(|x| x.correct).count() as f64,
        r.iter().map(|x| x.response_ids.len() as f64).sum(),
        r.iter()
            .filter(|x| !x.stopped_on_eos && !x.stopped_on_stop_string)
            .count() as f64,
    ];
    sync.sum_values(&mut v)?;
    let n = v[0].max(1.0);
    stats.reward_mean = v[1] / n;
    stats.accuracy = v[2] / n;
    stats.response_len_mean = v[3] / n;
    stats.truncation_rate = v[4] / n;
    Ok(())
}
