//! What every actor of one run shares: the configuration, the current
//! references to its peers, and the *vaults*: state that must outlive an
//! actor's crash (model replicas, the trainer, the scheduler's cursor), so a
//! respawned actor continues from its last state.

use super::fault::{FaultPlan, Role};
use super::messages::{CreditMsg, OptimizerMsg, SamplerMsg, SchedulerMsg, TeacherMsg, VerifierMsg};
use super::source::PromptSource;
use crate::config::RunConfig;
use crate::data::TeacherPrompt;
use crate::model::{LoadedModel, WeightSnapshot};
use crate::stats::StepStats;
use crate::train::Trainer;
use crate::verify::Verifier;
use parking_lot::{Mutex, RwLock};
use ractor::ActorRef;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
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

/// A model replica (sampler's or teacher's) with the policy version it holds.
#[derive(Debug)]
pub struct Replica {
    /// The weights.
    pub model: LoadedModel,
    /// Policy version of these weights (number of optimizer steps behind them).
    pub version: u64,
}

/// The optimizer's lasting state: the last *committed* step and everything a
/// consistent checkpoint of it needs. Only the optimizer writes it, always
/// between two steps (a step's update is committed whole or not at all), so
/// at any moment it describes exactly one step, whatever `max_staleness` is.
#[derive(Debug)]
pub struct OptimizerVault {
    /// Policy, AdamW state and algorithm settings, as of `trained_through`.
    pub trainer: Trainer<LoadedModel>,
    /// Last committed step (0 before the first; the checkpoint's step when resumed).
    pub trained_through: u64,
    /// Data cursor after the prompts of `trained_through` (from its plan).
    pub cursor: serde_json::Value,
    /// Stats of recent committed steps: answers a re-issued step without
    /// training it twice, and lets a checkpoint carry the metrics lines the run
    /// loop may not have written yet.
    pub recent: BTreeMap<u64, StepStats>,
    /// The teacher's weights as of `trained_through` (version = the last
    /// teacher sync), kept to re-send after a teacher restart and to checkpoint.
    pub teacher_snapshot: Option<WeightSnapshot>,
    /// Example ids trained at each step by this process (the exactly-once ledger).
    pub trained: Vec<(u64, Vec<String>)>,
    /// The ledger of the steps before this process (from the resumed checkpoint).
    pub trained_before: Vec<(u64, Vec<String>)>,
    /// The last checkpoint written, with its step.
    pub last_checkpoint: Option<(u64, std::path::PathBuf)>,
    /// Set by the final checkpoint: later batches are not trained.
    pub stopped: bool,
    /// Skipped steps in a row, up to the last commit.
    pub consecutive_skips: u64,
}

/// The scheduler's lasting state.
pub struct SchedulerVault {
    /// Where prompts come from.
    pub source: Box<dyn PromptSource>,
    /// Next step to issue.
    pub next_step: u64,
    /// Highest step whose `StepDone` was received.
    pub done_through: u64,
    /// Steps issued but not finished, with their plans (re-issued after a restart).
    pub in_flight: BTreeMap<u64, super::messages::StepPlan>,
    /// Set once the run is stopping.
    pub stopping: bool,
}

impl std::fmt::Debug for SchedulerVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerVault")
            .field("next_step", &self.next_step)
            .field("done_through", &self.done_through)
            .field("in_flight", &self.in_flight.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What the run loop hears from the actor tree.
#[derive(Debug)]
pub enum RunEvent {
    /// A step finished (in step order).
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

/// Everything one run's actors share.
pub struct Ctx {
    /// The resolved configuration.
    pub cfg: RunConfig,
    /// Current peer references.
    pub peers: RwLock<Peers>,
    /// Planned failures.
    pub faults: FaultPlan,
    /// The reward function.
    pub verifier: Arc<dyn Verifier>,
    /// Teacher prompt wording.
    pub template: TeacherPrompt,
    /// Sampler's replica.
    pub sampler: Mutex<Replica>,
    /// Teacher's replica.
    pub teacher: Mutex<Replica>,
    /// Optimizer's state.
    pub optimizer: Mutex<OptimizerVault>,
    /// Scheduler's state.
    pub scheduler: Mutex<SchedulerVault>,
    /// Events for the run loop.
    pub events: UnboundedSender<RunEvent>,
    /// Restarts per role.
    pub restarts: Mutex<HashMap<Role, u32>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("faults", &self.faults).finish()
    }
}

impl Ctx {
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

    /// Tell the run loop something.
    pub fn emit(&self, ev: RunEvent) {
        let _ = self.events.send(ev);
    }

    /// Copy a weight snapshot into a replica (the sampler's or the teacher's,
    /// picked by `replica`) on a blocking thread, unless the replica already
    /// holds that version or a newer one.
    pub async fn install_snapshot(
        self: &Arc<Self>,
        replica: fn(&Ctx) -> &Mutex<Replica>,
        snap: WeightSnapshot,
    ) -> Result<(), ractor::ActorProcessingErr> {
        let ctx = self.clone();
        tokio::task::spawn_blocking(move || -> crate::Result<()> {
            let mut r = replica(&ctx).lock();
            if snap.version > r.version {
                r.model.load_snapshot(&snap)?;
                r.version = snap.version;
            }
            Ok(())
        })
        .await
        .map_err(join_err)??;
        Ok(())
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
