//! The embedding API: build a run from a config plus your own verifier and
//! prompt source, run it, and receive every step's [`StepStats`] (and, if
//! asked, every response with its credit); stop it from code with a
//! [`StopHandle`]; write the final weights as a Hugging Face folder
//! ([`RunReport::save_pretrained`]). `run()` is a future any tokio runtime
//! can drive, current-thread included.
//!
//! ```no_run
//! # async fn demo() -> rlsd::Result<()> {
//! use rlsd::actors::Runtime;
//! use rlsd::config::RunConfig;
//! let cfg = RunConfig::load(None, &["runtime.steps=3".into()])?;
//! let report = Runtime::builder(cfg)
//!     .on_step(|s| println!("step {} reward {:.3}", s.step, s.reward_mean))
//!     .run()
//!     .await?;
//! assert!(!report.failed);
//! # Ok(()) }
//! ```

use super::commit::{cpu_copy, Frozen, OptimizerCommit, Published, ReplicaSpec};
use super::messages::SupervisorMsg;
use super::pinned::seed_board;
use super::shared::{Peers, RunEvent, Shared, StopFlag};
use super::stop::StopHandle;
use super::streams::ActorStreams;
use super::supervisor::{Supervisor, Tree};
use crate::config::RunConfig;
use crate::data::TeacherPrompt;
use crate::device::parse_device;
use crate::env::{EnvCounters, Environment};
use crate::error::{Error, Result};
use crate::fault::{FaultPlan, Role};
use crate::metrics::MetricsWriter;
use crate::model::{LoadedModel, WeightSnapshot};
use crate::pipeline::env_config::build_environment;
use crate::pipeline::multi_turn::EnvRuntime;
use crate::run::folder::{prepare_fresh, resolve_resume, RunLock};
use crate::run::record::{ResponsesCallback, StepCallback, StepRecorder};
use crate::run::resume::{check_same_shape, refill_metrics, Resumed};
use crate::run::source::PromptSource;
use crate::stats::{ResponseRecord, StepStats};
use crate::train::Trainer;
use crate::verify::{build_verifier, Verifier};
use parking_lot::{Mutex, RwLock};
use ractor::Actor;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Entry point of the embedding API.
#[derive(Debug)]
pub struct Runtime;

impl Runtime {
    /// Start building a run from a configuration.
    pub fn builder(cfg: RunConfig) -> RuntimeBuilder {
        RuntimeBuilder {
            cfg,
            verifier: None,
            source: None,
            policy: None,
            environment: None,
            on_step: None,
            on_responses: None,
            stop: None,
            resume: None,
            ctrl_c: false,
            overwrite: false,
        }
    }
}

/// Collects the parts of a run; anything not given comes from the config.
pub struct RuntimeBuilder {
    cfg: RunConfig,
    verifier: Option<Arc<dyn Verifier>>,
    source: Option<Box<dyn PromptSource>>,
    policy: Option<LoadedModel>,
    environment: Option<Arc<dyn Environment>>,
    on_step: Option<StepCallback>,
    on_responses: Option<ResponsesCallback>,
    stop: Option<StopHandle>,
    resume: Option<PathBuf>,
    ctrl_c: bool,
    overwrite: bool,
}

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("resume", &self.resume)
            .finish()
    }
}

/// What a finished run reports.
#[derive(Debug)]
pub struct RunReport {
    /// Stats of every trained step, in order.
    pub steps: Vec<StepStats>,
    /// Restarts per actor role.
    pub restarts: HashMap<Role, u32>,
    /// True when the run stopped by failure (restart budget spent).
    pub failed: bool,
    /// Why the run ended.
    pub reason: String,
    /// The last checkpoint written, if any.
    pub last_checkpoint: Option<PathBuf>,
    /// Final policy weights (detached copies).
    pub final_weights: WeightSnapshot,
    /// Example ids trained at each step, in order (each step exactly once).
    pub trained: Vec<(u64, Vec<String>)>,
    /// How to rebuild the policy around `final_weights` (architecture,
    /// dtype, tokenizer, LoRA), on the CPU.
    model: ReplicaSpec,
}

