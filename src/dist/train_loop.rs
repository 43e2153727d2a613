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
//! digest of its weights, its stage seconds, tokens/s and peak memory.
//!
//! Under split placement ([`super::split`]) the last ranks sample
//! ([`super::sampler_loop`]); the learners run this loop over their own
//! sub-group, receive the step's responses instead of generating them, and
//! broadcast the new weights to the samplers after every step.

use super::checkpoint::{agree_equal, load_resume, RankState};
use super::fault::RankFault;
use super::report::{write_report, RankTotals};
use super::sampler_loop::{ordered_params, run_sampler, SamplerSeat};
use super::split::{exchange, learner_batch, share_seed, Role};
use super::sync::{broadcast_params, DataParallel};
use super::{DistEnv, GlooGroup, GradSync, ProcessGroup, Store};
use crate::actors::run_folder::{prepare_fresh, resolve_resume, RunLock};
use crate::actors::runtime::check_same_shape;
use crate::actors::sequential::{run_steps, LoopModels, StepDone, StepHooks};
use crate::commands::eval::validation_on;
use crate::config::RunConfig;
use crate::data::{Example, TeacherPrompt};
use crate::device::parse_device;
use crate::error::{Error, Result};
use crate::model::LoadedModel;
use crate::pipeline::{CreditBatch, ScoredBatch, StepPlan};
use crate::stats::StepStats;
use crate::train::Trainer;
use crate::verify::Verifier;
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tch::Device;

pub use super::checkpoint::weights_digest;

pub use super::report::RankReport;

/// The device a rank trains on: `RLSD_DIST_DEVICE` (set by `--gpus`) or
/// `runtime.optimizer_device`.
fn rank_device(cfg: &RunConfig) -> Result<Device> {
    match std::env::var("RLSD_DIST_DEVICE") {
        Ok(d) => parse_device(&d),
        Err(_) => parse_device(&cfg.runtime.optimizer_device),
    }
}

/// Connect to the job's store (hosting it where `env` says so); the
/// rendezvous fails after `timeout`.
pub fn connect_store(env: &DistEnv, timeout: Duration) -> Result<Store> {
    if env.host_store {
        Store::server(&env.master_addr, env.master_port, timeout)
    } else {
        Store::client(&env.master_addr, env.master_port, timeout)
    }
}

