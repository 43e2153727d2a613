//! Credit-assigner: group-relative advantages from the rewards. The token
//! weights themselves need the student's log-probs from the train step's own
//! forward (RLSD-SPEC: "current policy, detached"), so the final `Ahat_t` is
//! formed in the train step by the same `src/rlsd/` function.

use super::ctx::Ctx;
use super::fault::Role;
use super::messages::{CreditMsg, OptimizerMsg};
use super::stages::assign_advantages;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::Instant;

/// The credit-assigner actor.
#[derive(Debug)]
pub struct CreditAssigner;

impl Actor for CreditAssigner {
    type Msg = CreditMsg;
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
        let CreditMsg::Assign(mut batch) = msg;
        ctx.faults.check(Role::Credit, batch.plan.step)?;
        let t0 = Instant::now();
        assign_advantages(
            &mut batch.samples,
            ctx.cfg.rollout.group_size,
            &ctx.cfg.algo,
        )?;
        batch.timings.credit_s = t0.elapsed().as_secs_f64();
        ctx.send(|p| p.optimizer.clone(), OptimizerMsg::Train(batch));
        Ok(())
    }
}