impl RunReport {
    /// The final policy as a model on the CPU: the trained weights in the
    /// run's architecture, dtype and tokenizer, with its LoRA adapters
    /// attached (unmerged) when it trained some.
    pub fn final_model(&self) -> Result<LoadedModel> {
        let spec = &self.model;
        let mut m = LoadedModel::empty(spec.config.clone(), tch::Device::Cpu)?;
        m.vs.set_kind(spec.kind);
        m.tokenizer = spec.tokenizer.clone();
        if let Some(lora) = &spec.lora {
            m.attach_lora(lora)?;
        }
        m.load_snapshot(&self.final_weights)?;
        Ok(m)
    }

    /// Write the final weights as a Hugging Face folder (`config.json`,
    /// `generation_config.json`, `model.safetensors`, tokenizer files; peft's
    /// adapter files next to the base weights for a LoRA run) that
    /// `transformers` and `rlsd --model DIR` load. Files are renamed into
    /// place one by one (`LoadedModel::save`). To fold LoRA adapters in
    /// first: `let mut m = report.final_model()?; m.merge_lora()?; m.save(dir)?`.
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<()> {
        self.final_model()?.save(dir.as_ref())
    }
}

impl RuntimeBuilder {
    /// Use this reward function instead of `[verifier]`.
    pub fn verifier(mut self, v: impl Verifier + 'static) -> Self {
        self.verifier = Some(Arc::new(v));
        self
    }

    /// Use this prompt stream instead of `[data]` / the built-in task.
    pub fn prompts(mut self, s: impl PromptSource + 'static) -> Self {
        self.source = Some(Box::new(s));
        self
    }

    /// Train this model instead of loading `[model]`.
    pub fn policy(mut self, m: LoadedModel) -> Self {
        self.policy = Some(m);
        self
    }

    /// Play multi-turn episodes against this environment instead of the
    /// one `[env]` names (`env.max_turns`, `env.turn_timeout_s`, `env.stop`
    /// and `env.tool_format` still apply).
    pub fn environment(mut self, env: impl Environment + 'static) -> Self {
        self.environment = Some(Arc::new(env));
        self
    }

    /// Called with every step's stats, in step order.
    pub fn on_step(mut self, f: impl FnMut(&StepStats) + Send + 'static) -> Self {
        self.on_step = Some(Box::new(f));
        self
    }

    /// Called with every step's stats and all of the step's responses, in
    /// step order (after `on_step`): per response its prompt, text, token
    /// ids, reward and verdict, advantage and per-token credit (`Ahat_t`,
    /// and `w_t`, `delta_t` where the algorithm has them), as the completions
    /// log records them ([`crate::pipeline::sample_completions`]). Costs a
    /// decode of every response token per step, so only asked-for runs pay it.
    pub fn on_step_responses(
        mut self,
        f: impl FnMut(&StepStats, &[ResponseRecord]) + Send + 'static,
    ) -> Self {
        self.on_responses = Some(Box::new(f));
        self
    }

    /// Stop the run cleanly when `handle` (or a clone) is used: as the first
    /// SIGTERM does, with a final checkpoint and a report that is not
    /// `failed` ([`StopHandle`]).
    pub fn stop_handle(mut self, handle: StopHandle) -> Self {
        self.stop = Some(handle);
        self
    }

    /// Continue from a checkpoint folder.
    pub fn resume(mut self, dir: impl Into<PathBuf>) -> Self {
        self.resume = Some(dir.into());
        self
    }

    /// Stop gracefully on SIGINT (Ctrl-C) and SIGTERM (Slurm, Kubernetes,
    /// `timeout`): finish the step being trained, drop the others, write a
    /// final checkpoint of the last committed step, and return a report that
    /// is not `failed`. A second signal exits the process at once with status 130.
    pub fn handle_ctrl_c(mut self, yes: bool) -> Self {
        self.ctrl_c = yes;
        self
    }

