//! Credit-assigner: group-relative advantages from the rewards. The token
//! weights themselves need the student's log-probs from the train step's own
//! forward (RLSD-SPEC: "current policy, detached"), so the final `Ahat_t` is
//! formed in the train step by the same `src/rlsd/` function. Stateless: it
//! needs only the run context.

use super::messages::{CreditMsg, OptimizerMsg};
use super::shared::Shared;
use crate::fault::Role;
use crate::pipeline::assign_credit;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::Instant;

/// The credit-assigner actor.
#[derive(Debug)]
pub struct CreditAssigner;

impl Actor for CreditAssigner {
    type Msg = CreditMsg;
    type State = Arc<Shared>;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(shared)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let CreditMsg::Assign(batch) = msg;
        shared
            .faults
            .check(Role::Credit, batch.scored.rollout.plan.step)?;
        let t0 = Instant::now();
        let cfg = &shared.cfg;
        let mut credit = assign_credit(*batch, cfg.rollout.group_size, &cfg.algo)?;
        credit.taught.scored.rollout.timings.credit_s = t0.elapsed().as_secs_f64();
        shared.send(
            |p| p.optimizer.clone(),
            OptimizerMsg::Train(Box::new(credit)),
        );
        Ok(())
    }
}
