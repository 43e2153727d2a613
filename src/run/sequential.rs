//! The whole training loop as one plain function, top to bottom: the
//! reference the actor runtime must match exactly with `max_staleness = 0`.
//!
//! [`run_steps`] is the step loop itself (draw prompts, generate, verify,
//! score with the teacher, assign credit, train); what differs between its
//! callers goes through [`StepHooks`]. [`run_sequential`] is the one-process
//! loop (held-out validation, stats collected in memory); the data-parallel
//! rank loop (`crate::distributed::train_loop`) runs the same loop with its own
//! hooks (its share of the prompts, a per-rank seed, global statistics,
//! metrics and checkpoints).

use super::source::PromptSource;
use crate::config::RunConfig;
use crate::data::{Example, TeacherPrompt};
use crate::error::Result;
use crate::model::LoadedModel;
use crate::pipeline::{
    observe_step, sample_and_verify, step_stats, teach_and_credit, CreditBatch, ScoredBatch,
    StepPlan,
};
use crate::rlsd::AdaptiveLambda;
use crate::run::evaluate::validation_on;
use crate::stats::{StepStats, ValidationStats};
use crate::train::{train_step, Trainer};
use crate::verify::Verifier;

/// What the step loop carries from one step to the next.
#[derive(Debug)]
pub struct LoopModels {
    /// The trainable policy and its AdamW state.
    pub trainer: Trainer<LoadedModel>,
    /// The teacher replica.
    pub teacher: LoadedModel,
    /// Policy version of the teacher's weights.
    pub teacher_version: u64,
    /// The adaptive lambda schedule's state after the steps trained so far
    /// (used by plans only with `algo.lambda_schedule = "adaptive"`).
    pub lambda_state: AdaptiveLambda,
}

/// A finished step, handed to [`StepHooks::step_done`].
#[derive(Debug)]
pub struct StepDone<'a> {
    /// The step's stats (after [`StepHooks::finish_stats`]).
    pub stats: StepStats,
    /// Policy, optimizer and teacher after the step.
    pub models: &'a mut LoopModels,
    /// The data cursor after the step's prompts.
    pub cursor: serde_json::Value,
}

/// The parts of [`run_steps`] that differ between its callers. Every method
/// but [`StepHooks::step_done`] has the one-process behaviour as default.
pub trait StepHooks {
    /// Called as `step` starts, before its prompts are drawn.
    fn step_started(&mut self, _step: u64) -> Result<()> {
        Ok(())
    }

    /// The plan of `step` from the prompts drawn for it (default: all of
    /// them, on-policy). A plan may hold no prompt (a rank without a group
    /// this step); the step is then trained on an empty batch.
    fn plan(
        &mut self,
        cfg: &RunConfig,
        step: u64,
        examples: Vec<Example>,
        cursor: serde_json::Value,
    ) -> StepPlan {
        StepPlan::new(cfg, step, 0, examples, cursor)
    }

    /// The step's responses for `plan`, verified (default: generated here
    /// with `policy`, which is at `version`, then verified, by
    /// [`sample_and_verify`]). A learner rank under split placement
    /// receives them from the sampler ranks instead.
    fn scored(
        &mut self,
        cfg: &RunConfig,
        plan: StepPlan,
        policy: &LoadedModel,
        version: u64,
        verifier: &dyn Verifier,
    ) -> Result<ScoredBatch> {
        sample_and_verify(cfg, plan, policy, version, verifier)
    }

    /// How many sampled responses the step's stats carry for the
    /// completions log.
    fn completions(&self, cfg: &RunConfig) -> usize {
        cfg.observe.completions_per_step
    }

    /// The step is trained: complete its stats (e.g. sums over ranks,
    /// validation of the new weights).
    fn finish_stats(
        &mut self,
        _trainer: &mut Trainer<LoadedModel>,
        _batch: &CreditBatch,
        _stats: &mut StepStats,
    ) -> Result<()> {
        Ok(())
    }

