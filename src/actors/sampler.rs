//! Sampler: owns a policy replica and generates `G` responses per prompt with
//! a KV cache, tagging the batch with the policy version that made it.

use super::ctx::{join_err, Ctx};
use super::fault::Role;
use super::messages::{Batch, SamplerMsg, StepPlan, VerifierMsg};
use super::stages::rollout;
use crate::stats::StageTimings;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::Instant;

/// The sampler actor.
#[derive(Debug)]
pub struct Sampler;

/// Sampler state: plans waiting for newer weights.
#[derive(Debug)]
pub struct SamplerState {
    ctx: Arc<Ctx>,
    /// Plans whose `min_version` is ahead of the replica; run when weights arrive.
    waiting: Vec<StepPlan>,
}

impl Actor for Sampler {
    type Msg = SamplerMsg;
    type State = SamplerState;
    type Arguments = Arc<Ctx>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        ctx: Arc<Ctx>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SamplerState {
            ctx,
            waiting: Vec::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SamplerMsg::Weights(snap) => {
                st.ctx.install_snapshot(|c| &c.sampler, snap).await?;
                let ready: Vec<StepPlan> = std::mem::take(&mut st.waiting);
                for plan in ready {
                    generate(st, plan).await?;
                }
            }
            SamplerMsg::Generate(plan) => generate(st, plan).await?,
        }
        Ok(())
    }
}

async fn generate(st: &mut SamplerState, plan: StepPlan) -> Result<(), ActorProcessingErr> {
    let ctx = st.ctx.clone();
    if ctx.scheduler.lock().done_through >= plan.step {
        return Ok(()); // already trained (a duplicate from a re-issue)
    }
    if ctx.sampler.lock().version < plan.min_version {
        st.waiting.push(plan);
        return Ok(());
    }
    ctx.faults.check(Role::Sampler, plan.step)?;
    let t0 = Instant::now();
    let c2 = ctx.clone();
    let batch = tokio::task::spawn_blocking(move || -> crate::Result<Batch> {
        let r = c2.sampler.lock();
        let samples = rollout(&r.model, &plan, &c2.cfg.rollout)?;
        Ok(Batch {
            plan,
            policy_version: r.version,
            teacher_version: 0,
            samples,
            timings: StageTimings::default(),
        })
    })
    .await
    .map_err(join_err)??;
    let mut batch = batch;
    batch.timings.generate_s = t0.elapsed().as_secs_f64();
    ctx.send(|p| p.verifier.clone(), VerifierMsg::Verify(Box::new(batch)));
    Ok(())
}
