//! Sampler: owns a policy replica, built in `pre_start` from the optimizer's
//! latest published commit, and generates `G` responses per prompt with a KV
//! cache, tagging the batch with the policy version that made it: exactly
//! the plan's `min_version`, loaded from the commit board (which keeps the
//! versions in flight). [`SamplerMsg::Committed`] says a new version is there.

use super::commit::{CommitReader, Published, ReplicaSpec};
use super::messages::{SamplerMsg, StepPlan, VerifierMsg};
use super::replica::Replica;
use super::shared::Shared;
use crate::cuda::Stream;
use crate::fault::Role;
use crate::pipeline::episode_rollout::rollout_episodes;
use crate::pipeline::rollout;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::Instant;

/// The sampler actor.
#[derive(Debug)]
pub struct Sampler;

/// What the supervisor hands a (re)spawned sampler.
#[derive(Debug)]
pub struct SamplerArgs {
    /// Run context.
    pub shared: Arc<Shared>,
    /// How to build the replica.
    pub spec: ReplicaSpec,
    /// The optimizer's published commits.
    pub commits: CommitReader,
    /// The CUDA stream all its work runs on ([`Stream::none`] on the CPU).
    pub stream: Stream,
}

/// The sampler's own state.
#[derive(Debug)]
pub struct SamplerState {
    args: SamplerArgs,
    /// The policy replica and the version it holds.
    replica: Replica,
    /// Highest step known to be committed (its prompts need no sampling).
    committed: u64,
    /// Plans whose `min_version` is not yet committed; run when it is.
    waiting: Vec<StepPlan>,
}

impl Actor for Sampler {
    type Msg = SamplerMsg;
    type State = SamplerState;
    type Arguments = SamplerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SamplerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let last = args.commits.latest();
        let replica = Replica::build(args.spec.clone(), last.policy.clone(), args.stream).await?;
        Ok(SamplerState {
            committed: last.step,
            replica,
            waiting: Vec::new(),
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
            SamplerMsg::Committed(p) => {
                note_commit(st, &p);
                for plan in std::mem::take(&mut st.waiting) {
                    generate(st, plan).await?;
                }
            }
            SamplerMsg::Generate(plan) => generate(st, plan).await?,
        }
        Ok(())
    }
}

/// Note a commit: the plans waiting for its version can run.
fn note_commit(st: &mut SamplerState, p: &Published) {
    st.committed = st.committed.max(p.step);
}

async fn generate(st: &mut SamplerState, plan: StepPlan) -> Result<(), ActorProcessingErr> {
    let committed = st.committed.max(st.args.commits.latest().step);
    if plan.step <= committed {
        return Ok(()); // already trained (a duplicate from a re-issue)
    }
    // Exactly the version the plan names, never a newer one (the oldest
    // kept after it when a resumed checkpoint lacks it): the run is a pure
    // function of its config at any staleness.
    let Some(weights) = st.args.commits.at_or_after(plan.min_version) else {
        st.waiting.push(plan);
        return Ok(());
    };
    st.replica.install(&weights.policy).await?;
    let shared = st.args.shared.clone();
    shared.faults.check(Role::Sampler, plan.step)?;
    let t0 = Instant::now();
    let version = st.replica.version();
    let cfg = shared.clone();
    let mut batch = st
        .replica
        .run(move |m| match &cfg.env {
            Some(env) => rollout_episodes(m, plan, version, &cfg.cfg, env),
            None => rollout(m, plan, version, &cfg.cfg.rollout),
        })
        .await?;
    batch.timings.generate_s = t0.elapsed().as_secs_f64();
    shared.send(|p| p.verifier.clone(), VerifierMsg::Verify(Box::new(batch)));
    Ok(())
}
