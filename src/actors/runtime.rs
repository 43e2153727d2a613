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

use super::ctx::{Ctx, OptimizerVault, Peers, Replica, RunEvent, SchedulerVault};
use super::fault::{FaultPlan, Role};
use super::source::PromptSource;
use super::supervisor::{Supervisor, SupervisorMsg};
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

    /// Stop gracefully on Ctrl-C (finish or drop the in-flight step, checkpoint).
    pub fn handle_ctrl_c(mut self, yes: bool) -> Self {
        self.ctrl_c = yes;
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
        } = self;
        cfg.validate()?;
        let verifier = match verifier {
            Some(v) => v,
            None => Arc::from(build_verifier(&cfg.verifier)?),
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
        let policy = match (policy, &checkpoint) {
            (_, Some(ck)) => LoadedModel::load(&ck.model_dir, opt_dev, kind)?,
            (Some(p), None) => p,
            (None, None) => LoadedModel::load(&cfg.model.resolve()?, opt_dev, kind)?,
        };
        let sampler = Replica {
            model: policy.replicate(parse_device(&cfg.runtime.sampler_device)?)?,
            version: 0,
        };
        let teacher = Replica {
            model: policy.replicate(parse_device(&cfg.runtime.teacher_device)?)?,
            version: 0,
        };
        let mut trainer = Trainer::new(policy, cfg.algo.clone(), cfg.optim.clone())?;
        let mut start_step = 0;
        if let Some(ck) = &checkpoint {
            trainer.optimizer.load_state_tensors(&ck.optimizer)?;
            start_step = ck.step;
            if let Some(c) = ck.state.get("data_cursor") {
                source.restore(c)?;
            }
        }
        let (sampler, teacher) = if start_step > 0 {
            let mut s = sampler;
            let mut t = teacher;
            s.version = start_step;
            t.version = start_step;
            (s, t)
        } else {
            (sampler, teacher)
        };
        let cursor = source.cursor();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let ctx = Arc::new(Ctx {
            faults: FaultPlan::parse(&cfg.runtime.faults)?,
            verifier,
            template: TeacherPrompt::new(cfg.data.teacher_template.clone())?,
            sampler: Mutex::new(sampler),
            teacher: Mutex::new(teacher),
            optimizer: Mutex::new(OptimizerVault {
                trainer,
                trained_through: start_step,
                recent: BTreeMap::new(),
                teacher_snapshot: None,
                trained: Vec::new(),
            }),
            scheduler: Mutex::new(SchedulerVault {
                source,
                next_step: start_step + 1,
                done_through: start_step,
                in_flight: BTreeMap::new(),
                cursor_done: cursor,
                stopping: false,
            }),
            events: tx,
            restarts: Mutex::new(HashMap::new()),
            peers: RwLock::new(Peers::default()),
            cfg,
        });

        std::fs::create_dir_all(&ctx.cfg.runtime.out_dir)
            .map_err(|e| Error::io(&ctx.cfg.runtime.out_dir, e))?;
        let metrics_path = ctx.cfg.runtime.out_dir.join("metrics.jsonl");
        let mut metrics = MetricsWriter::resume(&metrics_path, start_step)?;

        let (sup, handle) = Actor::spawn(None, Supervisor, ctx.clone())
            .await
            .map_err(|e| Error::Runtime(format!("could not start the actor tree: {e}")))?;
        sup.cast(SupervisorMsg::Start)
            .map_err(|e| Error::Runtime(format!("supervisor unreachable: {e}")))?;

        let mut steps = Vec::new();
        let mut last_checkpoint = None;
        let (failed, reason) = loop {
            let ev = if ctrl_c {
                tokio::select! {
                    ev = rx.recv() => ev,
                    _ = tokio::signal::ctrl_c() => {
                        tracing::warn!("Ctrl-C: stopping after a final checkpoint");
                        let _ = sup.cast(SupervisorMsg::Shutdown("interrupted".into()));
                        continue;
                    }
                }
            } else {
                rx.recv().await
            };
            match ev {
                Some(RunEvent::Step(stats)) => {
                    metrics.append(&*stats)?;
                    if let Some(f) = on_step.as_mut() {
                        f(&stats);
                    }
                    steps.push(*stats);
                }
                Some(RunEvent::Checkpoint(p)) => last_checkpoint = Some(p),
                Some(RunEvent::Restarted(role)) => {
                    tracing::warn!(role = role.name(), "actor respawned")
                }
                Some(RunEvent::Finished { reason, failed }) => break (failed, reason),
                None => break (true, "actor tree vanished".into()),
            }
        };
        sup.stop(None);
        let _ = handle.await;
        let _ = crate::plot::metrics_svg(
            &metrics_path,
            &ctx.cfg.runtime.out_dir.join("reward.svg"),
            &["reward_mean", "accuracy", "lambda"],
        );
        let (final_weights, trained) = {
            let v = ctx.optimizer.lock();
            (
                v.trainer.policy.snapshot(v.trained_through)?,
                v.trained.clone(),
            )
        };
        let restarts = ctx.restarts.lock().clone();
        Ok(RunReport {
            steps,
            restarts,
            failed,
            reason,
            last_checkpoint,
            final_weights,
            trained,
        })
    }
}
