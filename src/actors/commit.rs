//! Recovery state, explicit and versioned.
//!
//! - [`OptimizerCommit`]: the optimizer's own state as of its last *committed*
//!   step: policy, AdamW moments, step, data cursor, ledger, teacher weights.
//!   The supervisor holds it for the optimizer across respawns; only the
//!   optimizer opens it, and only between two steps (AdamW installs a step's
//!   new values all at once or not at all, and [`OptimizerCommit::commit`]
//!   cannot fail), so it always describes exactly one step.
//! - [`Published`]: what the optimizer makes public after each commit: the
//!   step (= policy version), the data cursor, and frozen copies of the
//!   policy and teacher weights. It goes out by message to the sampler,
//!   teacher and scheduler, and stays on a [`CommitBoard`] whose
//!   [`CommitReader`]s a respawned actor reads in `pre_start` to restart
//!   from the last commit.
//! - [`ReplicaSpec`]: how the sampler and the teacher build their own model
//!   replica (architecture, dtype, tokenizer, device) from published weights.

use crate::error::Result;
use crate::model::{Config, LoadedModel, Tokenizer, WeightSnapshot};
use crate::stats::StepStats;
use crate::train::Trainer;
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tch::{Device, Kind};

/// How many recent steps' stats the optimizer keeps (re-issue answers and the
/// metrics lines a checkpoint carries).
pub const RECENT_STATS: usize = 64;

/// Weights frozen at one version, shareable between threads (a tensor is
/// `Send` but not `Sync`, so readers take turns through a lock).
#[derive(Debug, Clone)]
pub struct Frozen {
    version: u64,
    snapshot: Arc<Mutex<WeightSnapshot>>,
}

impl Frozen {
    /// Freeze a snapshot.
    pub fn new(snapshot: WeightSnapshot) -> Frozen {
        Frozen {
            version: snapshot.version,
            snapshot: Arc::new(Mutex::new(snapshot)),
        }
    }

    /// Policy version of these weights.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Copy these weights into `model` (casting kind and device).
    pub fn load_into(&self, model: &mut LoadedModel) -> Result<()> {
        model.load_snapshot(&self.snapshot.lock())
    }

    /// Run `f` on the tensors (for checkpoints).
    pub fn with_tensors<T>(&self, f: impl FnOnce(&[(String, tch::Tensor)]) -> T) -> T {
        f(&self.snapshot.lock().tensors)
    }

    /// A deep, detached copy of the snapshot.
    pub fn to_snapshot(&self) -> Result<WeightSnapshot> {
        self.snapshot.lock().deep_copy()
    }
}

/// What the optimizer publishes after committing a step.
#[derive(Debug)]
pub struct Published {
    /// The last committed step (= the policy version of `policy`; 0 before any).
    pub step: u64,
    /// Data cursor after the prompts of `step`.
    pub cursor: serde_json::Value,
    /// The policy's weights at `step` (the sampler's replica loads them).
    pub policy: Frozen,
    /// The teacher's weights (version: the last teacher sync at or before `step`).
    pub teacher: Frozen,
}

/// The latest [`Published`] commit. The optimizer writes it; everybody else
/// holds a [`CommitReader`].
#[derive(Debug, Clone)]
pub struct CommitBoard(Arc<RwLock<Arc<Published>>>);

impl CommitBoard {
    /// A board holding the run's starting point.
    pub fn new(start: Published) -> CommitBoard {
        CommitBoard(Arc::new(RwLock::new(Arc::new(start))))
    }

    /// Make `p` the latest commit (the optimizer only).
    pub fn publish(&self, p: Arc<Published>) {
        *self.0.write() = p;
    }

    /// A read-only handle.
    pub fn reader(&self) -> CommitReader {
        CommitReader(self.0.clone())
    }
}

/// Read access to the latest published commit.
#[derive(Debug, Clone)]
pub struct CommitReader(Arc<RwLock<Arc<Published>>>);

impl CommitReader {
    /// The latest commit.
    pub fn latest(&self) -> Arc<Published> {
        self.0.read().clone()
    }
}

/// The optimizer's state as of its last committed step.
#[derive(Debug)]
pub struct OptimizerCommit {
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
    /// teacher sync), in host memory; published and checkpointed.
    pub teacher: Frozen,
    /// Example ids trained at each step by this process (the exactly-once ledger).
    pub trained: Vec<(u64, Vec<String>)>,
    /// The ledger of the steps before this process (from the resumed checkpoint).
    pub trained_before: Vec<(u64, Vec<String>)>,
    /// The last checkpoint written, with its step.
    pub last_checkpoint: Option<(u64, PathBuf)>,
    /// Set by the final checkpoint: later batches are not trained.
    pub stopped: bool,
    /// Skipped steps in a row, up to the last commit.
    pub consecutive_skips: u64,
}

impl OptimizerCommit {
    /// Advance to step `step` in one go: step, cursor, ledger, recent stats
    /// and (on a sync step) the teacher's weights. Nothing here can fail, so
    /// a step is committed whole or not at all.
    pub fn commit(
        &mut self,
        step: u64,
        cursor: serde_json::Value,
        example_ids: Vec<String>,
        stats: StepStats,
        teacher: Option<Frozen>,
    ) {
        self.trained_through = step;
        self.cursor = cursor;
        self.trained.push((step, example_ids));
        self.consecutive_skips = if stats.skipped {
            self.consecutive_skips + 1
        } else {
            0
        };
        self.recent.insert(step, stats);
        while self.recent.len() > RECENT_STATS {
            self.recent.pop_first();
        }
        if let Some(t) = teacher {
            self.teacher = t;
        }
    }
}

/// How to build a model replica (the sampler's or the teacher's).
#[derive(Debug, Clone)]
pub struct ReplicaSpec {
    /// Architecture.
    pub config: Config,
    /// Parameter dtype (the policy's).
    pub kind: Kind,
    /// The policy's tokenizer.
    pub tokenizer: Option<Tokenizer>,
    /// Where the replica lives.
    pub device: Device,
}

impl ReplicaSpec {
    /// The spec of a replica of `model` on `device`.
    pub fn of(model: &LoadedModel, device: Device) -> ReplicaSpec {
        ReplicaSpec {
            config: model.config.clone(),
            kind: model.lm.kind(),
            tokenizer: model.tokenizer.clone(),
            device,
        }
    }

    /// A new replica holding `weights`.
    pub fn build(&self, weights: &Frozen) -> Result<LoadedModel> {
        let mut m = LoadedModel::empty(self.config.clone(), self.device)?;
        m.vs.set_kind(self.kind);
        m.tokenizer = self.tokenizer.clone();
        weights.load_into(&mut m)?;
        Ok(m)
    }
}

/// A host-memory copy of `snap` (the teacher weights the optimizer keeps for
/// restarts and checkpoints need not take accelerator memory).
pub fn cpu_copy(snap: &WeightSnapshot) -> Result<WeightSnapshot> {
    let tensors = snap
        .tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.f_to_device(Device::Cpu)?.f_detach_copy()?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(WeightSnapshot {
        version: snap.version,
        tensors,
    })
}