    /// Start over in a run folder that already holds a run: delete its
    /// metrics log and checkpoints first. Without it such a fresh run is
    /// refused (a resume never is).
    pub fn overwrite(mut self, yes: bool) -> Self {
        self.overwrite = yes;
        self
    }

    /// Run to the end. Returns an error only when the run could not start or
    /// its parts are unusable; a run that stops on a spent restart budget
    /// returns a report with `failed = true`.
    ///
    /// Check, build the tree, run, report.
    pub async fn run(self) -> Result<RunReport> {
        let RuntimeBuilder {
            cfg,
            verifier,
            source,
            policy,
            environment,
            on_step,
            on_responses,
            stop,
            resume,
            ctrl_c,
            overwrite,
        } = self;
        let parts = Parts {
            verifier,
            source,
            policy,
            environment,
        };
        let start = Start::check(&cfg, &parts, resume.as_deref(), overwrite)?;
        if let Some(report) = start.nothing_to_train(&cfg)? {
            return Ok(report);
        }
        let record_responses = on_responses.is_some();
        let (tree, events) = build_tree(cfg, &start, parts, record_responses)?;
        let mut recorder = open_recorder(&tree.shared.cfg, &start, on_step)?;
        recorder.on_responses = on_responses;
        let ended = drive((tree, events), recorder, ctrl_c, stop).await?;
        report(ended)
    }
}

/// What the builder was given instead of the config's parts.
struct Parts {
    verifier: Option<Arc<dyn Verifier>>,
    source: Option<Box<dyn PromptSource>>,
    policy: Option<LoadedModel>,
    environment: Option<Arc<dyn Environment>>,
}

/// A checked start: the run folder locked and prepared, and the checkpoint a
/// resume continues from (loaded).
struct Start {
    /// Held for the whole run: no second process writes this run folder.
    _lock: RunLock,
    /// `runtime.out_dir`.
    out_dir: PathBuf,
    /// The resumed checkpoint folder, as resolved from `--resume`.
    resume_dir: Option<PathBuf>,
    /// Its tensors and state.
    checkpoint: Option<crate::checkpoint::LoadedCheckpoint>,
    /// What its state says.
    resumed: Option<Resumed>,
}

impl Start {
    /// Validate the config, lock the run folder, resolve the resume (or
    /// prepare a fresh folder) and refuse a run that cannot fit in memory.
    fn check(
        cfg: &RunConfig,
        parts: &Parts,
        resume: Option<&std::path::Path>,
        overwrite: bool,
    ) -> Result<Start> {
        cfg.validate()?;
        if cfg.algo.kl_coef > 0.0 {
            return Err(Error::config(
                "algo.kl_coef",
                "must be 0 for `rlsd train`: the runtime computes no reference-model log-probs for the KL term yet",
            ));
        }
        // Everything that can be checked before the run folder is touched.
        crate::run::preflight::check_run(cfg, parts.verifier.is_none(), parts.source.is_none())?;
        let out_dir = cfg.runtime.out_dir.clone();
        let ckpt_root = out_dir.join(&cfg.checkpoint.dir);
        let lock = RunLock::acquire(&out_dir)?;
        let resume_dir = match resume {
            Some(arg) => Some(resolve_resume(arg, &ckpt_root, &cfg.checkpoint.dir)?),
            None => {
                prepare_fresh(&out_dir, &ckpt_root, overwrite)?;
                None
            }
        };
        let checkpoint = match &resume_dir {
            Some(dir) => Some(crate::checkpoint::load_checkpoint(dir)?),
            None => None,
        };
        let resumed = checkpoint
            .as_ref()
            .map(|ck| Resumed::of(ck, &ckpt_root))
            .transpose()?;
        Ok(Start {
            _lock: lock,
            out_dir,
            resume_dir,
            checkpoint,
            resumed,
        })
    }

    /// The step training continues after (0 for a fresh run).
    fn start_step(&self) -> u64 {
        self.resumed.as_ref().map_or(0, |r| r.step)
    }

