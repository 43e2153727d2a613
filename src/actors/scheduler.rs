//! Scheduler: owns the step counter, the lambda and learning-rate schedules
//! and the data source, and keeps the sampler at most `max_staleness` policy
//! versions ahead of the optimizer. It ends the run: at the last step, on a
//! shutdown request or a spent restart budget it asks the optimizer for the
//! final checkpoint (of the last *committed* step; periodic checkpoints are
//! the optimizer's own, taken right after the commit they describe).

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
                    // Steps commit in order, so `step` done means every earlier one is.
                    v.done_through = v.done_through.max(step);
                    v.in_flight.retain(|&s, _| s > step);
                    v.done_through >= ctx.cfg.runtime.steps
                };
                if finished {
                    finish(ctx, "all steps done".into(), false).await;
                } else {
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

/// Ask the optimizer for the final checkpoint (it owns every part of it).
/// Returns the failure, if any.
async fn final_checkpoint(ctx: &Ctx) -> Option<String> {
    let opt = ctx.peers.read().optimizer.clone()?;
    let res = opt
        .call(
            |reply| OptimizerMsg::Checkpoint { last: true, reply },
            Some(Duration::from_secs(3600)),
        )
        .await;
    match res {
        Ok(ractor::rpc::CallResult::Success(Ok(dir))) => {
            if let Some(dir) = dir {
                // checkpoint::save logs the written checkpoint once; this is for debugging.
                tracing::debug!("final checkpoint: {}", dir.display());
            }
            None
        }
        Ok(ractor::rpc::CallResult::Success(Err(e))) => {
            Some(format!("final checkpoint failed: {e}"))
        }
        Ok(other) => Some(format!("final checkpoint not answered: {other:?}")),
        Err(e) => Some(format!("final checkpoint request failed: {e}")),
    }
}

/// Stop issuing, write the final checkpoint, and tell the run loop. A final
/// checkpoint that cannot be written turns the run into a failure.
async fn finish(ctx: &Ctx, reason: String, failed: bool) {
    {
        let mut v = ctx.scheduler.lock();
        if v.stopping {
            return;
        }
        v.stopping = true;
    }
    let (reason, failed) = match final_checkpoint(ctx).await {
        Some(err) if !failed => {
            tracing::error!("{err}");
            (format!("{reason}; {err}"), true)
        }
        Some(err) => {
            tracing::error!("{err}");
            (reason, failed)
        }
        None => (reason, failed),
    };
    ctx.emit(RunEvent::Finished { reason, failed });
}
