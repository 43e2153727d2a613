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
//!   teacher and scheduler, and the last `max_staleness + 1` commits stay on
//!   a [`CommitBoard`]: the sampler, the teacher and the scheduler take from
//!   it exactly the commit each step names (its `min_version`), and a
//!   respawned actor reads it in `pre_start` to restart from the last commit.
//! - [`ReplicaSpec`]: how the sampler and the teacher build their own model
//!   replica (architecture, dtype, tokenizer, device) from published weights.

use crate::cuda::{Event, Stream};
use crate::error::Result;
use crate::model::{Config, LoadCount, LoadedModel, SharedBase, Tokenizer, WeightSnapshot};
use crate::rlsd::{AdaptiveLambda, AdaptiveRule};
use crate::stats::StepStats;
use crate::train::Trainer;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use tch::{Device, Kind};

/// How many recent steps' stats the optimizer keeps (re-issue answers and the
/// metrics lines a checkpoint carries).
pub const RECENT_STATS: usize = 64;

/// Weights frozen at one version, shareable between threads (a tensor is
/// `Send` but not `Sync`, so readers take turns through a lock).
///
/// On a GPU the copy may still be in flight on the stream that made it:
/// `ready` is the event recorded after it, and every reader below makes its
/// own current stream wait for it before touching the tensors (a no-op on
/// the CPU and without the `gpu` feature).
#[derive(Debug, Clone)]
pub struct Frozen {
    version: u64,
    snapshot: Arc<Mutex<WeightSnapshot>>,
    ready: Event,
}

impl Frozen {
    /// Freeze a snapshot whose tensors are complete (host tensors, or device
    /// work the caller has synchronised).
    pub fn new(snapshot: WeightSnapshot) -> Frozen {
        Frozen::after(snapshot, Event::done())
    }

    /// Freeze a snapshot whose copy completes with `ready`.
    pub fn after(snapshot: WeightSnapshot, ready: Event) -> Frozen {
        Frozen {
            version: snapshot.version,
            snapshot: Arc::new(Mutex::new(snapshot)),
            ready,
        }
    }

    /// Snapshot `model`'s weights at `version` (what a replica needs: the
    /// adapters alone with LoRA, [`LoadedModel::sync_snapshot`]) on the stream `copy` (the
    /// optimizer's snapshot stream), ordered after the work queued so far on
    /// the calling thread's current stream (the optimizer's: the step that
    /// made the weights), which in turn waits for the copy before any later
    /// work (the next step's in-place update) touches the parameters. The
    /// calling thread does not block. Without a CUDA `copy` stream on the
    /// model's device, a plain snapshot on the current stream.
    pub fn snapshot_on(model: &LoadedModel, version: u64, copy: Stream) -> Result<Frozen> {
        let device = model.vs.device();
        if !copy.is_cuda() || copy.device() != Some(device) {
            return Ok(Frozen::new(model.sync_snapshot(version)?));
        }
        let here = Stream::current(device)?;
        let trained = here.record()?;
        let snapshot = {
            let _on = copy.enter()?;
            copy.wait(&trained)?;
            model.sync_snapshot(version)?
        };
        let copied = copy.record()?;
        here.wait(&copied)?;
        Ok(Frozen::after(snapshot, copied))
    }

    /// Policy version of these weights.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The event after which the tensors are complete.
    pub fn ready(&self) -> &Event {
        &self.ready
    }

    /// Make the calling thread's current streams on `devices` wait for the
    /// copy, and keep the tensors' memory from reuse until the work queued
    /// on them next is done.
    fn order_reads(&self, snap: &WeightSnapshot, devices: &[Device]) -> Result<()> {
        if !self.ready.is_cuda() {
            return Ok(());
        }
        let source = snap.tensors.first().map(|(_, t)| t.device());
        let mut streams: Vec<Stream> = Vec::new();
        for &d in devices.iter().chain(source.iter()) {
            let s = Stream::current(d)?;
            if s.is_cuda() && !streams.contains(&s) {
                s.wait(&self.ready)?;
                streams.push(s);
            }
        }
        for s in streams.iter().filter(|s| s.device() == source) {
            for (_, t) in &snap.tensors {
                s.keep_alive(t)?;
            }
        }
        Ok(())
    }

