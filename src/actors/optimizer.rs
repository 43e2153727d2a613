//! Optimizer: owns the trainable policy and AdamW state. Trains the steps
//! strictly in order (each exactly once) and *commits* each: the update is
//! atomic (AdamW installs all new values or none), and only after it are the
//! vault's step, data cursor, ledger and teacher weights advanced together.
//! It then reports the committed step to the run loop (in step order, once),
//! publishes detached, versioned weight snapshots to the sampler every step
//! and to the teacher every `teacher_sync_interval` steps, tells the
//! scheduler, and, when one is due, writes a checkpoint of that very step
//! before it trains the next: a consistent cut at any `max_staleness`.

use super::ctx::{join_err, Ctx, OptimizerVault, RunEvent};
use super::fault::{FaultKind, Role};
use super::messages::{Batch, OptimizerMsg, SamplerMsg, SchedulerMsg, TeacherMsg};
use super::stages::{fill_rollout_stats, train_batch};
use crate::commands::eval::validation_after;
use crate::stats::StepStats;
use crate::train::train_step;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// How many recent steps' stats the vault keeps (re-issue answers and the
/// metrics lines a checkpoint carries).
const RECENT_STATS: usize = 64;

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
                    if v.stopped {
                        return Ok(()); // the final checkpoint is written; train nothing more
                    }
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
            OptimizerMsg::Checkpoint { last, reply } => {
                let ctx = st.ctx.clone();
                let res = tokio::task::spawn_blocking(move || {
                    let mut v = ctx.optimizer.lock();
                    if last {
                        v.stopped = true;
                    }
                    if v.trained_through == 0 {
                        return Ok(None); // nothing committed: nothing to save
                    }
                    checkpoint_committed(&ctx, &mut v).map(Some)
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
        let next = {
            let v = st.ctx.optimizer.lock();
            if v.stopped {
                st.pending.clear();
                return Ok(());
            }
            v.trained_through + 1
        };
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
        let (stats, sampler_snap, teacher_snap, due, diverged) = tokio::task::spawn_blocking(move || {
            let mut v = c2.optimizer.lock();
            if c2.faults.take_adam(next) {
                let half = v.trainer.optimizer.param_names().count() / 2;
                v.trainer.optimizer.inject_fault_at(half);
            }
            // Held-out validation before step 1 (`[validation]`; issue 12).
            let mut validation = if next == 1 {
                validation_after(&c2.cfg, &v.trainer.policy, &*c2.verifier, 0)?
            } else {
                Vec::new()
            };
            let validation_s: f64 = validation.iter().map(|x| x.wall_s).sum();
            let tb = train_batch(&batch, &c2.cfg.algo, c2.cfg.rollout.temperature);
            // An error here leaves the vault at the last commit (AdamW is atomic).
            let mut stats: StepStats = train_step(&mut v.trainer, &tb)?;
            fill_rollout_stats(&batch, &mut stats);
            stats.teacher_version = batch.teacher_version;
            stats.timings.train_s = t0.elapsed().as_secs_f64() - validation_s;
            // ... and after every `validation.every` steps, on the new weights.
            validation.extend(validation_after(
                &c2.cfg,
                &v.trainer.policy,
                &*c2.verifier,
                next,
            )?);
            stats.validation = validation;
            stats.timings.idle_s = idle_s;
            stats.completions = crate::observe::sample_completions(
                &batch,
                &tb,
                &c2.cfg.algo,
                v.trainer.policy.tokenizer.as_ref(),
                c2.cfg.observe.completions_per_step,
            );
            // Snapshots before the commit, so that nothing below can fail half-way.
            let interval = c2.cfg.runtime.teacher_sync_interval;
            let sampler_snap = v.trainer.policy.snapshot(next)?;
            let (teacher_snap, teacher_keep) = if next % interval == 0 {
                (
                    Some(v.trainer.policy.snapshot(next)?),
                    Some(cpu_copy(&sampler_snap)?),
                )
            } else {
                (None, None)
            };
            // Commit: everything of step `next` together.
            commit(&mut v, &batch, stats.clone(), teacher_keep);
            let rt = &c2.cfg.runtime;
            let due = c2.cfg.checkpoint.is_due(next) && next < rt.steps;
            let diverged = (rt.max_consecutive_skips > 0
                && v.consecutive_skips >= rt.max_consecutive_skips)
                .then(|| {
                    format!(
                        "{} steps in a row were skipped (last: {}); the weights have likely diverged (runtime.max_consecutive_skips)",
                        v.consecutive_skips,
                        stats.skip_reason.as_deref().unwrap_or("non-finite values")
                    )
                });
            Ok::<_, crate::Error>((stats, sampler_snap, teacher_snap, due, diverged))
        })
        .await
        .map_err(join_err)??;
        st.last_done = Instant::now();
        ctx.emit(RunEvent::Step(Box::new(stats.clone())));
        ctx.send(|p| p.sampler.clone(), SamplerMsg::Weights(sampler_snap));
        if let Some(t) = teacher_snap {
            ctx.send(|p| p.teacher.clone(), TeacherMsg::Weights(t));
        }
        ctx.send(
            |p| p.scheduler.clone(),
            SchedulerMsg::StepDone(Box::new(stats)),
        );
        if let Some(reason) = diverged {
            tracing::error!("{reason}");
            st.pending.clear();
            ctx.send(
                |p| p.scheduler.clone(),
                SchedulerMsg::Shutdown {
                    reason,
                    failed: true,
                },
            );
            return Ok(());
        }
        if due {
            let c3 = ctx.clone();
            let res = tokio::task::spawn_blocking(move || {
                let mut v = c3.optimizer.lock();
                checkpoint_committed(&c3, &mut v)
            })
            .await
            .map_err(join_err)?;
            if let Err(e) = res {
                // Retried once already: stop the run (non-zero) with the cause.
                let reason = format!("checkpoint of step {next} failed: {e}");
                tracing::error!("{reason}");
                {
                    let mut v = ctx.optimizer.lock();
                    v.stopped = true;
                }
                st.pending.clear();
                ctx.send(
                    |p| p.scheduler.clone(),
                    SchedulerMsg::Shutdown {
                        reason,
                        failed: true,
                    },
                );
                return Ok(());
            }
        }
    }
}

/// Advance the vault to step `batch.plan.step` in one go: step, cursor,
/// ledger, recent stats and (on a sync step) the teacher's weights. Nothing
/// here can fail, so a step is committed whole or not at all.
fn commit(
    v: &mut OptimizerVault,
    batch: &Batch,
    stats: StepStats,
    teacher: Option<crate::model::WeightSnapshot>,
) {
    let step = batch.plan.step;
    v.trained_through = step;
    v.cursor = batch.plan.cursor_after.clone();
    let ids = batch.plan.examples.iter().map(|e| e.id.clone()).collect();
    v.trained.push((step, ids));
    v.consecutive_skips = if stats.skipped {
        v.consecutive_skips + 1
    } else {
        0
    };
    v.recent.insert(step, stats);
    while v.recent.len() > RECENT_STATS {
        v.recent.pop_first();
    }
    if teacher.is_some() {
        v.teacher_snapshot = teacher;
    }
}

/// A copy of `snap` in host memory (the teacher weights the optimizer keeps
/// for restarts and checkpoints need not take accelerator memory).
pub fn cpu_copy(
    snap: &crate::model::WeightSnapshot,
) -> crate::Result<crate::model::WeightSnapshot> {
    let tensors = snap
        .tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.f_to_device(tch::Device::Cpu)?.f_detach_copy()?)))
        .collect::<crate::Result<Vec<_>>>()?;
    Ok(crate::model::WeightSnapshot {
        version: snap.version,
        tensors,
    })
}