    /// A resume whose checkpoint is already at `runtime.steps` trains nothing:
    /// its report, with the checkpoint's weights.
    fn nothing_to_train(&self, cfg: &RunConfig) -> Result<Option<RunReport>> {
        let start_step = self.start_step();
        let Some(dir) = self.resume_dir.clone() else {
            return Ok(None);
        };
        if start_step < cfg.runtime.steps {
            return Ok(None);
        }
        let reason = format!(
            "nothing to train: the checkpoint {} is at step {start_step}, runtime.steps is {}",
            dir.display(),
            cfg.runtime.steps
        );
        tracing::info!("{reason}");
        let kind = crate::model::parse_kind(&cfg.model.dtype)?;
        let opt_dev = parse_device(&cfg.runtime.optimizer_device)?;
        let policy = LoadedModel::load(&dir.join("model"), opt_dev, kind)?;
        Ok(Some(RunReport {
            steps: Vec::new(),
            restarts: HashMap::new(),
            failed: false,
            reason,
            last_checkpoint: Some(dir),
            final_weights: policy.snapshot(start_step)?,
            trained: Vec::new(),
            model: ReplicaSpec::of(&policy, tch::Device::Cpu),
        }))
    }
}

/// The reward function: the builder's, or `[verifier]` (whose command
/// verifier kills its process group by the pool's timeout).
fn verifier_of(cfg: &RunConfig, given: Option<Arc<dyn Verifier>>) -> Result<Arc<dyn Verifier>> {
    if let Some(v) = given {
        return Ok(v);
    }
    let mut vc = cfg.verifier.clone();
    let cap_ms = (cfg.runtime.verifier_timeout_s * 1000.0).ceil() as u64;
    vc.command.timeout_ms = vc.command.timeout_ms.min(cap_ms.max(1));
    Ok(Arc::from(build_verifier(&vc)?))
}

/// The policy to train: the checkpoint's (whose shape must match `[model]`),
/// the builder's, or `[model]`'s; it must have a tokenizer.
fn policy_of(cfg: &RunConfig, start: &Start, given: Option<LoadedModel>) -> Result<LoadedModel> {
    let kind = crate::model::parse_kind(&cfg.model.dtype)?;
    let opt_dev = parse_device(&cfg.runtime.optimizer_device)?;
    let policy = match (given, &start.checkpoint) {
        (_, Some(ck)) => {
            check_same_shape(&cfg.model.resolved_path(), &ck.model_dir)?;
            LoadedModel::load(&ck.model_dir, opt_dev, kind)?
        }
        (Some(p), None) => p,
        (None, None) => {
            let mut p = LoadedModel::load(&cfg.model.resolve()?, opt_dev, kind)?;
            cfg.model.attach_adapter(&mut p, true)?;
            p
        }
    };
    if policy.tokenizer.is_none() {
        let dir = start
            .checkpoint
            .as_ref()
            .map_or_else(|| cfg.model.resolved_path(), |c| c.model_dir.clone());
        return Err(Error::InvalidInput(format!(
            "{}: no tokenizer.json; training needs one to build prompts and decode responses",
            dir.display()
        )));
    }
    Ok(policy)
}