    /// The step is done: record it (stats, metrics, checkpoints).
    fn step_done(&mut self, done: StepDone<'_>) -> Result<()>;
}

/// Run steps `first..=cfg.runtime.steps` of the loop: draw prompts,
/// generate, verify, score with the teacher, assign credit, train. The
/// teacher is refreshed from the policy whenever a step's plan asks for a
/// newer teacher version than `models.teacher_version`.
#[allow(clippy::too_many_arguments)] // the loop's inputs, each used once
pub fn run_steps(
    cfg: &RunConfig,
    models: &mut LoopModels,
    first: u64,
    verifier: &dyn Verifier,
    source: &mut dyn PromptSource,
    template: &TeacherPrompt,
    hooks: &mut dyn StepHooks,
) -> Result<()> {
    let rule = cfg.algo.adaptive_rule();
    for step in first.max(1)..=cfg.runtime.steps {
        hooks.step_started(step)?;
        let version = step - 1;
        let examples = source.next_batch(cfg.rollout.batch_prompts)?;
        let plan = hooks
            .plan(cfg, step, examples, source.cursor())
            .with_schedule(&cfg.algo, &models.lambda_state);
        if plan.teacher_version > models.teacher_version {
            let snap = models.trainer.policy.sync_snapshot(plan.teacher_version)?;
            models.teacher.load_snapshot(&snap)?;
            models.teacher_version = plan.teacher_version;
        }
        let cursor = plan.cursor_after.clone();
        let scored = hooks.scored(cfg, plan, &models.trainer.policy, version, verifier)?;
        let batch = teach_and_credit(
            cfg,
            scored,
            &models.teacher,
            models.teacher_version,
            template,
        )?;
        let tb = batch.train_batch(&cfg.algo, cfg.rollout.temperature);
        let trained = train_step(&mut models.trainer, &tb)?;
        let mut stats = step_stats(
            &batch,
            &tb,
            trained,
            &cfg.algo,
            models.trainer.policy.tokenizer.as_ref(),
            hooks.completions(cfg),
        );
        hooks.finish_stats(&mut models.trainer, &batch, &mut stats)?;
        observe_step(&mut models.lambda_state, &rule, &stats);
        hooks.step_done(StepDone {
            stats,
            models,
            cursor,
        })?;
    }
    Ok(())
}

/// Held-out validation as the step loop runs it: before step 1 and every
/// `validation.every` steps, each result attached to the stats of the step
/// it follows (the one before step 1 to step 1's).
pub struct StepValidation<'a> {
    cfg: &'a RunConfig,
    verifier: &'a dyn Verifier,
    held_out: Vec<Example>,
    /// Validation results not yet attached to a step's stats.
    pending: Vec<ValidationStats>,
}

impl std::fmt::Debug for StepValidation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepValidation")
            .field("held_out", &self.held_out.len())
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl<'a> StepValidation<'a> {
    /// Read the held-out prompts when `enabled` and `validation.every > 0`
    /// (else validate nothing), and validate `policy` before step 1 when
    /// `before_first` (a fresh run, not a resumed one).
    pub fn start(
        cfg: &'a RunConfig,
        verifier: &'a dyn Verifier,
        policy: &LoadedModel,
        enabled: bool,
        before_first: bool,
    ) -> Result<StepValidation<'a>> {
        let held_out = if enabled && cfg.validation.every > 0 {
            crate::run::evaluate::held_out_examples(cfg)?
        } else {
            Vec::new()
        };
        let pending = if before_first {
            validation_on(cfg, policy, &held_out, verifier, 0)?
        } else {
            Vec::new()
        };
        Ok(StepValidation {
            cfg,
            verifier,
            held_out,
            pending,
        })
    }

    /// Validate `policy` after `stats.step` if due, and attach what is pending.
    pub fn attach(&mut self, policy: &LoadedModel, stats: &mut StepStats) -> Result<()> {
        self.pending.extend(validation_on(
            self.cfg,
            policy,
            &self.held_out,
            self.verifier,
            stats.step,
        )?);
        stats.validation = std::mem::take(&mut self.pending);
        Ok(())
    }
}

/// The one-process hooks: held-out validation after every step (as
/// `validation.every` says) and the stats kept in memory.
struct Sequential<'a> {
    validation: StepValidation<'a>,
    all: Vec<StepStats>,
}

impl StepHooks for Sequential<'_> {
    fn finish_stats(
        &mut self,
        trainer: &mut Trainer<LoadedModel>,
        _batch: &CreditBatch,
        stats: &mut StepStats,
    ) -> Result<()> {
        self.validation.attach(&trainer.policy, stats)
    }

    fn step_done(&mut self, done: StepDone<'_>) -> Result<()> {
        self.all.push(done.stats);
        Ok(())
    }
}

/// Run `cfg.runtime.steps` steps sequentially: draw prompts, generate, verify,
/// score with the teacher, assign credit, train. Returns the trainer and the
/// stats of every step. `teacher` starts as a copy of `policy`.
pub fn run_sequential(
    cfg: &RunConfig,
    policy: LoadedModel,
    teacher: LoadedModel,
    verifier: &dyn Verifier,
    source: &mut dyn PromptSource,
    template: &TeacherPrompt,
) -> Result<(Trainer<LoadedModel>, Vec<StepStats>)> {
    let algo = crate::pipeline::algo_for(&cfg.algo, &policy)?;
    let trainer = Trainer::new(policy, algo, cfg.optim.clone())?;
    // Held-out validation (before step 1 and every `validation.every` steps);
    // the actor runtime's scheduler calls `validation_on` the same way.
    let validation = StepValidation::start(cfg, verifier, &trainer.policy, true, true)?;
    let mut hooks = Sequential {
        validation,
        all: Vec::new(),
    };
    let mut models = LoopModels {
        trainer,
        teacher,
        teacher_version: 0,
        lambda_state: cfg.algo.adaptive_start(),
    };
    run_steps(cfg, &mut models, 1, verifier, source, template, &mut hooks)?;
    Ok((models.trainer, hooks.all))
}