/// Write a checkpoint of the last committed step (retrying once), unless
/// one of that step exists already. Emits [`RunEvent::Checkpoint`].
fn checkpoint_committed(ctx: &Ctx, v: &mut OptimizerVault) -> crate::Result<PathBuf> {
    if let Some((step, dir)) = &v.last_checkpoint {
        if *step == v.trained_through && dir.join(crate::checkpoint::MANIFEST_FILE).is_file() {
            return Ok(dir.clone());
        }
    }
    let dir = match write_checkpoint(ctx, v) {
        Ok(d) => d,
        Err(first) => {
            tracing::warn!("checkpoint write failed ({first}); retrying once");
            write_checkpoint(ctx, v)?
        }
    };
    v.last_checkpoint = Some((v.trained_through, dir.clone()));
    ctx.emit(RunEvent::Checkpoint(dir.clone()));
    Ok(dir)
}

/// The run state stored next to the weights: everything of the committed step.
pub fn checkpoint_state(ctx: &Ctx, v: &OptimizerVault) -> serde_json::Value {
    let step = v.trained_through;
    let ledger: Vec<&(u64, Vec<String>)> = v.trained_before.iter().chain(&v.trained).collect();
    let recent: Vec<&StepStats> = v.recent.values().filter(|s| s.step <= step).collect();
    serde_json::json!({
        "step": step,
        "policy_version": step,
        "trained_through": step,
        "seed": ctx.cfg.runtime.seed,
        "data_cursor": v.cursor,
        "teacher_version": v.teacher_snapshot.as_ref().map(|t| t.version),
        // One metrics line per committed step 1..=step.
        "metrics_lines": step,
        "recent_stats": recent,
        "trained": ledger,
    })
}

/// Write a checkpoint of the vault (the last committed step).
fn write_checkpoint(ctx: &Ctx, v: &OptimizerVault) -> crate::Result<PathBuf> {
    let state = checkpoint_state(ctx, v);
    let root = ctx.cfg.runtime.out_dir.join(&ctx.cfg.checkpoint.dir);
    let policy = &v.trainer.policy;
    let fault = ctx.faults.checkpoint_fault(v.trained_through);
    let write_model = |dir: &std::path::Path| -> crate::Result<()> {
        policy.save(dir)?;
        match fault {
            Some(FaultKind::Disk) => Err(crate::Error::io(
                dir,
                std::io::Error::from_raw_os_error(libc::ENOSPC),
            )),
            Some(FaultKind::Stall) => {
                std::thread::sleep(std::time::Duration::from_secs(3));
                Ok(())
            }
            _ => Ok(()),
        }
    };
    crate::checkpoint::save_checkpoint_with_teacher(
        &root,
        v.trained_through,
        &write_model,
        &v.trainer.optimizer.state_tensors(),
        v.teacher_snapshot.as_ref().map(|t| t.tensors.as_slice()),
        &state,
        &ctx.cfg.to_toml(),
        ctx.cfg.checkpoint.keep_last,
    )
}