/// The optimizer's recovery state at the start: a fresh trainer, or the
/// checkpoint's AdamW moments, teacher, ledger and recent stats (the prompt
/// source is moved to the checkpoint's cursor).
fn optimizer_commit(
    cfg: &RunConfig,
    start: &Start,
    policy: LoadedModel,
    source: &mut dyn PromptSource,
) -> Result<OptimizerCommit> {
    let start_step = start.start_step();
    let algo = crate::pipeline::algo_for(&cfg.algo, &policy)?;
    let mut trainer = Trainer::new(policy, algo, cfg.optim.clone())?;
    // The teacher's weights as of the start: the initial policy, or the
    // checkpoint's teacher.
    let mut teacher = Frozen::new(cpu_copy(trainer.policy.sync_snapshot(start_step)?)?);
    let mut trained_before = Vec::new();
    let mut recent = BTreeMap::new();
    let mut last_checkpoint = None;
    let mut adaptive = cfg.algo.adaptive_start();
    if let (Some(ck), Some(r)) = (&start.checkpoint, &start.resumed) {
        adaptive = r.adaptive_lambda(&cfg.algo)?;
        trainer.optimizer.load_state_tensors(&ck.optimizer)?;
        if let Some(c) = &r.cursor {
            source.restore(c)?;
        }
        if let Some(t) = &ck.teacher {
            let snap = WeightSnapshot {
                version: r.teacher_version.unwrap_or(start_step),
                tensors: t
                    .iter()
                    .map(|(n, x)| (n.clone(), x.shallow_clone()))
                    .collect(),
            };
            // With LoRA the teacher is its adapters (the base is shared).
            let snap = if trainer.policy.lora.is_some() {
                snap.adapters_only()
            } else {
                snap
            };
            teacher = Frozen::new(cpu_copy(snap.deep_copy()?)?);
        }
        trained_before = r.ledger.clone();
        for s in &r.recent {
            recent.insert(s.step, s.clone());
        }
        last_checkpoint = r.own_dir.clone().map(|d| (start_step, d));
    }
    Ok(OptimizerCommit {
        trainer,
        trained_through: start_step,
        cursor: source.cursor(),
        recent,
        teacher,
        trained: Vec::new(),
        trained_before,
        last_checkpoint,
        stopped: false,
        consecutive_skips: 0,
        adaptive,
        adaptive_rule: cfg.algo.adaptive_rule(),
    })
}

/// Build the supervised tree's kept arguments: the verifier, the prompt
/// source, the optimizer's state and first commit, the replicas' specs, the
/// held-out prompts and the actors' streams.
fn build_tree(
    cfg: RunConfig,
    start: &Start,
    parts: Parts,
    record_responses: bool,
) -> Result<(Arc<Tree>, RunEvents)> {
    let verifier = verifier_of(&cfg, parts.verifier)?;
    let mut source = match parts.source {
        Some(s) => s,
        None => crate::run::source::from_config(&cfg)?,
    };
    let policy = policy_of(&cfg, start, parts.policy)?;
    let opt_dev = parse_device(&cfg.runtime.optimizer_device)?;
    let (sampler_spec, teacher_spec) = ReplicaSpec::pair(
        &policy,
        parse_device(&cfg.runtime.sampler_device)?,
        parse_device(&cfg.runtime.teacher_device)?,
        cfg.model.merge_for_generation,
    )?;
    let commit = optimizer_commit(&cfg, start, policy, source.as_mut())?;
    let latest = Published {
        step: commit.trained_through,
        cursor: commit.cursor.clone(),
        policy: Frozen::new(
            commit
                .trainer
                .policy
                .sync_snapshot(commit.trained_through)?,
        ),
        teacher: commit.teacher.clone(),
        adaptive: commit.adaptive,
    };
    // With a resume, the checkpoint's pinned versions too (exactness at
    // max_staleness >= 1).
    let resumed = start.checkpoint.as_ref().zip(start.resumed.as_ref());
    let lora = commit.trainer.policy.lora.is_some();
    let commits = seed_board(latest, resumed, cfg.runtime.max_staleness, lora)?;
    let template = TeacherPrompt::for_data(&cfg.data)?;
    let held_out = Arc::new(if cfg.validation.every > 0 {
        crate::run::evaluate::held_out_examples(&cfg)?
    } else {
        Vec::new()
    });
    let faults = FaultPlan::parse(&cfg.runtime.faults)?;
    // Set-up ran on libtorch's default stream; the actors' pool streams
    // do not wait for it by themselves (docs/RUNTIME.md, "CUDA streams").
    let streams = ActorStreams::for_devices(sampler_spec.device, teacher_spec.device, opt_dev)?;
    for d in [sampler_spec.device, teacher_spec.device, opt_dev] {
        crate::cuda::synchronize_device(d)?;
    }
    let env = env_runtime(&cfg, parts.environment)?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let tree = Arc::new(Tree {
        shared: Arc::new(Shared {
            env,
            faults,
            peers: RwLock::new(Peers::default()),
            events: tx,
            stop: StopFlag::default(),
            cfg,
            record_responses,
        }),
        source: Arc::new(Mutex::new(source)),
        optimizer: Arc::new(Mutex::new(commit)),
        commits,
        sampler: sampler_spec,
        teacher: teacher_spec,
        verifier,
        template,
        held_out,
        streams,
    });
    Ok((tree, rx))
}

