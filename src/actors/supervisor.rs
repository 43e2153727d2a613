//! The supervisor: holds every actor's spawn arguments ([`Tree`]), spawns the
//! six actors linked to itself, respawns a failed one from the same
//! arguments (each actor rebuilds its own state in `pre_start`, restarting
//! from the optimizer's last published commit), has the in-flight steps
//! re-issued, and turns a crash loop (more than `max_restarts` within
//! `restart_window_s`) into a clean stop with a final checkpoint.

use super::commit::{CommitBoard, OptimizerCommit, ReplicaSpec};
use super::credit::CreditAssigner;
use super::messages::SchedulerMsg;
use super::messages::SupervisorMsg;
use super::optimizer::{Optimizer, OptimizerArgs};
use super::sampler::{Sampler, SamplerArgs};
use super::scheduler::{Scheduler, SchedulerArgs};
use super::shared::{RunEvent, Shared};
use super::streams::ActorStreams;
use super::teacher::{TeacherArgs, TeacherScorer};
use super::verifier::{VerifierArgs, VerifierPool};
use crate::data::{Example, TeacherPrompt};
use crate::fault::Role;
use crate::run::source::PromptSource;
use crate::verify::Verifier;
use parking_lot::Mutex;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the supervisor keeps to (re)build each actor: the builder's inputs.
/// Each field goes to one role only (`shared` and the commit board's readers
/// to all).
pub struct Tree {
    /// Configuration, fault plan, peers, event sink.
    pub shared: Arc<Shared>,
    /// The scheduler's prompt source (positioned at the start; a respawned
    /// scheduler rewinds it to the last commit's cursor).
    pub source: Arc<Mutex<Box<dyn PromptSource>>>,
    /// The optimizer's recovery state.
    pub optimizer: Arc<Mutex<OptimizerCommit>>,
    /// The optimizer's published commits.
    pub commits: CommitBoard,
    /// How the sampler builds its replica.
    pub sampler: ReplicaSpec,
    /// How the teacher builds its replica.
    pub teacher: ReplicaSpec,
    /// The reward function (the verifier pool's).
    pub verifier: Arc<dyn Verifier>,
    /// Teacher prompt wording (the teacher's).
    pub template: TeacherPrompt,
    /// The held-out prompts of `[validation]` (the optimizer's; empty when
    /// the run does not validate), read once at start.
    pub held_out: Arc<Vec<Example>>,
    /// The CUDA stream of each GPU actor (kept across respawns).
    pub streams: ActorStreams,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree")
            .field("shared", &self.shared)
            .finish()
    }
}

/// The supervisor actor.
#[derive(Debug)]
pub struct Supervisor;

/// Supervisor state.
#[derive(Debug)]
pub struct SupervisorState {
    tree: Arc<Tree>,
    /// Which role each live child plays.
    roles: HashMap<ActorId, Role>,
    /// Times of recent restarts (the budget's window).
    recent: VecDeque<Instant>,
    /// Set once the budget is spent.
    gave_up: bool,
    /// Set once the scheduler said the run is ending.
    stopping: bool,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<Tree>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        tree: Arc<Tree>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut st = SupervisorState {
            tree,
            roles: HashMap::new(),
            recent: VecDeque::new(),
            gave_up: false,
            stopping: false,
        };
        for role in Role::ALL {
            spawn_role(&mut st, role, &myself, false).await?;
        }
        Ok(st)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let shared = &st.tree.shared;
        match msg {
            SupervisorMsg::Start => shared.send(|p| p.scheduler.clone(), SchedulerMsg::Start),
            SupervisorMsg::Shutdown(reason) => shared.send(
                |p| p.scheduler.clone(),
                SchedulerMsg::Shutdown {
                    reason,
                    failed: false,
                },
            ),
            SupervisorMsg::Stopping => st.stopping = true,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if st.stopping {
                    return Ok(()); // orderly stop at the end of the run
                }
                (cell, format!("terminated: {reason:?}"))
            }
            _ => return Ok(()),
        };
        let Some(role) = st.roles.remove(&cell.get_id()) else {
            return Ok(());
        };
        tracing::warn!(role = role.name(), "actor failed: {why}");
        if st.gave_up {
            return Ok(());
        }
        let cfg = &st.tree.shared.cfg;
        let now = Instant::now();
        let window = Duration::from_secs_f64(cfg.runtime.restart_window_s);
        st.recent.push_back(now);
        while st
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            st.recent.pop_front();
        }
        let over_budget = st.recent.len() as u32 > cfg.runtime.max_restarts;
        spawn_role(st, role, &myself, true).await?;
        let shared = st.tree.shared.clone();
        shared.emit(RunEvent::Restarted(role));
        if over_budget {
            st.gave_up = true;
            let reason = format!(
                "restart budget spent: {} restarts within {:.0}s (last: {} {why})",
                st.recent.len(),
                window.as_secs_f64(),
                role.name()
            );
            tracing::error!("{reason}");
            shared.send(
                |p| p.scheduler.clone(),
                SchedulerMsg::Shutdown {
                    reason,
                    failed: true,
                },
            );
            return Ok(());
        }
        // The respawned actor restarts from the last commit; whatever it held
        // in flight is sent again.
        shared.send(|p| p.scheduler.clone(), SchedulerMsg::Reissue);
        Ok(())
    }
}

