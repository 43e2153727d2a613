//! Scheduler: owns the step counter, the lambda and learning-rate schedules,
//! the data cursor and the checkpoint cadence, and keeps the sampler at most
//! `max_staleness` policy versions ahead of the optimizer.

use super::ctx::{Ctx, RunEvent};
use super::fault::Role;
use super::messages::{OptimizerMsg, SamplerMsg, SchedulerMsg, StepPlan};
use super::stages::step_seed;
use crate::error::Result;
use crate::rlsd::{lambda_at, lr_at};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::Duration;

/// The scheduler actor (configuration lives in [`Ctx`]).
#[derive(Debug)]
pub struct Scheduler;

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = Arc<Ctx>;
    type Arguments = Arc<Ctx>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        ctx: Arc<Ctx>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ctx)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        ctx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SchedulerMsg::Start => issue_more(ctx)?,
            SchedulerMsg::Reissue => {
                let plans: Vec<StepPlan> =
                    ctx.scheduler.lock().in_flight.values().cloned().collect();
                for plan in plans {
                    tracing::info!(step = plan.step, "re-issuing in-flight step");
                    ctx.send(|p| p.sampler.clone(), SamplerMsg::Generate(plan));
                }
                issue_more(ctx)?;
            }
            SchedulerMsg::StepDone(stats) => {
                let step = stats.step;
                ctx.faults.check(Role::Scheduler, step)?;
                let finished = {
                    let mut v = ctx.scheduler.lock();
                    if step <= v.done_through {
                        return Ok(()); // duplicate answer to a re-issued step
                    }
                    v.done_through = step;
                    if let Some(plan) = v.in_flight.remove(&step) {
                        v.cursor_done = plan.cursor_after;
                    }
                    v.done_through >= ctx.cfg.runtime.steps
                };
                ctx.emit(RunEvent::Step(stats));
                let every = ctx.cfg.checkpoint.every_steps;
                if finished {
                    finish(ctx, "all steps done".into(), false).await;
                } else {
                    if every > 0 && step % every == 0 {
                        checkpoint(ctx).await;
                    }
                    issue_more(ctx)?;
                }
            }
            SchedulerMsg::Shutdown { reason, failed } => finish(ctx, reason, failed).await,
        }
        Ok(())
    }
}

/// Issue every step the staleness bound allows.
fn issue_more(ctx: &Ctx) -> Result<()> {
    let rt = &ctx.cfg.runtime;
    loop {
        let plan = {
            let mut v = ctx.scheduler.lock();
            let s = v.next_step;
            if v.stopping || s > rt.steps || s > v.done_through + 1 + rt.max_staleness {
                return Ok(());
            }
            let examples = v.source.next_batch(ctx.cfg.rollout.batch_prompts)?;
            let plan = StepPlan {
                step: s,
                examples,
                lambda: lambda_at(s, &ctx.cfg.algo),
                lr: lr_at(s, &ctx.cfg.optim),
                min_version: (s - 1).saturating_sub(rt.max_staleness),
                seed: step_seed(rt.seed, s),
                cursor_after: v.source.cursor(),
            };
            v.in_flight.insert(s, plan.clone());
            v.next_step += 1;
            plan
        };
        tracing::debug!(step = plan.step, "issuing step");
        ctx.send(|p| p.sampler.clone(), SamplerMsg::Generate(plan));
    }
}

/// The state a checkpoint needs from the scheduler.
fn scheduler_state(ctx: &Ctx) -> serde_json::Value {
    let v = ctx.scheduler.lock();
    serde_json::json!({
        "step": v.done_through,
        "policy_version": v.done_through,
        "seed": ctx.cfg.runtime.seed,
        "data_cursor": v.cursor_done,
    })
}

/// Ask the optimizer to write a checkpoint (it owns the weights).
async fn checkpoint(ctx: &Ctx) {
    let state = scheduler_state(ctx);
    let Some(opt) = ctx.peers.read().optimizer.clone() else {
        return;
    };
    let res = opt
        .call(
            |reply| OptimizerMsg::Checkpoint { state, reply },
            Some(Duration::from_secs(600)),
        )
        .await;
    match res {
        Ok(ractor::rpc::CallResult::Success(Ok(dir))) => {
            // checkpoint::save logs the written checkpoint once; this is for debugging.
            tracing::debug!("checkpoint written to {}", dir.display());
            ctx.emit(RunEvent::Checkpoint(dir));
        }
        Ok(ractor::rpc::CallResult::Success(Err(e))) => tracing::error!("checkpoint failed: {e}"),
        Ok(other) => tracing::error!("checkpoint not answered: {other:?}"),
        Err(e) => tracing::error!("checkpoint request failed: {e}"),
    }
}

/// Stop issuing, write the final checkpoint, and tell the run loop.
async fn finish(ctx: &Ctx, reason: String, failed: bool) {
    {
        let mut v = ctx.scheduler.lock();
        if v.stopping {
            return;
        }
        v.stopping = true;
    }
    if ctx.scheduler.lock().done_through > 0 {
        checkpoint(ctx).await;
    }
    ctx.emit(RunEvent::Finished { reason, failed });
}