/// The environment of multi-turn episodes (the builder's, else `[env]`'s),
/// its calls spawned on the runtime this run is driven from.
fn env_runtime(cfg: &RunConfig, given: Option<Arc<dyn Environment>>) -> Result<Option<EnvRuntime>> {
    let env = match given {
        Some(e) => Some(e),
        None => build_environment(&cfg.env)?,
    };
    let Some(env) = env else { return Ok(None) };
    let handle = tokio::runtime::Handle::try_current().map_err(|e| {
        Error::InvalidInput(format!("multi-turn episodes need a tokio runtime: {e}"))
    })?;
    Ok(Some(EnvRuntime {
        env,
        handle,
        counters: Arc::new(EnvCounters::default()),
    }))
}

/// The actors' events, read by the run loop.
type RunEvents = tokio::sync::mpsc::UnboundedReceiver<RunEvent>;

/// The metrics log (cut back to the start step and refilled from the
/// checkpoint), the observers and the caller's callback.
fn open_recorder(
    cfg: &RunConfig,
    start: &Start,
    on_step: Option<StepCallback>,
) -> Result<StepRecorder> {
    let start_step = start.start_step();
    let metrics_path = start.out_dir.join("metrics.jsonl");
    let mut metrics = MetricsWriter::resume(&metrics_path, start_step)?;
    if let Some(r) = &start.resumed {
        refill_metrics(&mut metrics, &metrics_path, &r.recent, start_step)?;
    }
    Ok(StepRecorder {
        metrics,
        observer: crate::observe::Observer::open(cfg, start_step)?,
        on_step,
        on_responses: None,
        steps: Vec::new(),
        write_error: None,
    })
}

/// How the tree's run ended.
struct Ended {
    failed: bool,
    reason: String,
    last_checkpoint: Option<PathBuf>,
    restarts: HashMap<Role, u32>,
    steps: Vec<StepStats>,
}