/// Join a process group named `name` over `store` as `rank` of `world`:
/// Gloo on CPU, NCCL on CUDA (`gpu` feature); every collective fails after
/// `timeout`. Groups of different names are independent (a sub-group of
/// some ranks beside the job's whole group).
pub fn new_group(
    store: &Store,
    name: &str,
    env: &DistEnv,
    device: Device,
    rank: usize,
    world: usize,
    timeout: Duration,
) -> Result<Box<dyn ProcessGroup>> {
    Ok(match device {
        Device::Cpu => Box::new(GlooGroup::new(
            store,
            &format!("rlsd/gloo{name}/"),
            &env.bind,
            rank,
            world,
            timeout,
        )?),
        #[cfg(feature = "gpu")]
        Device::Cuda(_) => Box::new(super::nccl::NcclGroup::new(
            store,
            &format!("rlsd/nccl{name}/"),
            device,
            rank,
            world,
            timeout,
        )?),
        other => {
            return Err(Error::Distributed(format!(
            "no process group for device {other:?} (CUDA ranks need a build with --features gpu)"
        )))
        }
    })
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
    let role = Role::of(cfg, env.rank, env.world)?;
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
    let store = connect_store(env, timeout)?;
    let world_pg = new_group(&store, "", env, device, env.rank, env.world, timeout)?;
    let verifier = crate::verify::build_verifier(&cfg.verifier)?;
    let mut source = crate::actors::source::from_config(cfg)?;
    let kind = crate::model::parse_kind(&cfg.model.dtype)?;
    let resumed = resume_dir.as_deref().map(load_resume).transpose()?;
    if let Some(r) = &resumed {
        check_same_shape(&cfg.model.resolved_path(), &r.checkpoint.model_dir)?;
        source.restore(&r.cursor)?;
    }
    let policy = match &resumed {
        Some(r) => LoadedModel::load(&r.checkpoint.model_dir, device, kind)?,
        None => LoadedModel::load(&cfg.model.resolve()?, device, kind)?,
    };
    let start_step = resumed.as_ref().map_or(0, |r| r.step);
    let fault = RankFault::from_env(env.rank)?;
    let finish = |report: &mut RankReport, totals: &RankTotals| -> Result<()> {
        totals.fill(report);
        report.wall_s = started.elapsed().as_secs_f64();
        write_report(&out, report)
    };
    match role {
        Role::Sampler {
            index,
            samplers,
            learners,
        } => {
            let seat = SamplerSeat {
                index,
                samplers,
                learners,
                device,
            };
            // Learner 0's weights, whether fresh or resumed.
            broadcast_params(world_pg.as_ref(), &ordered_params(&policy), 0)?;
            let setup_s = started.elapsed().as_secs_f64();
            let totals = run_sampler(
                cfg,
                seat,
                world_pg.as_ref(),
                &policy,
                &*verifier,
                &mut *source,
                start_step + 1,
                fault.as_ref(),
            )?;
            let mut report = RankReport {
                rank: env.rank,
                world: env.world,
                role: role.name().into(),
                steps: cfg.runtime.steps,
                resumed_from: resumed.as_ref().map(|r| r.step),
                weights_sha256: weights_digest(&ordered_params(&policy))?,
                setup_s,
                ..RankReport::default()
            };
            finish(&mut report, &totals)?;
            // Nobody leaves before everyone has written its report.
            world_pg.barrier()?;
            Ok(report)
        }
        Role::Learner {
            index,
            learners,
            samplers,
        } => {
            let learner_pg = if role.is_split() {
                Some(new_group(
                    &store,
                    "-learners",
                    env,
                    device,
                    index,
                    learners,
                    timeout,
                )?)
            } else {
                None
            };
            let (dp_pg, split) = match learner_pg {
                Some(pg) => (
                    pg,
                    Some(SplitLink {
                        world: world_pg,
                        samplers,
                        device,
                        range: 0..0,
                        groups: 0,
                    }),
                ),
                None => (world_pg, None),
            };
            let learner = Learner {
                cfg,
                env,
                index,
                learners,
                out: &out,
                device,
                policy,
                resumed: resumed.as_ref(),
                dp: DataParallel::new(dp_pg, device),
                split,
                fault,
                verifier: &*verifier,
                source: &mut *source,
            };
            learner.run(started, &finish)
        }
    }
}

/// A learner rank's inputs.
struct Learner<'a> {
    cfg: &'a RunConfig,
    env: &'a DistEnv,
    index: usize,
    learners: usize,
    out: &'a Path,
    device: Device,
    policy: LoadedModel,
    resumed: Option<&'a super::checkpoint::Resume>,
    /// The learners' group (the job's whole group when colocated).
    dp: DataParallel,
    split: Option<SplitLink>,
    fault: Option<RankFault>,
    verifier: &'a dyn Verifier,
    source: &'a mut dyn crate::actors::source::PromptSource,
}

