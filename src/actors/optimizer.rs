//! Optimizer: owns the trainable policy and AdamW state. Trains the steps
//! strictly in order (each exactly once), then publishes detached, versioned
//! weight snapshots to the sampler every step and to the teacher every
//! `teacher_sync_interval` steps, and reports `StepDone` to the scheduler.

use super::ctx::{join_err, Ctx, OptimizerVault};
use super::fault::Role;
use super::messages::{Batch, OptimizerMsg, SamplerMsg, SchedulerMsg, TeacherMsg};
use super::stages::{fill_rollout_stats, train_batch};
use crate::stats::StepStats;
use crate::train::train_step;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// The optimizer actor.
#[derive(Debug)]
pub struct Optimizer;

/// Optimizer state (the trainer itself lives in the vault).
#[derive(Debug)]
pub struct OptimizerState {
    ctx: Arc<Ctx>,
    /// Batches that arrived ahead of their turn.
    pending: BTreeMap<u64, Box<Batch>>,
    /// When the previous step finished (for idle time).
    last_done: Instant,
}

impl Actor for Optimizer {
    type Msg = OptimizerMsg;
    type State = OptimizerState;
    type Arguments = Arc<Ctx>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        ctx: Arc<Ctx>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(OptimizerState {
            ctx,
            pending: BTreeMap::new(),
            last_done: Instant::now(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            OptimizerMsg::Train(batch) => {
                let step = batch.plan.step;
                let ctx = st.ctx.clone();
                let answered = {
                    let v = ctx.optimizer.lock();
                    (step <= v.trained_through).then(|| v.recent.get(&step).cloned())
                };
                if let Some(cached) = answered {
                    // A re-issued step that was already trained: answer again, never train twice.
                    if let Some(stats) = cached {
                        ctx.send(
                            |p| p.scheduler.clone(),
                            SchedulerMsg::StepDone(Box::new(stats)),
                        );
                    }
                    return Ok(());
                }
                st.pending.insert(step, batch);
                train_ready(st).await?;
            }
            OptimizerMsg::Republish => {
                let ctx = st.ctx.clone();
                let (sampler_snap, teacher_snap) = tokio::task::spawn_blocking(move || {
                    let v = ctx.optimizer.lock();
                    let s = v.trainer.policy.snapshot(v.trained_through);
                    let t = v.teacher_snapshot.as_ref().map(|t| t.deep_copy());
                    (s, t)
                })
                .await
                .map_err(join_err)?;
                st.ctx
                    .send(|p| p.sampler.clone(), SamplerMsg::Weights(sampler_snap?));
                if let Some(t) = teacher_snap {
                    st.ctx.send(|p| p.teacher.clone(), TeacherMsg::Weights(t?));
                }
            }
            OptimizerMsg::Checkpoint { state, reply } => {
                let ctx = st.ctx.clone();
                let res = tokio::task::spawn_blocking(move || {
                    let v = ctx.optimizer.lock();
                    write_checkpoint(&ctx, &v, &state)
                })
                .await
                .map_err(join_err)?;
                let _ = reply.send(res.map_err(|e| e.to_string()));
            }
        }
        Ok(())
    }
}

/// Train every pending batch whose turn has come.
async fn train_ready(st: &mut OptimizerState) -> Result<(), ActorProcessingErr> {
    loop {
        let next = st.ctx.optimizer.lock().trained_through + 1;
        let Some(batch) = st.pending.remove(&next) else {
            // Drop anything at or below what is already trained.
            st.pending.retain(|&s, _| s > next);
            return Ok(());
        };
        let ctx = st.ctx.clone();
        ctx.faults.check(Role::Optimizer, next)?;
        let idle_s = st.last_done.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let c2 = ctx.clone();
        let (stats, sampler_snap, teacher_snap) = tokio::task::spawn_blocking(move || {
            let interval = c2.cfg.runtime.teacher_sync_interval;
            let mut v = c2.optimizer.lock();
            let tb = train_batch(&batch, &c2.cfg.algo, c2.cfg.rollout.temperature);
            let mut stats: StepStats = train_step(&mut v.trainer, &tb)?;
            fill_rollout_stats(&batch, &mut stats);
            stats.teacher_version = batch.teacher_version;
            stats.completions = crate::observe::sample_completions(
                &batch,
                &tb,
                &c2.cfg.algo,
                v.trainer.policy.tokenizer.as_ref(),
                c2.cfg.observe.completions_per_step,
            );
            v.trained_through = next;
            let ids = batch.plan.examples.iter().map(|e| e.id.clone()).collect();
            v.trained.push((next, ids));
            let version = next;
            let sampler_snap = v.trainer.policy.snapshot(version)?;
            let teacher_snap = if version % interval == 0 {
                let t = v.trainer.policy.snapshot(version)?;
                v.teacher_snapshot = Some(t.deep_copy()?);
                Some(t)
            } else {
                None
            };
            Ok::<_, crate::Error>((stats, sampler_snap, teacher_snap))
        })
        .await
        .map_err(join_err)??;
        let mut stats = stats;
        stats.timings.train_s = t0.elapsed().as_secs_f64();
        stats.timings.idle_s = idle_s;
        {
            let mut v = ctx.optimizer.lock();
            v.recent.insert(next, stats.clone());
            while v.recent.len() > 64 {
                v.recent.pop_first();
            }
        }
        st.last_done = Instant::now();
        ctx.send(|p| p.sampler.clone(), SamplerMsg::Weights(sampler_snap));
        if let Some(t) = teacher_snap {
            ctx.send(|p| p.teacher.clone(), TeacherMsg::Weights(t));
        }
        ctx.send(
            |p| p.scheduler.clone(),
            SchedulerMsg::StepDone(Box::new(stats)),
        );
    }
}

/// Write a checkpoint of the trainer plus the scheduler's state.
fn write_checkpoint(
    ctx: &Ctx,
    v: &OptimizerVault,
    state: &serde_json::Value,
) -> crate::Result<std::path::PathBuf> {
    let mut state = state.clone();
    state["trained_through"] = serde_json::json!(v.trained_through);
    let root = ctx.cfg.runtime.out_dir.join(&ctx.cfg.checkpoint.dir);
    let policy = &v.trainer.policy;
    crate::checkpoint::save_checkpoint(
        &root,
        v.trained_through,
        &|dir: &std::path::Path| policy.save(dir),
        &v.trainer.optimizer.state_tensors(),
        &state,
        &ctx.cfg.to_toml(),
        ctx.cfg.checkpoint.keep_last,
    )
}
