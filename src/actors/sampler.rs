//! Sampler: owns a policy replica, built in `pre_start` from the optimizer's
//! latest published commit, and generates `G` responses per prompt with a KV
//! cache, tagging the batch with the policy version that made it. Newer
//! weights arrive as [`SamplerMsg::Committed`].

use super::commit::{CommitReader, Published, ReplicaSpec};
use super::fault::Role;
use super::messages::{SamplerMsg, StepPlan, VerifierMsg};
use super::shared::{join_err, Shared};
use crate::cuda::Stream;
use crate::model::LoadedModel;
use crate::pipeline::rollout;
use parking_lot::Mutex;
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
    /// The replica (behind a lock only so blocking threads can use it; no
    /// other actor sees it).
    replica: Arc<Mutex<LoadedModel>>,
    /// Policy version the replica holds.
    version: u64,
    /// Highest step known to be committed (its prompts need no sampling).
    committed: u64,
    /// Plans whose `min_version` is ahead of the replica; run when weights arrive.
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
        let spec = args.spec.clone();
        let weights = last.policy.clone();
        let stream = args.stream;
        let model = tokio::task::spawn_blocking(move || {
            let _on = stream.enter()?;
            spec.build(&weights)
        })
        .await
        .map_err(join_err)??;
        Ok(SamplerState {
            version: last.policy.version(),
            committed: last.step,
            replica: Arc::new(Mutex::new(model)),
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
                install(st, p).await?;
                for plan in std::mem::take(&mut st.waiting) {
                    generate(st, plan).await?;
                }
            }
            SamplerMsg::Generate(plan) => generate(st, plan).await?,
        }
        Ok(())
    }
}

/// Load a commit's policy weights unless the replica holds them or newer.
async fn install(st: &mut SamplerState, p: Arc<Published>) -> Result<(), ActorProcessingErr> {
    st.committed = st.committed.max(p.step);
    if p.policy.version() <= st.version {
        return Ok(());
    }
    let replica = st.replica.clone();
    let weights = p.policy.clone();
    let stream = st.args.stream;
    tokio::task::spawn_blocking(move || {
        let _on = stream.enter()?;
        weights.load_into(&mut replica.lock())
    })
    .await
    .map_err(join_err)??;
    st.version = p.policy.version();
    Ok(())
}

async fn generate(st: &mut SamplerState, plan: StepPlan) -> Result<(), ActorProcessingErr> {
    let committed = st.committed.max(st.args.commits.latest().step);
    if plan.step <= committed {
        return Ok(()); // already trained (a duplicate from a re-issue)
    }
    if st.version < plan.min_version {
        st.waiting.push(plan);
        return Ok(());
    }
    let shared = st.args.shared.clone();
    shared.faults.check(Role::Sampler, plan.step)?;
    let t0 = Instant::now();
    let replica = st.replica.clone();
    let version = st.version;
    let cfg = shared.clone();
    let stream = st.args.stream;
    let mut batch = tokio::task::spawn_blocking(move || {
        let _on = stream.enter()?;
        rollout(&replica.lock(), plan, version, &cfg.cfg.rollout)
    })
    .await
    .map_err(join_err)??;
    batch.timings.generate_s = t0.elapsed().as_secs_f64();
    shared.send(|p| p.verifier.clone(), VerifierMsg::Verify(Box::new(batch)));
    Ok(())
}