/// Start the supervisor and record its events until the run finishes (a
/// first signal, or the stop handle, asks for a clean stop; a second signal
/// exits at once).
async fn drive(
    (tree, mut rx): (Arc<Tree>, RunEvents),
    mut recorder: StepRecorder,
    ctrl_c: bool,
    stop: Option<StopHandle>,
) -> Result<(Arc<Tree>, Ended)> {
    let mut signals = if ctrl_c { Some(Signals::new()?) } else { None };
    let (sup, handle) = Actor::spawn(None, Supervisor, tree.clone())
        .await
        .map_err(|e| Error::Runtime(format!("could not start the actor tree: {e}")))?;
    sup.cast(SupervisorMsg::Start)
        .map_err(|e| Error::Runtime(format!("supervisor unreachable: {e}")))?;
    let mut last_checkpoint = None;
    let mut restarts: HashMap<Role, u32> = HashMap::new();
    let mut interrupted = false;
    let mut stop_asked = false;
    let (failed, reason) = loop {
        let ev = match signals.as_mut() {
            _ if !stop_asked && stop.as_ref().is_some_and(StopHandle::is_stopped) => {
                stop_asked = true;
                let reason = stop
                    .as_ref()
                    .and_then(StopHandle::reason)
                    .unwrap_or_default();
                tracing::warn!("stop requested ({reason}): stopping after a final checkpoint");
                // As a signal: at once, not behind the mailboxes' batches.
                tree.shared.request_stop();
                let _ = sup.cast(SupervisorMsg::Shutdown(format!("stopped: {reason}")));
                continue;
            }
            Some(sig) => tokio::select! {
                ev = rx.recv() => ev,
                _ = wait_stop(stop.as_ref(), stop_asked) => continue,
                name = sig.next() => {
                    if interrupted {
                        eprintln!("rlsd: second {name}: exiting at once without a checkpoint");
                        // SAFETY: _exit ends the process without running atexit
                        // handlers: libtorch's static destructors would run
                        // while actor threads still use it and print pages of
                        // C++ errors (issue 24). Nothing is left to flush.
                        unsafe { libc::_exit(130) };
                    }
                    interrupted = true;
                    tracing::warn!("{name}: stopping after a final checkpoint (send it again to exit at once)");
                    // At once, not behind the batches in the actors' mailboxes.
                    tree.shared.request_stop();
                    let _ = sup.cast(SupervisorMsg::Shutdown(format!("interrupted by {name}")));
                    continue;
                }
            },
            None => tokio::select! {
                ev = rx.recv() => ev,
                _ = wait_stop(stop.as_ref(), stop_asked) => continue,
            },
        };
        match ev {
            Some(RunEvent::Step(stats)) => {
                if let Err(e) = recorder.record(*stats) {
                    // Keep the committed steps: stop after a final checkpoint.
                    tracing::error!(error = %e, "could not record a step; stopping after a final checkpoint");
                    tree.shared.request_stop();
                    let _ = sup.cast(SupervisorMsg::Shutdown(format!(
                        "could not record a step: {e}"
                    )));
                }
            }
            Some(RunEvent::Checkpoint(p)) => last_checkpoint = Some(p),
            Some(RunEvent::Restarted(role)) => {
                tracing::warn!(role = role.name(), "actor respawned");
                *restarts.entry(role).or_default() += 1;
            }
            Some(RunEvent::Finished { reason, failed }) => break (failed, reason),
            None => break (true, "actor tree vanished".into()),
        }
    };
    sup.stop(None);
    let _ = handle.await;
    // Steps committed before the final checkpoint whose events are still queued.
    while let Ok(ev) = rx.try_recv() {
        match ev {
            RunEvent::Step(stats) => {
                let _ = recorder.record(*stats);
            }
            RunEvent::Checkpoint(p) => last_checkpoint = Some(p),
            RunEvent::Restarted(role) => *restarts.entry(role).or_default() += 1,
            RunEvent::Finished { .. } => {}
        }
    }
    let (failed, reason) = match recorder.write_error.take() {
        Some(e) => (true, e),
        None => {
            recorder.metrics.sync()?;
            (failed, reason)
        }
    };
    recorder.observer.finish();
    let ended = Ended {
        failed,
        reason,
        last_checkpoint,
        restarts,
        steps: recorder.steps,
    };
    Ok((tree, ended))
}

/// The run's report: the tree is down, so its last commit is the result
/// (after any work the actors' streams still hold).
fn report((tree, ended): (Arc<Tree>, Ended)) -> Result<RunReport> {
    let opt_dev = parse_device(&tree.shared.cfg.runtime.optimizer_device)?;
    for d in [tree.sampler.device, tree.teacher.device, opt_dev] {
        crate::cuda::synchronize_device(d)?;
    }
    let (final_weights, trained) = {
        let c = tree.optimizer.lock();
        (
            c.trainer.policy.snapshot(c.trained_through)?,
            c.trained.clone(),
        )
    };
    Ok(RunReport {
        steps: ended.steps,
        restarts: ended.restarts,
        failed: ended.failed,
        reason: ended.reason,
        last_checkpoint: ended.last_checkpoint,
        final_weights,
        trained,
        model: ReplicaSpec {
            device: tch::Device::Cpu,
            ..tree.sampler.clone()
        },
    })
}

/// Until `stop` is used (never when there is none, or it was already acted on).
async fn wait_stop(stop: Option<&StopHandle>, acted_on: bool) {
    match stop {
        Some(h) if !acted_on => {
            h.stopped().await;
        }
        _ => std::future::pending().await,
    }
}

/// SIGINT and SIGTERM as one stream.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let err =
            |e: std::io::Error| Error::Runtime(format!("cannot install signal handlers: {e}"));
        Ok(Signals {
            int: signal(SignalKind::interrupt()).map_err(err)?,
            term: signal(SignalKind::terminate()).map_err(err)?,
        })
    }

    /// The name of the next signal received.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}