    /// Give `model` these weights, on the calling thread's current stream,
    /// after the copy that made them, and say how much was written. A LoRA
    /// replica (its base shared with the policy) copies the adapters only. A
    /// host model of the snapshot's dtype shares the frozen tensors (no copy:
    /// `model::snapshot_share`; nothing written); another host model gets
    /// fresh storage (it may share an older snapshot); a device model is
    /// copied into (casting kind and device).
    pub fn load_into(&self, model: &mut LoadedModel) -> Result<LoadCount> {
        let snap = self.snapshot.lock();
        self.order_reads(&snap, &[model.vs.device()])?;
        if model.lora.is_some() || model.shares_base {
            model.load_snapshot_counted(&snap)
        } else if !self.ready.is_cuda() && model.can_share(&snap) {
            model.share_snapshot(&snap)?;
            Ok(LoadCount::default())
        } else if model.vs.device() == Device::Cpu {
            model.replace_snapshot(&snap)?;
            Ok(LoadCount {
                tensors: snap.tensors.len(),
                bytes: snap
                    .tensors
                    .iter()
                    .map(|(_, t)| t.numel() * model.lm.kind().elt_size_in_bytes())
                    .sum(),
            })
        } else {
            model.load_snapshot_counted(&snap)
        }
    }

    /// Run `f` on the tensors (for checkpoints), after the copy that made them.
    pub fn with_tensors<T>(&self, f: impl FnOnce(&[(String, tch::Tensor)]) -> T) -> Result<T> {
        let snap = self.snapshot.lock();
        self.order_reads(&snap, &[])?;
        Ok(f(&snap.tensors))
    }

    /// A deep, detached copy of the snapshot, after the copy that made it.
    pub fn to_snapshot(&self) -> Result<WeightSnapshot> {
        let snap = self.snapshot.lock();
        self.order_reads(&snap, &[])?;
        snap.deep_copy()
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
    /// The adaptive lambda schedule's state after `step` (the scheduler
    /// plans the next steps' lambda from it when `lambda_schedule = "adaptive"`).
    pub adaptive: AdaptiveLambda,
}

/// The latest [`Published`] commits: the newest and the `keep` before it
/// (`keep = runtime.max_staleness`). The optimizer writes it; everybody else
/// holds a [`CommitReader`].
///
/// A step `s` not yet committed is sampled with policy version
/// `max(0, s - 1 - max_staleness)` and scored with that commit's teacher,
/// and the scheduler plans its adaptive lambda from that commit's state
/// (docs/RUNTIME.md, "Staleness"). Any step in flight was issued at most
/// `max_staleness` steps after the last commit, so the versions it can name
/// are exactly the ones the board keeps, and a respawned actor finds them
/// here too.
#[derive(Debug, Clone)]
pub struct CommitBoard(Arc<RwLock<History>>);

/// The commits a board keeps: the latest and up to `keep` before it.
#[derive(Debug)]
struct History {
    /// How many commits before the latest are kept.
    keep: u64,
    /// The kept commits before `latest`, oldest first.
    earlier: VecDeque<Arc<Published>>,
    /// The latest commit.
    latest: Arc<Published>,
}

impl CommitBoard {
    /// A board holding the run's starting point (and no earlier commit),
    /// keeping `keep` commits before the latest.
    pub fn new(start: Published, keep: u64) -> CommitBoard {
        CommitBoard::seeded(Vec::new(), start, keep)
    }

    /// A board holding `earlier` (commits before `start`, oldest first: a
    /// resumed checkpoint's pinned versions) and `start`.
    pub fn seeded(earlier: Vec<Published>, start: Published, keep: u64) -> CommitBoard {
        let mut h = History {
            keep,
            earlier: VecDeque::new(),
            latest: Arc::new(start),
        };
        let step = h.latest.step;
        h.earlier = earlier
            .into_iter()
            .filter(|p| p.step < step && p.step + keep >= step)
            .map(Arc::new)
            .collect();
        h.earlier.make_contiguous().sort_by_key(|p| p.step);
        CommitBoard(Arc::new(RwLock::new(h)))
    }

