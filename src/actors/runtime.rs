//! The embedding API: build a run from a config plus your own verifier and
//! prompt source, run it, and receive every step's [`StepStats`].
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

use super::commit::{cpu_copy, CommitBoard, Frozen, OptimizerCommit, Published, ReplicaSpec};
use super::fault::{FaultPlan, Role};
use super::run_folder::{prepare_fresh, resolve_resume, RunLock};
use super::shared::{Peers, RunEvent, Shared};
use super::source::PromptSource;
use super::streams::ActorStreams;
use super::supervisor::{Supervisor, SupervisorMsg, Tree};
use crate::config::RunConfig;
use crate::data::TeacherPrompt;
use crate::device::parse_device;
use crate::error::{Error, Result};
use crate::metrics::MetricsWriter;
use crate::model::{LoadedModel, WeightSnapshot};
use crate::stats::StepStats;
use crate::train::Trainer;
use crate::verify::{build_verifier, Verifier};
use parking_lot::{Mutex, RwLock};
use ractor::Actor;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

type StepCallback = Box<dyn FnMut(&StepStats) + Send>;

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
            on_step: None,
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
    on_step: Option<StepCallback>,
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

    /// Called with every step's stats, in step order.
    pub fn on_step(mut self, f: impl FnMut(&StepStats) + Send + 'static) -> Self {
        self.on_step = Some(Box::new(f));
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
    pub async fn run(self) -> Result<RunReport> {
        let RuntimeBuilder {
            cfg,
            verifier,
            source,
            policy,
            mut on_step,
            resume,
            ctrl_c,
            overwrite,
        } = self;
        cfg.validate()?;
        if cfg.algo.kl_coef > 0.0 {
            return Err(Error::config(
                "algo.kl_coef",
                "must be 0 for `rlsd train`: the runtime computes no reference-model log-probs for the KL term yet",
            ));
        }
        crate::preflight::check_run(&cfg, verifier.is_none(), source.is_none())?;
        let out_dir = cfg.runtime.out_dir.clone();
        let ckpt_root = out_dir.join(&cfg.checkpoint.dir);
        let _lock = RunLock::acquire(&out_dir)?;
        let resume = match &resume {
            Some(arg) => Some(resolve_resume(arg, &ckpt_root, &cfg.checkpoint.dir)?),
            None => {
                prepare_fresh(&out_dir, &ckpt_root, overwrite)?;
                None
            }
        };
        let verifier = match verifier {
            Some(v) => v,
            None => {
                // The command verifier kills its process group by the pool's timeout.
                let mut vc = cfg.verifier.clone();
                let cap_ms = (cfg.runtime.verifier_timeout_s * 1000.0).ceil() as u64;
                vc.command.timeout_ms = vc.command.timeout_ms.min(cap_ms.max(1));
                Arc::from(build_verifier(&vc)?)
            }
        };
        let mut source = match source {
            Some(s) => s,
            None => super::source::from_config(&cfg)?,
        };
        let kind = crate::model::parse_kind(&cfg.model.dtype)?;
        let opt_dev = parse_device(&cfg.runtime.optimizer_device)?;
        let checkpoint = match &resume {
            Some(dir) => Some(crate::checkpoint::load_checkpoint(dir)?),
            None => None,
        };
        let resumed = checkpoint
            .as_ref()
            .map(|ck| Resumed::of(ck, &ckpt_root))
            .transpose()?;
        let start_step = resumed.as_ref().map_or(0, |r| r.step);
        if start_step >= cfg.runtime.steps && resumed.is_some() {
            let dir = resume.clone().unwrap_or_default();
            let reason = format!(
                "nothing to train: the checkpoint {} is at step {start_step}, runtime.steps is {}",
                dir.display(),
                cfg.runtime.steps
            );
            tracing::info!("{reason}");
            let policy = LoadedModel::load(&dir.join("model"), opt_dev, kind)?;
            return Ok(RunReport {
                steps: Vec::new(),
                restarts: HashMap::new(),
                failed: false,
                reason,
                last_checkpoint: Some(dir),
                final_weights: policy.snapshot(start_step)?,
                trained: Vec::new(),
            });
        }
        let policy = match (policy, &checkpoint) {
            (_, Some(ck)) => {
                check_same_shape(&cfg.model.resolved_path(), &ck.model_dir)?;
                LoadedModel::load(&ck.model_dir, opt_dev, kind)?
            }
            (Some(p), None) => p,
            (None, None) => LoadedModel::load(&cfg.model.resolve()?, opt_dev, kind)?,
        };
        if policy.tokenizer.is_none() {
            let dir = checkpoint
                .as_ref()
                .map_or_else(|| cfg.model.resolved_path(), |c| c.model_dir.clone());
            return Err(Error::InvalidInput(format!(
                "{}: no tokenizer.json; training needs one to build prompts and decode responses",
                dir.display()
            )));
        }
        let sampler_spec = ReplicaSpec::of(&policy, parse_device(&cfg.runtime.sampler_device)?);
        let teacher_spec = ReplicaSpec::of(&policy, parse_device(&cfg.runtime.teacher_device)?);
        let mut trainer = Trainer::new(policy, cfg.algo.clone(), cfg.optim.clone())?;
        // The teacher's weights as of the start: the initial policy, or the
        // checkpoint's teacher.
        let mut teacher = Frozen::new(cpu_copy(&trainer.policy.snapshot(start_step)?)?);
        let mut trained_before = Vec::new();
        let mut recent = BTreeMap::new();
        let mut last_checkpoint = None;
        if let (Some(ck), Some(r)) = (&checkpoint, &resumed) {
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
                teacher = Frozen::new(cpu_copy(&snap)?);
            }
            trained_before = r.ledger.clone();
            for s in &r.recent {
                recent.insert(s.step, s.clone());
            }
            last_checkpoint = r.own_dir.clone().map(|d| (start_step, d));
        }
        let cursor = source.cursor();
        let commits = CommitBoard::new(Published {
            step: start_step,
            cursor: cursor.clone(),
            policy: Frozen::new(trainer.policy.snapshot(start_step)?),
            teacher: teacher.clone(),
        });
        let optimizer = Arc::new(Mutex::new(OptimizerCommit {
            trainer,
            trained_through: start_step,
            cursor,
            recent,
            teacher,
            trained: Vec::new(),
            trained_before,
            last_checkpoint,
            stopped: false,
            consecutive_skips: 0,
        }));
        let template = TeacherPrompt::new(cfg.data.teacher_template.clone())?;
        let held_out = Arc::new(if cfg.validation.every > 0 {
            crate::commands::eval::held_out_examples(&cfg)?
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
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let tree = Arc::new(Tree {
            shared: Arc::new(Shared {
                faults,
                peers: RwLock::new(Peers::default()),
                events: tx,
                cfg,
            }),
            source: Arc::new(Mutex::new(source)),
            optimizer: optimizer.clone(),
            commits,
            sampler: sampler_spec,
            teacher: teacher_spec,
            verifier,
            template,
            held_out,
            streams,
        });
        let cfg = &tree.shared.cfg;

        let metrics_path = out_dir.join("metrics.jsonl");
        let mut metrics = MetricsWriter::resume(&metrics_path, start_step)?;
        if let Some(r) = &resumed {
            refill_metrics(&mut metrics, &metrics_path, &r.recent, start_step)?;
        }
        let observer = crate::observe::Observer::open(cfg, start_step)?;
        let mut signals = if ctrl_c { Some(Signals::new()?) } else { None };

        let (sup, handle) = Actor::spawn(None, Supervisor, tree.clone())
            .await
            .map_err(|e| Error::Runtime(format!("could not start the actor tree: {e}")))?;
        sup.cast(SupervisorMsg::Start)
            .map_err(|e| Error::Runtime(format!("supervisor unreachable: {e}")))?;

        let mut recorder = StepRecorder {
            metrics,
            observer,
            on_step: on_step.take(),
            steps: Vec::new(),
            write_error: None,
        };
        let mut last_checkpoint = None;
        let mut restarts: HashMap<Role, u32> = HashMap::new();
        let mut interrupted = false;
        let (failed, reason) = loop {
            let ev = match signals.as_mut() {
                Some(sig) => tokio::select! {
                    ev = rx.recv() => ev,
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
                        let _ = sup.cast(SupervisorMsg::Shutdown(format!("interrupted by {name}")));
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            match ev {
                Some(RunEvent::Step(stats)) => {
                    if let Err(e) = recorder.record(*stats) {
                        // Keep the committed steps: stop after a final checkpoint.
                        tracing::error!(error = %e, "could not record a step; stopping after a final checkpoint");
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
        // The tree is down: its last commit is the run's result (after any
        // work the actors' streams still hold).
        for d in [tree.sampler.device, tree.teacher.device, opt_dev] {
            crate::cuda::synchronize_device(d)?;
        }
        let (final_weights, trained) = {
            let c = optimizer.lock();
            (
                c.trainer.policy.snapshot(c.trained_through)?,
                c.trained.clone(),
            )
        };
        Ok(RunReport {
            steps: recorder.steps,
            restarts,
            failed,
            reason,
            last_checkpoint,
            final_weights,
            trained,
        })
    }
}

/// Where every committed step's [`StepStats`] goes, in step order, exactly
/// once: the metrics log, the caller's `on_step`, and the report.
struct StepRecorder {
    metrics: MetricsWriter,
    /// TensorBoard events, completions.jsonl and the end-of-run report.
    observer: crate::observe::Observer,
    on_step: Option<StepCallback>,
    steps: Vec<StepStats>,
    /// The first failed write of a step's record; nothing is recorded after
    /// it (the log must not skip a step), and the run ends failed with it.
    write_error: Option<String>,
}

impl StepRecorder {
    /// Record one committed step (the one place that does).
    fn record(&mut self, stats: StepStats) -> Result<()> {
        if self.write_error.is_some() || self.steps.last().is_some_and(|l| l.step >= stats.step) {
            return Ok(()); // already recorded, or recording has stopped
        }
        let written = self
            .metrics
            .append(&stats)
            .and_then(|()| self.observer.on_step(&stats));
        if let Err(e) = written {
            self.write_error = Some(format!("could not record step {}: {e}", stats.step));
            return Err(e);
        }
        if let Some(f) = self.on_step.as_mut() {
            f(&stats);
        }
        self.steps.push(stats);
        crate::malloc::trim();
        Ok(())
    }
}

/// What a checkpoint's `state.json` says about the step it holds.
struct Resumed {
    /// The committed step.
    step: u64,
    /// Data cursor after that step.
    cursor: Option<serde_json::Value>,
    /// Version of the stored teacher weights.
    teacher_version: Option<u64>,
    /// Stats of recent steps (metrics lines the log may lack).
    recent: Vec<StepStats>,
    /// Prompt ids trained at each step up to `step`.
    ledger: Vec<(u64, Vec<String>)>,
    /// The checkpoint folder, when it lies in this run's checkpoint root.
    own_dir: Option<PathBuf>,
}

impl Resumed {
    fn of(ck: &crate::checkpoint::LoadedCheckpoint, root: &std::path::Path) -> Result<Resumed> {
        let state_path = ck.dir.join(crate::checkpoint::STATE_FILE);
        let bad = |key: &str, e: String| {
            Error::InvalidInput(format!("{}: `{key}`: {e}", state_path.display()))
        };
        let field = |key: &str| ck.state.get(key).filter(|v| !v.is_null());
        let step = match field("trained_through").or_else(|| field("step")) {
            Some(v) => v
                .as_u64()
                .ok_or_else(|| bad("step", "not a step number".into()))?,
            None => ck.step,
        };
        if step != ck.step {
            return Err(bad(
                "step",
                format!("says {step}, the manifest says {}", ck.step),
            ));
        }
        let recent = match field("recent_stats") {
            Some(v) => {
                serde_json::from_value(v.clone()).map_err(|e| bad("recent_stats", e.to_string()))?
            }
            None => Vec::new(),
        };
        let ledger = match field("trained") {
            Some(v) => {
                serde_json::from_value(v.clone()).map_err(|e| bad("trained", e.to_string()))?
            }
            None => Vec::new(),
        };
        let same_root =
            |a: &std::path::Path, b: &std::path::Path| match (a.canonicalize(), b.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            };
        let own_dir = ck
            .dir
            .parent()
            .filter(|p| same_root(p, root))
            .map(|_| ck.dir.clone());
        Ok(Resumed {
            step,
            cursor: field("data_cursor").cloned(),
            teacher_version: field("teacher_version").and_then(|v| v.as_u64()),
            recent,
            ledger,
            own_dir,
        })
    }
}

/// After the log was cut back to the checkpoint's step, append the lines of
/// committed steps it lacks (a crash can come after a checkpoint but before
/// the run loop wrote that step's line), so it holds each of `1..=step` once.
fn refill_metrics(
    metrics: &mut MetricsWriter,
    path: &std::path::Path,
    recent: &[StepStats],
    step: u64,
) -> Result<()> {
    let have: std::collections::HashSet<u64> = crate::metrics::read_metrics(path)?
        .iter()
        .filter_map(|r| r.get(crate::metrics::STEP_KEY).and_then(|s| s.as_u64()))
        .collect();
    for s in recent {
        if s.step <= step && !have.contains(&s.step) {
            tracing::info!(
                step = s.step,
                "restoring a metrics line from the checkpoint"
            );
            metrics.append(s)?;
        }
    }
    Ok(())
}

/// A resumed checkpoint must hold the model `[model]` names (same
/// architecture sizes in `config.json`); the error names both files.
pub fn check_same_shape(model_dir: &std::path::Path, ckpt_model: &std::path::Path) -> Result<()> {
    let read = |dir: &std::path::Path| -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
        serde_json::from_str(&text).ok()
    };
    let (Some(a), Some(b)) = (read(model_dir), read(ckpt_model)) else {
        return Ok(()); // an embedding program may train a model with no folder
    };
    for key in [
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "vocab_size",
    ] {
        if a.get(key) != b.get(key) {
            return Err(Error::InvalidInput(format!(
                "the checkpoint's model ({}) does not match [model].path ({}): `{key}` is {} vs {}; resume with the config of the run that wrote it",
                ckpt_model.join("config.json").display(),
                model_dir.join("config.json").display(),
                b.get(key).unwrap_or(&serde_json::Value::Null),
                a.get(key).unwrap_or(&serde_json::Value::Null),
            )));
        }
    }
    Ok(())
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
