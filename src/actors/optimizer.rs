//! Optimizer: owns the trainable policy and AdamW state (its
//! [`OptimizerCommit`], which the supervisor keeps across respawns and only
//! this actor opens). Trains the steps strictly in order (each exactly once)
//! and *commits* each: the update is atomic (AdamW installs all new values or
//! none), and only after it are the step, data cursor, ledger and teacher
//! weights advanced together. It then publishes the commit ([`Published`]:
//! the step, the cursor, frozen policy and teacher weights) on the board and
//! to the sampler and teacher, reports the step to the run loop (in step
//! order, once), tells the scheduler, and, when one is due, writes a
//! checkpoint of that very step before it trains the next: a consistent cut
//! at any `max_staleness`.

use super::commit::{cpu_copy, CommitBoard, CommitReader, Frozen, OptimizerCommit, Published};
use super::messages::{OptimizerMsg, SamplerMsg, SchedulerMsg, TeacherMsg};
use super::pinned::checkpoint_files;
use super::shared::{join_err, RunEvent, Shared};
use super::streams::ActorStreams;
use crate::config::RunConfig;
use crate::data::Example;
use crate::fault::{FaultKind, Role};
use crate::model::LoadedModel;
use crate::pipeline::{step_stats, CreditBatch};
use crate::run::evaluate::validation_on;
use crate::stats::ValidationStats;
use crate::train::train_step;
use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The optimizer actor.
#[derive(Debug)]
pub struct Optimizer;

/// What the supervisor hands a (re)spawned optimizer.
pub struct OptimizerArgs {
    /// Run context.
    pub shared: Arc<Shared>,
    /// The optimizer's state as of its last commit.
    pub commit: Arc<Mutex<OptimizerCommit>>,
    /// Where commits are published.
    pub board: CommitBoard,
    /// The reward function, for held-out validation (`[validation]`).
    pub verifier: Arc<dyn crate::verify::Verifier>,
    /// The held-out prompts of `[validation]` (empty: no validation).
    pub held_out: Arc<Vec<Example>>,
    /// Its CUDA streams: `optimizer` for all its work, `snapshot` for the
    /// published weight copies ([`Stream::none`] on the CPU).
    pub streams: ActorStreams,
}

impl std::fmt::Debug for OptimizerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OptimizerArgs")
            .field("shared", &self.shared)
            .field("board", &self.board)
            .finish_non_exhaustive()
    }
}

/// The optimizer's working state (the committed state lives in `args.commit`).
#[derive(Debug)]
pub struct OptimizerState {
    args: OptimizerArgs,
    /// Batches that arrived ahead of their turn.
    pending: BTreeMap<u64, Box<CreditBatch>>,
    /// When the previous step finished (for idle time).
    last_done: Instant,
}