    /// Make `p` the latest commit (the optimizer only), forgetting the
    /// commits more than `keep` steps older.
    pub fn publish(&self, p: Arc<Published>) {
        let mut h = self.0.write();
        let previous = std::mem::replace(&mut h.latest, p);
        h.earlier.push_back(previous);
        let oldest = h.latest.step.saturating_sub(h.keep);
        let latest = h.latest.step;
        h.earlier.retain(|c| c.step >= oldest && c.step < latest);
    }

    /// A read-only handle.
    pub fn reader(&self) -> CommitReader {
        CommitReader(self.0.clone())
    }
}

/// Read access to the published commits a [`CommitBoard`] keeps.
#[derive(Debug, Clone)]
pub struct CommitReader(Arc<RwLock<History>>);

impl CommitReader {
    /// The latest commit.
    pub fn latest(&self) -> Arc<Published> {
        self.0.read().latest.clone()
    }

    /// The commit of step `version`, or the oldest kept one after it (a run
    /// resumed from a checkpoint without its pinned versions); `None` while
    /// `version` is not yet committed.
    pub fn at_or_after(&self, version: u64) -> Option<Arc<Published>> {
        let h = self.0.read();
        h.earlier
            .iter()
            .chain(std::iter::once(&h.latest))
            .find(|c| c.step >= version)
            .cloned()
    }

    /// The kept commits before the latest, oldest first.
    pub fn earlier(&self) -> Vec<Arc<Published>> {
        self.0.read().earlier.iter().cloned().collect()
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
    /// The adaptive lambda schedule's state after `trained_through`
    /// (observed at each commit; checkpointed as `adaptive_lambda`).
    pub adaptive: AdaptiveLambda,
    /// The adaptive schedule's rule (from `[algo]`).
    pub adaptive_rule: AdaptiveRule,
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
        crate::pipeline::observe_step(&mut self.adaptive, &self.adaptive_rule, &stats);
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
    /// The policy's LoRA settings: the replica gets the same adapters.
    pub lora: Option<crate::model::LoraConfig>,
    /// With LoRA, the frozen base the replica computes with: the policy's
    /// own tensors on its device, or the one copy made for `device`. The
    /// replica then owns its adapters only, and syncs copy adapters only.
    pub base: Option<SharedBase>,
    /// With LoRA and a base: generate with the adapters merged into private
    /// copies of the weights they target (`model.merge_for_generation`),
    /// re-merged at every sync.
    pub merged: bool,
    /// Where the replica lives.
    pub device: Device,
}

impl ReplicaSpec {
    /// The spec of a replica of `model` on `device` holding its own copy of
    /// every weight.
    pub fn of(model: &LoadedModel, device: Device) -> ReplicaSpec {
        ReplicaSpec {
            config: model.config.clone(),
            kind: model.lm.kind(),
            tokenizer: model.tokenizer.clone(),
            lora: model.lora.clone(),
            base: None,
            merged: false,
            device,
        }
    }

    /// The specs of the sampler's and the teacher's replicas of `model`.
    /// With LoRA they share the policy's frozen base: one base per device
    /// (the policy's own on its device, one copy for any other device,
    /// shared by both replicas when they are placed together). With
    /// `merge_sampler` the sampler generates with merged adapters.
    pub fn pair(
        model: &LoadedModel,
        sampler: Device,
        teacher: Device,
        merge_sampler: bool,
    ) -> Result<(ReplicaSpec, ReplicaSpec)> {
        let (mut s, mut t) = (
            ReplicaSpec::of(model, sampler),
            ReplicaSpec::of(model, teacher),
        );
        if model.lora.is_some() {
            s.merged = merge_sampler;
            let own = model.shared_base()?;
            let sb = own.to_device(sampler)?;
            let tb = if teacher == sampler {
                sb.clone()
            } else {
                own.to_device(teacher)?
            };
            s.base = Some(sb);
            t.base = Some(tb);
        }
        Ok((s, t))
    }

