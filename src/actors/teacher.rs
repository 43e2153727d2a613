//! Teacher-scorer: owns the teacher replica (the policy, refreshed every
//! `teacher_sync_interval` steps), built in `pre_start` from the optimizer's
//! latest published teacher weights, and scores each response's tokens
//! under the privileged context, with no gradient, with exactly the teacher
//! version the step's plan names (from the commit board). CEPO adds a
//! second pass.

use super::commit::{CommitReader, ReplicaSpec};
use super::messages::{CreditMsg, TeacherMsg};
use super::replica::Replica;
use super::shared::Shared;
use crate::cuda::Stream;
use crate::data::TeacherPrompt;
use crate::fault::Role;
use crate::pipeline::{teacher_pass, ScoredBatch};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::Instant;

pub use crate::pipeline::required_teacher_version;

/// The teacher-scorer actor.
#[derive(Debug)]
pub struct TeacherScorer;

/// What the supervisor hands a (re)spawned teacher-scorer.
#[derive(Debug)]
pub struct TeacherArgs {
    /// Run context.
    pub shared: Arc<Shared>,
    /// How to build the replica.
    pub spec: ReplicaSpec,
    /// The optimizer's published commits.
    pub commits: CommitReader,
    /// Teacher prompt wording.
    pub template: TeacherPrompt,
    /// The CUDA stream all its work runs on ([`Stream::none`] on the CPU).
    pub stream: Stream,
}

/// The teacher's own state.
#[derive(Debug)]
pub struct TeacherState {
    args: TeacherArgs,
    /// The teacher replica and the teacher weights version it holds.
    replica: Replica,
    /// Batches waiting for the teacher weights they need.
    #[allow(clippy::vec_box)] // batches arrive boxed and leave boxed
    waiting: Vec<Box<ScoredBatch>>,
}

impl Actor for TeacherScorer {
    type Msg = TeacherMsg;
    type State = TeacherState;
    type Arguments = TeacherArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: TeacherArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let last = args.commits.latest();
        let replica = Replica::build(args.spec.clone(), last.teacher.clone(), args.stream).await?;
        Ok(TeacherState {
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
            TeacherMsg::Committed(_) => {
                for b in std::mem::take(&mut st.waiting) {
                    score(st, b).await?;
                }
            }
            TeacherMsg::Score(batch) => score(st, batch).await?,
        }
        Ok(())
    }
}

async fn score(st: &mut TeacherState, batch: Box<ScoredBatch>) -> Result<(), ActorProcessingErr> {
    let plan = &batch.rollout.plan;
    // The teacher of the commit the plan names (`min_version`; the oldest
    // kept after it when a resumed checkpoint lacks it): exactly
    // `plan.teacher_version`, never a newer one. Wait for it even when the
    // plan needs no teacher, so the logged teacher version is the one a
    // sequential loop would report.
    let Some(commit) = st.args.commits.at_or_after(plan.min_version) else {
        st.waiting.push(batch);
        return Ok(());
    };
    if plan.needs_teacher {
        st.replica.install(&commit.teacher).await?;
    }
    let version = commit.teacher.version();
    let shared = st.args.shared.clone();
    shared.faults.check(Role::Teacher, plan.step)?;
    let t0 = Instant::now();
    let template = st.args.template.clone();
    let cfg = shared.clone();
    let mut taught = st
        .replica
        .run(move |m| {
            let c = &cfg.cfg;
            teacher_pass(
                m,
                version,
                &template,
                *batch,
                &c.algo,
                c.rollout.temperature,
                c.optim.max_tokens_per_micro_batch,
            )
        })
        .await?;
    taught.scored.rollout.timings.teacher_s = t0.elapsed().as_secs_f64();
    shared.send(|p| p.credit.clone(), CreditMsg::Assign(Box::new(taught)));
    Ok(())
}