impl Actor for Optimizer {
    type Msg = OptimizerMsg;
    type State = OptimizerState;
    type Arguments = OptimizerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: OptimizerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(OptimizerState {
            args,
            pending: BTreeMap::new(),
            last_done: Instant::now(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            OptimizerMsg::Train(batch) => {
                let step = batch.plan().step;
                let answered = {
                    let c = st.args.commit.lock();
                    if c.stopped || st.args.shared.stop.requested() {
                        // The final checkpoint is written, or asked for: a
                        // batch queued behind the request is dropped.
                        st.pending.clear();
                        return Ok(());
                    }
                    (step <= c.trained_through).then(|| c.recent.get(&step).cloned())
                };
                if let Some(cached) = answered {
                    // A re-issued step that was already trained: answer again, never train twice.
                    if let Some(stats) = cached {
                        st.args.shared.send(
                            |p| p.scheduler.clone(),
                            SchedulerMsg::StepDone(Box::new(stats)),
                        );
                    }
                    return Ok(());
                }
                st.pending.insert(step, batch);
                train_ready(st).await?;
            }
            OptimizerMsg::Checkpoint { last, reply } => {
                let shared = st.args.shared.clone();
                let commit = st.args.commit.clone();
                let stream = st.args.streams.optimizer;
                let board = st.args.board.reader();
                let res = tokio::task::spawn_blocking(move || {
                    let _on = stream.enter()?;
                    let mut c = commit.lock();
                    if last {
                        c.stopped = true;
                    }
                    if c.trained_through == 0 {
                        return Ok(None); // nothing committed: nothing to save
                    }
                    checkpoint_committed(&shared, &mut c, &board).map(Some)
                })
                .await
                .map_err(join_err)?;
                let _ = reply.send(res.map_err(|e| e.to_string()));
            }
        }
        Ok(())
    }
}

/// What one trained and committed step hands back to the actor loop.
struct Committed {
    published: Arc<Published>,
    stats: crate::stats::StepStats,
    checkpoint_due: bool,
    diverged: Option<String>,
}

/// Train every pending batch whose turn has come.
async fn train_ready(st: &mut OptimizerState) -> Result<(), ActorProcessingErr> {
    while let Some((next, batch)) = next_ready(st) {
        st.args.shared.faults.check(Role::Optimizer, next)?;
        let done = train_blocking(st, batch).await?;
        let checkpoint_due = done.checkpoint_due;
        if !publish(st, done) {
            return Ok(());
        }
        if checkpoint_due && !checkpoint(st, next).await? {
            return Ok(());
        }
    }
    Ok(())
}

/// The batch of the step after the last commit, if it has arrived (stale
/// ones are dropped; nothing once the run stopped or a stop was requested:
/// the step trained when the request came is the last one).
fn next_ready(st: &mut OptimizerState) -> Option<(u64, Box<CreditBatch>)> {
    let next = {
        let c = st.args.commit.lock();
        if c.stopped || st.args.shared.stop.requested() {
            st.pending.clear();
            return None;
        }
        c.trained_through + 1
    };
    let Some(batch) = st.pending.remove(&next) else {
        // Drop anything at or below what is already trained.
        st.pending.retain(|&s, _| s > next);
        return None;
    };
    Some((next, batch))
}

/// Train and commit `batch` on a blocking thread on the optimizer's stream.
async fn train_blocking(
    st: &mut OptimizerState,
    batch: Box<CreditBatch>,
) -> Result<Committed, ActorProcessingErr> {
    let idle_s = st.last_done.elapsed().as_secs_f64();
    let commit = st.args.commit.clone();
    let sh = st.args.shared.clone();
    let held_out = HeldOut {
        verifier: st.args.verifier.clone(),
        held_out: st.args.held_out.clone(),
    };
    let streams = st.args.streams;
    let done = tokio::task::spawn_blocking(move || {
        let _on = streams.optimizer.enter()?;
        train_and_commit(
            &sh,
            &mut commit.lock(),
            &batch,
            idle_s,
            &held_out,
            streams.snapshot,
        )
    })
    .await
    .map_err(join_err)??;
    st.last_done = Instant::now();
    Ok(done)
}

/// Publish a commit to the board, the run loop, the sampler, the teacher
/// and the scheduler. False when the run stops here (the policy diverged).
fn publish(st: &mut OptimizerState, done: Committed) -> bool {
    let shared = st.args.shared.clone();
    let Committed {
        published,
        mut stats,
        diverged,
        ..
    } = done;
    st.args.board.publish(published.clone());
    // Every response's record goes to the run loop only, never copied.
    let responses = std::mem::take(&mut stats.responses);
    let mut to_run = stats.clone();
    to_run.responses = responses;
    shared.emit(RunEvent::Step(Box::new(to_run)));
    shared.send(
        |p| p.sampler.clone(),
        SamplerMsg::Committed(published.clone()),
    );
    shared.send(|p| p.teacher.clone(), TeacherMsg::Committed(published));
    shared.send(
        |p| p.scheduler.clone(),
        SchedulerMsg::StepDone(Box::new(stats)),
    );
    match diverged {
        Some(reason) => {
            tracing::error!("{reason}");
            stop(st, reason);
            false
        }
        None => true,
    }
}

/// Write the checkpoint of step `step` (on a blocking thread). False when
/// the run stops here (the write failed twice).
async fn checkpoint(st: &mut OptimizerState, step: u64) -> Result<bool, ActorProcessingErr> {
    let commit = st.args.commit.clone();
    let sh = st.args.shared.clone();
    let stream = st.args.streams.optimizer;
    let board = st.args.board.reader();
    let res = tokio::task::spawn_blocking(move || {
        let _on = stream.enter()?;
        checkpoint_committed(&sh, &mut commit.lock(), &board)
    })
    .await
    .map_err(join_err)?;
    if let Err(e) = res {
        // Retried once already: stop the run (non-zero) with the cause.
        let reason = format!("checkpoint of step {step} failed: {e}");
        tracing::error!("{reason}");
        st.args.commit.lock().stopped = true;
        stop(st, reason);
        return Ok(false);
    }
    Ok(true)
}

/// Drop the pending batches and ask the scheduler to end the run as failed.
fn stop(st: &mut OptimizerState, reason: String) {
    st.pending.clear();
    st.args.shared.send(
        |p| p.scheduler.clone(),
        SchedulerMsg::Shutdown {
            reason,
            failed: true,
        },
    );
}

/// What held-out validation needs (`[validation]`): the reward function and
/// the held-out prompts.
struct HeldOut {
    verifier: Arc<dyn crate::verify::Verifier>,
    held_out: Arc<Vec<Example>>,
}

impl HeldOut {
    /// The validation of `model` after `step` (0 = before step 1), if due.
    fn after(
        &self,
        cfg: &RunConfig,
        model: &LoadedModel,
        step: u64,
    ) -> crate::Result<Vec<ValidationStats>> {
        validation_on(cfg, model, &self.held_out, &*self.verifier, step)
    }
}

/// Train `batch` (the next step) and commit it. An error before the commit
/// leaves `c` at the last commit (AdamW is atomic; nothing else was touched).
fn train_and_commit(
    shared: &Shared,
    c: &mut OptimizerCommit,
    batch: &CreditBatch,
    idle_s: f64,
    held_out: &HeldOut,
    snapshot_stream: crate::cuda::Stream,
) -> crate::Result<Committed> {
    let cfg = &shared.cfg;
    let next = batch.plan().step;
    let t0 = Instant::now();
    if shared.faults.take_adam(next) {
        let half = c.trainer.optimizer.param_names().count() / 2;
        c.trainer.optimizer.inject_fault_at(half);
    }
    // Held-out validation before step 1 (`[validation]`; issue 12).
    let mut validation = if next == 1 {
        held_out.after(cfg, &c.trainer.policy, 0)?
    } else {
        Vec::new()
    };
    let validation_s: f64 = validation.iter().map(|x| x.wall_s).sum();
    let tb = batch.train_batch(&cfg.algo, cfg.rollout.temperature);
    let trained = train_step(&mut c.trainer, &tb)?;
    let mut stats = step_stats(
        batch,
        &tb,
        trained,
        &cfg.algo,
        c.trainer.policy.tokenizer.as_ref(),
        cfg.observe.completions_per_step,
    );
    if shared.record_responses {
        stats.responses = crate::pipeline::sample_completions(
            batch,
            &tb,
            &cfg.algo,
            c.trainer.policy.tokenizer.as_ref(),
            usize::MAX,
        );
    }
    stats.timings.train_s = t0.elapsed().as_secs_f64() - validation_s;
    stats.timings.idle_s = idle_s;
    // ... and after every `validation.every` steps, on the new weights.
    validation.extend(held_out.after(cfg, &c.trainer.policy, next)?);
    stats.validation = validation;
    // Snapshots before the commit, so that nothing below can fail half-way.
    // The published copy is made on the snapshot stream (src/actors/streams.rs).
    let policy = Frozen::snapshot_on(&c.trainer.policy, next, snapshot_stream)?;
    let teacher = if next
        % cfg
            .algo
            .teacher_sync_interval(cfg.runtime.teacher_sync_interval)
        == 0
    {
        Some(Frozen::new(cpu_copy(
            c.trainer.policy.sync_snapshot(next)?,
        )?))
    } else {
        None
    };
    // Commit: everything of step `next` together.
    let plan = batch.plan();
    let ids = plan.examples.iter().map(|e| e.id.clone()).collect();
    // The kept copy (re-issues, checkpoints) has no per-response records.
    let responses = std::mem::take(&mut stats.responses);
    c.commit(next, plan.cursor_after.clone(), ids, stats.clone(), teacher);
    stats.responses = responses;
    let published = Arc::new(Published {
        step: next,
        cursor: c.cursor.clone(),
        policy,
        teacher: c.teacher.clone(),
        adaptive: c.adaptive,
    });
    let rt = &cfg.runtime;
    let diverged = (rt.max_consecutive_skips > 0
        && c.consecutive_skips >= rt.max_consecutive_skips)
        .then(|| {
            format!(
                "{} steps in a row were skipped (last: {}); the weights have likely diverged (runtime.max_consecutive_skips)",
                c.consecutive_skips,
                stats.skip_reason.as_deref().unwrap_or("non-finite values")
            )
        });
    Ok(Committed {
        published,
        stats,
        checkpoint_due: cfg.checkpoint.is_due(next) && next < rt.steps,
        diverged,
    })
}

/// Write a checkpoint of the last committed step (retrying once), unless
/// one of that step exists already. Emits [`RunEvent::Checkpoint`]. `board`:
/// the commits kept before it (the versions steps in flight use).
fn checkpoint_committed(
    shared: &Shared,
    c: &mut OptimizerCommit,
    board: &CommitReader,
) -> crate::Result<PathBuf> {
    if let Some((step, dir)) = &c.last_checkpoint {
        if *step == c.trained_through && dir.join(crate::checkpoint::MANIFEST_FILE).is_file() {
            return Ok(dir.clone());
        }
    }
    let dir = match write_checkpoint(shared, c, board) {
        Ok(d) => d,
        Err(first) => {
            tracing::warn!("checkpoint write failed ({first}); retrying once");
            write_checkpoint(shared, c, board)?
        }
    };
    c.last_checkpoint = Some((c.trained_through, dir.clone()));
    shared.emit(RunEvent::Checkpoint(dir.clone()));
    Ok(dir)
}

/// The run state stored next to the weights: everything of the committed step.
pub fn checkpoint_state(shared: &Shared, c: &OptimizerCommit) -> serde_json::Value {
    let step = c.trained_through;
    let ledger: Vec<&(u64, Vec<String>)> = c.trained_before.iter().chain(&c.trained).collect();
    let recent: Vec<&crate::stats::StepStats> =
        c.recent.values().filter(|s| s.step <= step).collect();
    serde_json::json!({
        "step": step,
        "policy_version": step,
        "trained_through": step,
        "seed": shared.cfg.runtime.seed,
        "data_cursor": c.cursor,
        "teacher_version": c.teacher.version(),
        // One metrics line per committed step 1..=step.
        "metrics_lines": step,
        "recent_stats": recent,
        "trained": ledger,
        // The adaptive lambda schedule's state after `step` (resume is exact).
        "adaptive_lambda": c.adaptive,
    })
}

/// Write a checkpoint of the last committed step, with the kept earlier
/// commits' weights (the versions steps in flight use; [`super::pinned`]).
fn write_checkpoint(
    shared: &Shared,
    c: &OptimizerCommit,
    board: &CommitReader,
) -> crate::Result<PathBuf> {
    let cfg = &shared.cfg;
    let mut state = checkpoint_state(shared, c);
    // The board's latest commit is this step (the optimizer publishes each
    // commit before it checkpoints or handles another message).
    let earlier: Vec<_> = board
        .earlier()
        .into_iter()
        .filter(|p| p.step < c.trained_through)
        .collect();
    let (pinned, pinned_files) = checkpoint_files(&earlier, c.teacher.version())?;
    state["pinned_versions"] = serde_json::json!(pinned);
    let root = cfg.runtime.out_dir.join(&cfg.checkpoint.dir);
    let policy = &c.trainer.policy;
    let fault = shared.faults.checkpoint_fault(c.trained_through);
    let write_model = |dir: &std::path::Path| -> crate::Result<()> {
        policy.save(dir)?;
        match fault {
            Some(FaultKind::Disk) => Err(crate::Error::io(
                dir,
                std::io::Error::from_raw_os_error(libc::ENOSPC),
            )),
            Some(FaultKind::Stall) => {
                std::thread::sleep(std::time::Duration::from_secs(3));
                Ok(())
            }
            _ => Ok(()),
        }
    };
    c.teacher.with_tensors(|teacher| {
        crate::checkpoint::save_checkpoint_with_extras(
            &root,
            c.trained_through,
            &write_model,
            &c.trainer.optimizer.state_tensors(),
            Some(teacher),
            &pinned_files,
            &state,
            &cfg.to_toml(),
            cfg.checkpoint.keep_last,
        )
    })?
}