    /// A new replica holding `weights` (all of them, or a LoRA sync's
    /// adapters when the replica shares its base).
    pub fn build(&self, weights: &Frozen) -> Result<LoadedModel> {
        if let (Some(base), Some(lora)) = (&self.base, &self.lora) {
            let (config, tokenizer) = (self.config.clone(), self.tokenizer.clone());
            let mut m = if self.merged {
                base.merged_replica(config, tokenizer, lora)?
            } else {
                base.replica(config, tokenizer, lora)?
            };
            weights.load_into(&mut m)?;
            if self.merged {
                m.remerge(base)?;
            }
            return Ok(m);
        }
        let mut m = LoadedModel::empty(self.config.clone(), self.device)?;
        m.vs.set_kind(self.kind);
        m.tokenizer = self.tokenizer.clone();
        if let Some(lora) = &self.lora {
            m.attach_lora(lora)?; // filled from `weights` with the rest
        }
        weights.load_into(&mut m)?;
        Ok(m)
    }
}

/// `snap` in host memory (the teacher weights the optimizer keeps for
/// restarts and checkpoints need not take accelerator memory): host tensors
/// are kept as they are (a snapshot is already a private copy), others copied.
pub fn cpu_copy(snap: WeightSnapshot) -> Result<WeightSnapshot> {
    let tensors = snap
        .tensors
        .into_iter()
        .map(|(n, t)| {
            if t.device() == Device::Cpu {
                Ok((n, t))
            } else {
                Ok((n, t.f_to_device(Device::Cpu)?.f_detach_copy()?))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(WeightSnapshot {
        version: snap.version,
        tensors,
    })
}

impl ReplicaSpec {
    /// The base a replica built from this spec re-merges its adapters from
    /// after each sync (`None` when it applies them unmerged).
    pub fn merge_base(&self) -> Option<SharedBase> {
        if self.merged && self.lora.is_some() {
            self.base.clone()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(step: u64) -> Published {
        let weights = |version| {
            Frozen::new(WeightSnapshot {
                version,
                tensors: Vec::new(),
            })
        };
        Published {
            step,
            cursor: serde_json::Value::Null,
            policy: weights(step),
            teacher: weights(step / 2 * 2),
            adaptive: crate::rlsd::AlgoConfig::default().adaptive_start(),
        }
    }

    fn steps(r: &CommitReader) -> Vec<u64> {
        r.earlier().iter().map(|p| p.step).collect()
    }

    #[test]
    fn the_board_keeps_the_versions_steps_in_flight_name() {
        let board = CommitBoard::new(commit(0), 1);
        let r = board.reader();
        assert_eq!(r.at_or_after(0).map(|p| p.step), Some(0));
        assert!(r.at_or_after(1).is_none(), "not committed yet");
        for s in 1..=4 {
            board.publish(Arc::new(commit(s)));
        }
        // Staleness 1: step 5 is sampled with version 3, step 6 with 4.
        assert_eq!(r.latest().step, 4);
        assert_eq!(steps(&r), vec![3]);
        assert_eq!(r.at_or_after(3).map(|p| p.step), Some(3));
        assert_eq!(r.at_or_after(4).map(|p| p.step), Some(4));
        // Older versions are gone: the oldest kept after it stands in.
        assert_eq!(r.at_or_after(1).map(|p| p.step), Some(3));
        assert!(r.at_or_after(5).is_none());

        let none = CommitBoard::new(commit(0), 0);
        none.publish(Arc::new(commit(1)));
        assert!(steps(&none.reader()).is_empty());
    }

    #[test]
    fn a_seeded_board_keeps_only_the_window_before_its_start() {
        let board = CommitBoard::seeded(vec![commit(5), commit(3), commit(4)], commit(6), 2);
        let r = board.reader();
        assert_eq!(steps(&r), vec![4, 5]);
        assert_eq!(r.latest().step, 6);
        // A checkpoint without them: the start stands in for every version.
        let bare = CommitBoard::seeded(Vec::new(), commit(6), 2).reader();
        assert_eq!(bare.at_or_after(4).map(|p| p.step), Some(6));
    }
}