/// Build the arguments of `role` from the tree and spawn it (again), linked
/// to the supervisor; then make it the peer everyone sends to.
async fn spawn_role(
    st: &mut SupervisorState,
    role: Role,
    sup: &ActorRef<SupervisorMsg>,
    respawn: bool,
) -> Result<(), ActorProcessingErr> {
    let t = &st.tree;
    let shared = t.shared.clone();
    let cell: ActorCell = sup.get_cell();
    let id = match role {
        Role::Scheduler => {
            let args = SchedulerArgs {
                shared: shared.clone(),
                source: t.source.clone(),
                commits: t.commits.reader(),
                supervisor: sup.clone(),
                respawn,
            };
            let (r, _) = Actor::spawn_linked(None, Scheduler, args, cell).await?;
            let id = r.get_id();
            shared.peers.write().scheduler = Some(r);
            id
        }
        Role::Sampler => {
            let args = SamplerArgs {
                shared: shared.clone(),
                spec: t.sampler.clone(),
                commits: t.commits.reader(),
                stream: t.streams.sampler,
            };
            let (r, _) = Actor::spawn_linked(None, Sampler, args, cell).await?;
            let id = r.get_id();
            shared.peers.write().sampler = Some(r);
            id
        }
        Role::Verifier => {
            let args = VerifierArgs {
                shared: shared.clone(),
                verifier: t.verifier.clone(),
            };
            let (r, _) = Actor::spawn_linked(None, VerifierPool, args, cell).await?;
            let id = r.get_id();
            shared.peers.write().verifier = Some(r);
            id
        }
        Role::Teacher => {
            let args = TeacherArgs {
                shared: shared.clone(),
                spec: t.teacher.clone(),
                commits: t.commits.reader(),
                template: t.template.clone(),
                stream: t.streams.teacher,
            };
            let (r, _) = Actor::spawn_linked(None, TeacherScorer, args, cell).await?;
            let id = r.get_id();
            shared.peers.write().teacher = Some(r);
            id
        }
        Role::Credit => {
            let (r, _) = Actor::spawn_linked(None, CreditAssigner, shared.clone(), cell).await?;
            let id = r.get_id();
            shared.peers.write().credit = Some(r);
            id
        }
        Role::Optimizer => {
            let args = OptimizerArgs {
                shared: shared.clone(),
                commit: t.optimizer.clone(),
                board: t.commits.clone(),
                verifier: t.verifier.clone(),
                held_out: t.held_out.clone(),
                streams: t.streams,
            };
            let (r, _) = Actor::spawn_linked(None, Optimizer, args, cell).await?;
            let id = r.get_id();
            shared.peers.write().optimizer = Some(r);
            id
        }
    };
    st.roles.insert(id, role);
    Ok(())
}