impl Learner<'_> {
    /// Train every step, write the final model (rank 0) and this rank's
    /// report (through `finish`), and wait for every rank to have written
    /// its own.
    fn run(
        self,
        started: Instant,
        finish: &dyn Fn(&mut RankReport, &RankTotals) -> Result<()>,
    ) -> Result<RankReport> {
        let Learner {
            cfg,
            env,
            index,
            learners,
            out,
            device,
            policy,
            resumed,
            mut dp,
            split,
            fault,
            verifier,
            source,
        } = self;
        let template = TeacherPrompt::new(cfg.data.teacher_template.clone())?;
        let teacher = policy.replicate(device)?;
        let mut models = LoopModels {
            trainer: Trainer::new(policy, cfg.algo.clone(), cfg.optim.clone())?,
            teacher,
            teacher_version: 0,
        };
        let start_step = match resumed {
            Some(r) => {
                r.install(&mut models)?;
                if let Some(w) = r.world.filter(|w| *w != env.world) {
                    tracing::warn!(
                        was = w,
                        now = env.world,
                        "resuming with another number of ranks: same global batch, other summation order"
                    );
                }
                // Every learner must continue from the same checkpoint and weights.
                let mut h = Sha256::new();
                h.update(r.step.to_le_bytes());
                h.update(weights_digest(&models.trainer.optimizer.parameters())?.as_bytes());
                agree_equal(&mut dp, &h.finalize(), "resumed checkpoint")?;
                tracing::info!(rank = env.rank, step = r.step, dir = %r.checkpoint.dir.display(), "resumed");
                r.step
            }
            None => {
                if split.is_none() {
                    dp.broadcast_params(&models.trainer.optimizer.parameters())?;
                }
                0
            }
        };
        if let Some(link) = &split {
            // Learner 0's weights to every rank, samplers included.
            broadcast_params(
                link.world.as_ref(),
                &models.trainer.optimizer.parameters(),
                0,
            )?;
        }
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
        // Held-out validation on rank 0 (before step 1 and every
        // `validation.every` steps).
        let held_out = if env.rank == 0 && cfg.validation.every > 0 {
            crate::commands::eval::held_out_examples(cfg)?
        } else {
            Vec::new()
        };
        let pending = if resumed.is_none() {
            validation_on(cfg, &models.trainer.policy, &held_out, verifier, 0)?
        } else {
            Vec::new()
        };
        let mut hooks = RankHooks {
            cfg,
            held_out,
            verifier,
            pending,
            rank: env.rank,
            index,
            learners,
            world: env.world,
            fault,
            metrics,
            split,
            totals: RankTotals::default(),
            checkpoint_s: Vec::new(),
            last_checkpoint: resumed.map(|r| r.checkpoint.dir.clone()),
        };
        let setup_s = started.elapsed().as_secs_f64();
        run_steps(
            cfg,
            &mut models,
            start_step + 1,
            verifier,
            source,
            &template,
            &mut hooks,
        )?;
        let params = models.trainer.optimizer.parameters();
        let mut report = RankReport {
            rank: env.rank,
            world: env.world,
            role: "learner".into(),
            steps: cfg.runtime.steps,
            resumed_from: resumed.map(|r| r.step),
            weights_sha256: weights_digest(&params)?,
            setup_s,
            checkpoint_s: hooks.checkpoint_s,
            last_checkpoint: hooks.last_checkpoint,
            ..RankReport::default()
        };
        if env.rank == 0 {
            models.trainer.policy.save(&out.join("final"))?;
        }
        finish(&mut report, &hooks.totals)?;
        // Nobody leaves before everyone has written its report.
        match hooks.split.as_ref() {
            Some(link) => link.world.barrier()?,
            None => {
                if let Some(sync) = models.trainer.grad_sync.as_mut() {
                    sync.sum_values(&mut [0.0])?;
                }
            }
        }
        Ok(report)
    }
}

/// A split learner's link to the samplers: the job's whole group, and the
/// step's share (set by `plan`, used by `scored`).
struct SplitLink {
    world: Box<dyn ProcessGroup>,
    samplers: usize,
    device: Device,
    /// This learner's groups of the current step.
    range: Range<usize>,
    /// The current step's number of groups.
    groups: usize,
}

