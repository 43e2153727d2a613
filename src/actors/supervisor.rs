//! The supervisor: spawns the six actors linked to itself, respawns a failed
//! one from its last state (the vaults in [`Ctx`]), has the in-flight steps
//! re-issued, and turns a crash loop (more than `max_restarts` within
//! `restart_window_s`) into a clean stop with a final checkpoint.

use super::credit::CreditAssigner;
use super::ctx::{Ctx, RunEvent};
use super::fault::Role;
use super::messages::{OptimizerMsg, SchedulerMsg};
use super::optimizer::Optimizer;
use super::sampler::Sampler;
use super::scheduler::Scheduler;
use super::teacher::TeacherScorer;
use super::verifier::VerifierPool;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The supervisor actor.
#[derive(Debug)]
pub struct Supervisor;

/// Messages to the supervisor.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Start the run (sent once the tree is up).
    Start,
    /// Stop gracefully (Ctrl-C).
    Shutdown(String),
}

/// Supervisor state.
#[derive(Debug)]
pub struct SupervisorState {
    ctx: Arc<Ctx>,
    /// Which role each live child plays.
    roles: HashMap<ActorId, Role>,
    /// Times of recent restarts (the budget's window).
    recent: VecDeque<Instant>,
    /// Set once the budget is spent.
    gave_up: bool,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<Ctx>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: Arc<Ctx>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut st = SupervisorState {
            ctx,
            roles: HashMap::new(),
            recent: VecDeque::new(),
            gave_up: false,
        };
        for role in Role::ALL {
            spawn_role(&mut st, role, myself.get_cell()).await?;
        }
        Ok(st)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start => st.ctx.send(|p| p.scheduler.clone(), SchedulerMsg::Start),
            SupervisorMsg::Shutdown(reason) => st.ctx.send(
                |p| p.scheduler.clone(),
                SchedulerMsg::Shutdown {
                    reason,
                    failed: false,
                },
            ),
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
                if st.ctx.scheduler.lock().stopping {
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
        let now = Instant::now();
        let window = Duration::from_secs_f64(st.ctx.cfg.runtime.restart_window_s);
        st.recent.push_back(now);
        while st
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            st.recent.pop_front();
        }
        let over_budget = st.recent.len() as u32 > st.ctx.cfg.runtime.max_restarts;
        spawn_role(st, role, myself.get_cell()).await?;
        *st.ctx.restarts.lock().entry(role).or_default() += 1;
        st.ctx.emit(RunEvent::Restarted(role));
        if over_budget {
            st.gave_up = true;
            let reason = format!(
                "restart budget spent: {} restarts within {:.0}s (last: {} {why})",
                st.recent.len(),
                window.as_secs_f64(),
                role.name()
            );
            tracing::error!("{reason}");
            st.ctx.send(
                |p| p.scheduler.clone(),
                SchedulerMsg::Shutdown {
                    reason,
                    failed: true,
                },
            );
            return Ok(());
        }
        if matches!(role, Role::Sampler | Role::Teacher) {
            st.ctx
                .send(|p| p.optimizer.clone(), OptimizerMsg::Republish);
        }
        st.ctx.send(|p| p.scheduler.clone(), SchedulerMsg::Reissue);
        Ok(())
    }
}

/// Spawn (or respawn) the actor of `role`, linked to the supervisor, and make
/// it the peer everyone sends to.
async fn spawn_role(
    st: &mut SupervisorState,
    role: Role,
    sup: ActorCell,
) -> Result<(), ActorProcessingErr> {
    let ctx = st.ctx.clone();
    let id = match role {
        Role::Scheduler => {
            let (r, _) = Actor::spawn_linked(None, Scheduler, ctx.clone(), sup).await?;
            let id = r.get_id();
            ctx.peers.write().scheduler = Some(r);
            id
        }
        Role::Sampler => {
            let (r, _) = Actor::spawn_linked(None, Sampler, ctx.clone(), sup).await?;
            let id = r.get_id();
            ctx.peers.write().sampler = Some(r);
            id
        }
        Role::Verifier => {
            let (r, _) = Actor::spawn_linked(None, VerifierPool, ctx.clone(), sup).await?;
            let id = r.get_id();
            ctx.peers.write().verifier = Some(r);
            id
        }
        Role::Teacher => {
            let (r, _) = Actor::spawn_linked(None, TeacherScorer, ctx.clone(), sup).await?;
            let id = r.get_id();
            ctx.peers.write().teacher = Some(r);
            id
        }
        Role::Credit => {
            let (r, _) = Actor::spawn_linked(None, CreditAssigner, ctx.clone(), sup).await?;
            let id = r.get_id();
            ctx.peers.write().credit = Some(r);
            id
        }
        Role::Optimizer => {
            let (r, _) = Actor::spawn_linked(None, Optimizer, ctx.clone(), sup).await?;
            let id = r.get_id();
            ctx.peers.write().optimizer = Some(r);
            id
        }
    };
    st.roles.insert(id, role);
    Ok(())
}
