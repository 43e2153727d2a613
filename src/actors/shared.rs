//! What every actor of one run may see: the configuration, the fault plan,
//! the current references to its peers (a routing table the supervisor keeps
//! up to date, like a registry of names) and the run loop's event sink.
//! Nothing here is an actor's state: each actor owns its own, built in
//! `pre_start` from the arguments its supervisor holds ([`super::supervisor`]),
//! and learns about the others' progress only from messages and from the
//! optimizer's published commits ([`super::commit`]).

use super::messages::{CreditMsg, OptimizerMsg, SamplerMsg, SchedulerMsg, TeacherMsg, VerifierMsg};
use crate::config::RunConfig;
use crate::fault::{FaultPlan, Role};
use crate::pipeline::multi_turn::EnvRuntime;
use crate::stats::StepStats;
use parking_lot::RwLock;
use ractor::ActorRef;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc::UnboundedSender;

/// Current references to the six actors; the supervisor swaps an entry when it
/// respawns a child, so peers never hold a stale reference.
#[derive(Debug, Default)]
pub struct Peers {
    /// The scheduler.
    pub scheduler: Option<ActorRef<SchedulerMsg>>,
    /// The sampler.
    pub sampler: Option<ActorRef<SamplerMsg>>,
    /// The verifier pool.
    pub verifier: Option<ActorRef<VerifierMsg>>,
    /// The teacher-scorer.
    pub teacher: Option<ActorRef<TeacherMsg>>,
    /// The credit-assigner.
    pub credit: Option<ActorRef<CreditMsg>>,
    /// The optimizer.
    pub optimizer: Option<ActorRef<OptimizerMsg>>,
}

/// What the run loop hears from the actor tree.
#[derive(Debug)]
pub enum RunEvent {
    /// A step was committed (in step order).
    Step(Box<StepStats>),
    /// A checkpoint was written.
    Checkpoint(std::path::PathBuf),
    /// An actor was respawned.
    Restarted(Role),
    /// The run is over.
    Finished {
        /// Why it ended.
        reason: String,
        /// True when it ended by failure (e.g. the restart budget ran out).
        failed: bool,
    },
}

/// The read-only context of one run, shared by its actors.
#[derive(Debug)]
pub struct Shared {
    /// The resolved configuration.
    pub cfg: RunConfig,
    /// The environment of multi-turn episodes (`None`: single-turn rollouts).
    pub env: Option<EnvRuntime>,
    /// Planned failures (tests and rehearsals).
    pub faults: FaultPlan,
    /// Current peer references (written by the supervisor only).
    pub peers: RwLock<Peers>,
    /// Events for the run loop.
    pub events: UnboundedSender<RunEvent>,
    /// Whether each step's stats carry every response's record
    /// (`StepStats::responses`: the embedding program's `on_step_responses`).
    pub record_responses: bool,
    /// Set the moment a stop is requested (a signal, a failed metrics
    /// write): read by the scheduler before it issues a plan and by the
    /// optimizer before it trains one, so nothing queued behind the request
    /// in a mailbox is trained ([`Shared::request_stop`]).
    pub stop: StopFlag,
}

/// A stop request, seen by every actor at once rather than in mailbox order.
///
/// A shutdown message reaches the optimizer behind whatever its mailbox
/// already holds: while it writes a checkpoint (seconds), the batches of the
/// next one or two steps queue up in front of the final-checkpoint request and
/// would be trained first. The flag is read between steps instead, so the
/// optimizer finishes at most the step it is training when the request comes.
#[derive(Debug, Default)]
pub struct StopFlag(AtomicBool);

impl StopFlag {
    /// True once a stop was requested.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Shared {
    /// Send to the current actor of a role; a send that fails (the actor is
    /// being respawned) is logged, and the re-issue after the respawn covers it.
    pub fn send<M: ractor::Message + std::fmt::Debug>(
        &self,
        pick: impl FnOnce(&Peers) -> Option<ActorRef<M>>,
        msg: M,
    ) {
        let target = pick(&self.peers.read());
        match target {
            Some(r) => {
                if let Err(e) = r.cast(msg) {
                    tracing::debug!("send failed (peer restarting?): {e}");
                }
            }
            None => tracing::debug!("no peer to send to (restarting?)"),
        }
    }

    /// Ask the run to stop: from now on no plan is issued and no batch is
    /// trained after the step being trained. The scheduler still has to be
    /// told (`SchedulerMsg::Shutdown`) to write the final checkpoint.
    pub fn request_stop(&self) {
        self.stop.0.store(true, Ordering::SeqCst);
    }

    /// Tell the run loop something.
    pub fn emit(&self, ev: RunEvent) {
        let _ = self.events.send(ev);
    }
}

/// Turn a join error of a blocking task into an actor failure, keeping a
/// panic's message.
pub fn join_err(e: tokio::task::JoinError) -> ractor::ActorProcessingErr {
    if e.is_panic() {
        let p = e.into_panic();
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        format!("panicked: {msg}").into()
    } else {
        format!("blocking task failed: {e}").into()
    }
}
