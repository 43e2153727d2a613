//! Scheduler: owns the step counter and the data source, plans each step
//! ([`StepPlan::new`]), and keeps the sampler at most `max_staleness` policy
//! versions ahead of the optimizer. It ends the run: at the last step, on a
//! shutdown request or a spent restart budget it asks the optimizer for the
//! final checkpoint (of the last *committed* step; periodic checkpoints are
//! the optimizer's own, taken right after the commit they describe).
//!
//! Its state is its own, built in `pre_start`: what is done comes from the
//! optimizer (`StepDone` messages and the published commits). A respawned
//! scheduler restarts from the last commit: it rewinds its source to that
//! commit's data cursor and plans the following steps again (the same
//! prompts, the same seeds).

use super::commit::CommitReader;
use super::messages::SupervisorMsg;
use super::messages::{OptimizerMsg, SamplerMsg, SchedulerMsg, StepPlan};
use super::shared::{RunEvent, Shared};
use crate::error::Result;
use crate::fault::Role;
use crate::run::source::PromptSource;
use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The scheduler actor.
#[derive(Debug)]
pub struct Scheduler;

/// What the supervisor hands a (re)spawned scheduler.
pub struct SchedulerArgs {
    /// Run context.
    pub shared: Arc<Shared>,
    /// The prompt source (only the scheduler draws from it).
    pub source: Arc<Mutex<Box<dyn PromptSource>>>,
    /// The optimizer's published commits.
    pub commits: CommitReader,
    /// The supervisor, told when the run is ending.
    pub supervisor: ActorRef<SupervisorMsg>,
    /// True for a respawn: rewind the source to the last commit.
    pub respawn: bool,
}

impl std::fmt::Debug for SchedulerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerArgs")
            .field("respawn", &self.respawn)
            .finish()
    }
}

/// The scheduler's own state.
#[derive(Debug)]
pub struct SchedulerState {
    args: SchedulerArgs,
    /// Next step to plan.
    next_step: u64,
    /// Highest step the optimizer has committed (as far as this actor knows).
    done_through: u64,
    /// Steps issued but not committed, with their plans (re-issued after a restart).
    in_flight: BTreeMap<u64, StepPlan>,
    /// Set once the run is stopping.
    stopping: bool,
}

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = SchedulerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SchedulerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let last = args.commits.latest();
        if args.respawn {
            if let Err(e) = args.source.lock().restore(&last.cursor) {
                tracing::warn!(
                    "the prompt source cannot rewind to step {}'s cursor ({e}); continuing from where it is",
                    last.step
                );
            }
        }
        Ok(SchedulerState {
            next_step: last.step + 1,
            done_through: last.step,
            in_flight: BTreeMap::new(),
            stopping: false,
            args,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SchedulerMsg::Start => advance(st).await?,
            SchedulerMsg::Reissue => {
                // Steps committed while a peer was being respawned may have
                // sent their `StepDone` to nobody: the board has them.
                let committed = st.args.commits.latest().step;
                mark_done(st, committed);
                for plan in st.in_flight.values() {
                    tracing::info!(step = plan.step, "re-issuing in-flight step");
                    st.args
                        .shared
                        .send(|p| p.sampler.clone(), SamplerMsg::Generate(plan.clone()));
                }
                advance(st).await?;
            }
            SchedulerMsg::StepDone(stats) => {
                st.args.shared.faults.check(Role::Scheduler, stats.step)?;
                // Steps commit in order, so `step` done means every earlier one is.
                mark_done(st, stats.step);
                advance(st).await?;
            }
            SchedulerMsg::Shutdown { reason, failed } => finish(st, reason, failed).await,
        }
        Ok(())
    }
}

/// Record that the optimizer committed every step through `step`.
fn mark_done(st: &mut SchedulerState, step: u64) {
    st.done_through = st.done_through.max(step);
    st.next_step = st.next_step.max(st.done_through + 1);
    let done = st.done_through;
    st.in_flight.retain(|&s, _| s > done);
}

/// Finish when every step is done, else issue what the staleness bound allows.
async fn advance(st: &mut SchedulerState) -> Result<()> {
    if st.done_through >= st.args.shared.cfg.runtime.steps {
        finish(st, "all steps done".into(), false).await;
        return Ok(());
    }
    issue_more(st)
}

/// Issue every step the staleness bound allows.
fn issue_more(st: &mut SchedulerState) -> Result<()> {
    let shared = st.args.shared.clone();
    let cfg = &shared.cfg;
    let rt = &cfg.runtime;
    loop {
        let s = st.next_step;
        if st.stopping
            || shared.stop.requested()
            || s > rt.steps
            || s > st.done_through + 1 + rt.max_staleness
        {
            return Ok(());
        }
        let plan = {
            let mut source = st.args.source.lock();
            let examples = source.next_batch(cfg.rollout.batch_prompts)?;
            let plan = StepPlan::new(cfg, s, rt.max_staleness, examples, source.cursor());
            // lambda of an adaptive schedule: from the state after step
            // `min_version` (s - 1 - max_staleness), committed by now, so
            // that it does not depend on timing.
            let commit = st
                .args
                .commits
                .at_or_after(plan.min_version)
                .unwrap_or_else(|| st.args.commits.latest());
            plan.with_schedule(&cfg.algo, &commit.adaptive)
        };
        st.in_flight.insert(s, plan.clone());
        st.next_step += 1;
        tracing::debug!(step = plan.step, "issuing step");
        shared.send(|p| p.sampler.clone(), SamplerMsg::Generate(plan));
    }
}

/// Ask the optimizer for the final checkpoint (it owns every part of it).
/// Returns the failure, if any.
async fn final_checkpoint(shared: &Shared) -> Option<String> {
    let opt = shared.peers.read().optimizer.clone()?;
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
async fn finish(st: &mut SchedulerState, reason: String, failed: bool) {
    if st.stopping {
        return;
    }
    st.stopping = true;
    let _ = st.args.supervisor.cast(SupervisorMsg::Stopping);
    let shared = st.args.shared.clone();
    // Whatever asked for the stop (a spent restart budget, a failed
    // checkpoint), nothing queued behind it is trained.
    shared.request_stop();
    let (reason, failed) = match final_checkpoint(&shared).await {
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
    shared.emit(RunEvent::Finished { reason, failed });
}