/// The rank-specific parts of the step loop ([`run_steps`]).
struct RankHooks<'a> {
    cfg: &'a RunConfig,
    rank: usize,
    /// This learner, `0..learners`.
    index: usize,
    /// Number of learner ranks (all ranks when colocated).
    learners: usize,
    /// Number of ranks in the job.
    world: usize,
    fault: Option<RankFault>,
    /// Rank 0's metrics log.
    metrics: Option<crate::metrics::MetricsWriter>,
    /// Split placement: the samplers.
    split: Option<SplitLink>,
    totals: RankTotals,
    /// Rank 0: the held-out prompts (`[validation]`; empty when off).
    held_out: Vec<crate::data::Example>,
    verifier: &'a dyn Verifier,
    /// Validation results not yet attached to a step's stats.
    pending: Vec<crate::stats::ValidationStats>,
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
        let mine = super::shard::group_range(all.len(), self.learners, self.index);
        if let Some(link) = self.split.as_mut() {
            link.range = mine.clone();
            link.groups = all.len();
        }
        let mut plan = StepPlan::new(cfg, step, 0, all[mine].to_vec(), cursor);
        // Ranks sample different prompts; a per-rank seed keeps their RNG
        // streams apart.
        plan.seed = share_seed(cfg, self.index, step);
        plan
    }

    fn scored(
        &mut self,
        cfg: &RunConfig,
        plan: StepPlan,
        policy: &LoadedModel,
        version: u64,
        verifier: &dyn Verifier,
    ) -> Result<ScoredBatch> {
        let Some(link) = self.split.as_mut() else {
            return crate::actors::sequential::sample_and_verify(
                cfg, plan, policy, version, verifier,
            );
        };
        let t = Instant::now();
        let batches = exchange(
            link.world.as_ref(),
            self.learners,
            link.samplers,
            None,
            link.device,
        )?;
        self.totals.exchange_s += t.elapsed().as_secs_f64();
        learner_batch(
            plan,
            link.range.clone(),
            link.groups,
            cfg.rollout.group_size,
            batches,
        )
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
        global_rollout_stats(sync.as_mut(), self.index, batch, stats)?;
        // Rank 0 validates the new weights (the others wait at the next
        // collective), as the one-process loop does.
        self.pending.extend(validation_on(
            self.cfg,
            &trainer.policy,
            &self.held_out,
            self.verifier,
            stats.step,
        )?);
        stats.validation = std::mem::take(&mut self.pending);
        self.totals.add_stages(&stats.timings, self.split.is_none());
        let tokens = |rs: &[crate::pipeline::Rollout]| -> u64 {
            rs.iter().map(|r| r.response_ids.len() as u64).sum()
        };
        let mine = tokens(batch.rollouts());
        self.totals.trained_tokens += mine;
        if self.split.is_none() {
            self.totals.generated_tokens += mine;
        }
        Ok(())
    }

    fn step_done(&mut self, done: StepDone<'_>) -> Result<()> {
        let step = done.stats.step;
        // A step's metrics line is on disk before its checkpoint.
        if let Some(m) = self.metrics.as_mut() {
            m.append(&done.stats)?;
            m.sync()?;
        }
        if super::checkpoint::due(self.cfg, step) {
            self.commit(step, done.models, &done.cursor)?;
        }
        if let Some(link) = &self.split {
            // The samplers generate the next step with the new weights.
            let t = Instant::now();
            broadcast_params(
                link.world.as_ref(),
                &done.models.trainer.optimizer.parameters(),
                0,
            )?;
            self.totals.weights_broadcast_s += t.elapsed().as_secs_f64();
        }
        Ok(())
    }
}

impl RankHooks<'_> {
    /// Commit step `step`'s checkpoint for all learners or none.
    fn commit(
        &mut self,
        step: u64,
        models: &mut LoopModels,
        cursor: &serde_json::Value,
    ) -> Result<()> {
        let t = Instant::now();
        let mut sync = models
            .trainer
            .grad_sync
            .take()
            .ok_or_else(|| Error::Distributed("grad sync lost".into()))?;
        let state = RankState {
            step,
            models,
            cursor,
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

/// Reward, accuracy, length and truncation over all ranks' samples (each
/// rank's `fill_rollout_stats` saw only its own). The longest response is
/// gathered by a sum too: rank `index` puts its own in slot `index` of a
/// vector that is zero elsewhere.
fn global_rollout_stats(
    sync: &mut dyn GradSync,
    index: usize,
    batch: &CreditBatch,
    stats: &mut StepStats,
) -> Result<()> {
    let (r, s) = (batch.rollouts(), batch.scores());
    let mut v = vec![
        r.len() as f64,
        s.iter().map(|x| f64::from(x.reward)).sum(),
        s.iter().filter(|x| x.correct).count() as f64,
        r.iter().map(|x| x.response_ids.len() as f64).sum(),
        r.iter()
            .filter(|x| !x.stopped_on_eos && !x.stopped_on_stop_string)
            .count() as f64,
    ];
    let longest = r.iter().map(|x| x.response_ids.len()).max().unwrap_or(0);
    let mut slots = vec![0.0; sync.world()];
    slots[index] = longest as f64;
    v.extend(slots);
    sync.sum_values(&mut v)?;
    let n = v[0].max(1.0);
    stats.reward_mean = v[1] / n;
    stats.accuracy = v[2] / n;
    stats.response_len_mean = v[3] / n;
    stats.truncation_rate = v[4] / n;
    stats.response_len_max = v[5..].iter().fold(0.0, |a: f64, b| a.max(*b)) as usize;
    Ok(())
}
