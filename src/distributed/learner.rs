//! A learner rank of a data-parallel job: the sequential step loop
//! ([`run_steps`]) with rank hooks ([`RankHooks`]): its share of each
//! step's groups, a per-share sampling seed, the gradient sync over the
//! learners, statistics summed over them, metrics and held-out validation
//! on rank 0, checkpoints for all learners or none; under split placement
//! it receives the step's responses from the samplers and broadcasts the
//! new weights to them.

use super::rank_checkpoint::{agree_equal, weights_digest, RankState};
use super::report::{RankReport, RankTotals};
use super::split::{exchange, learner_batch};
use super::sync::{broadcast_params, DataParallel};
use super::{DistEnv, GradSync, ProcessGroup};
use crate::config::RunConfig;
use crate::data::{Example, TeacherPrompt};
use crate::error::{Error, Result};
use crate::fault::RankFault;
use crate::model::LoadedModel;
use crate::pipeline::{CreditBatch, ScoredBatch, StepPlan};
use crate::run::sequential::{run_steps, LoopModels, StepDone, StepHooks, StepValidation};
use crate::stats::StepStats;
use crate::train::Trainer;
use crate::verify::Verifier;
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Device;

/// A learner rank's inputs.
pub(super) struct Learner<'a> {
    pub(super) cfg: &'a RunConfig,
    pub(super) env: &'a DistEnv,
    pub(super) index: usize,
    pub(super) learners: usize,
    pub(super) out: &'a Path,
    pub(super) device: Device,
    pub(super) policy: LoadedModel,
    pub(super) resumed: Option<&'a super::rank_checkpoint::Resume>,
    /// The learners' group (the job's whole group when colocated).
    pub(super) dp: DataParallel,
    pub(super) split: Option<SplitLink>,
    pub(super) fault: Option<RankFault>,
    pub(super) verifier: &'a dyn Verifier,
    pub(super) source: &'a mut dyn crate::run::source::PromptSource,
}

impl Learner<'_> {
    /// Train every step, write the final model (rank 0) and this rank's
    /// report (through `finish`), and wait for every rank to have written
    /// its own.
    pub(super) fn run(
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
        let template = TeacherPrompt::for_data(&cfg.data)?;
        let teacher = policy.replicate(device)?;
        let algo = crate::pipeline::algo_for(&cfg.algo, &policy)?;
        if let Some(r) = resumed.filter(|r| r.adaptive.is_none()) {
            if cfg.algo.lambda_schedule == crate::rlsd::LambdaSchedule::Adaptive {
                return Err(crate::Error::config(
                    "algo.lambda_schedule",
                    format!(
                        "\"adaptive\" cannot resume from {}: its state.json has no `adaptive_lambda` (written before data-parallel checkpoints stored it)",
                        r.checkpoint.dir.display()
                    ),
                ));
            }
        }
        let mut models = LoopModels {
            trainer: Trainer::new(policy, algo, cfg.optim.clone())?,
            teacher,
            teacher_version: 0,
            lambda_state: cfg.algo.adaptive_start(),
        };
        let start_step = start_weights(resumed, &mut models, &mut dp, env, split.as_ref())?;
        models.trainer.grad_sync = Some(Box::new(dp));
        let metrics = open_metrics(env.rank, out, resumed.is_some(), start_step)?;
        // Held-out validation on rank 0 (before step 1 of a fresh run and
        // every `validation.every` steps).
        let validation = StepValidation::start(
            cfg,
            verifier,
            &models.trainer.policy,
            env.rank == 0,
            resumed.is_none(),
        )?;
        let mut hooks = RankHooks {
            cfg,
            validation,
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

/// The weights every learner starts from, the same on all of them: the
/// resumed checkpoint's (agreed by digest), or learner 0's broadcast; under
/// split placement learner 0's weights also go to the samplers. The step
/// training continues after.
fn start_weights(
    resumed: Option<&super::rank_checkpoint::Resume>,
    models: &mut LoopModels,
    dp: &mut DataParallel,
    env: &DistEnv,
    split: Option<&SplitLink>,
) -> Result<u64> {
    let start_step = match resumed {
        Some(r) => {
            r.install(models)?;
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
            agree_equal(dp, &h.finalize(), "resumed checkpoint")?;
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
    if let Some(link) = split {
        // Learner 0's weights to every rank, samplers included.
        broadcast_params(
            link.world.as_ref(),
            &models.trainer.optimizer.parameters(),
            0,
        )?;
    }
    dp.group().barrier()?;
    Ok(start_step)
}

/// Rank 0's `metrics.jsonl` (cut back to the resumed step); none elsewhere.
fn open_metrics(
    rank: usize,
    out: &Path,
    resumed: bool,
    start_step: u64,
) -> Result<Option<crate::metrics::MetricsWriter>> {
    if rank != 0 {
        return Ok(None);
    }
    let path = out.join("metrics.jsonl");
    Ok(Some(if resumed {
        crate::metrics::MetricsWriter::resume(&path, start_step)?
    } else {
        crate::metrics::MetricsWriter::create(&path)?
    }))
}

/// A split learner's link to the samplers: the job's whole group, and the
/// step's share (set by `plan`, used by `scored`).
pub(super) struct SplitLink {
    pub(super) world: Box<dyn ProcessGroup>,
    pub(super) samplers: usize,
    pub(super) device: Device,
    /// This learner's groups of the current step.
    pub(super) range: Range<usize>,
    /// The current step's number of groups.
    pub(super) groups: usize,
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
    /// Rank 0: held-out validation (`[validation]`).
    validation: StepValidation<'a>,
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
        // Each response's seed comes from its global position (step, prompt,
        // sample): the job samples what a one-process run samples.
        StepPlan::new(cfg, step, 0, all[mine.clone()].to_vec(), cursor)
            .share_of(mine.start, all.len())
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
            return crate::pipeline::sample_and_verify(cfg, plan, policy, version, verifier);
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
        self.validation.attach(&trainer.policy, stats)?;
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
        if super::rank_checkpoint::due(self.cfg, step) {
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
            super::rank_checkpoint::commit(sync.as_mut(), self.rank, self.cfg, &state, &|| {
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
