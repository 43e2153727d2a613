//! The whole training loop as one plain function, top to bottom: the
//! reference the actor runtime must match exactly with `max_staleness = 0`.

use super::source::PromptSource;
use crate::commands::eval::validation_on;
use crate::config::RunConfig;
use crate::data::TeacherPrompt;
use crate::error::Result;
use crate::model::LoadedModel;
use crate::pipeline::{prepare_step, step_stats, StepPlan};
use crate::stats::{StepStats, ValidationStats};
use crate::train::{train_step, Trainer};
use crate::verify::Verifier;

/// Run `cfg.runtime.steps` steps sequentially: draw prompts, generate, verify,
/// score with the teacher, assign credit, train. Returns the trainer and the
/// stats of every step. `teacher` starts as a copy of `policy`.
pub fn run_sequential(
    cfg: &RunConfig,
    policy: LoadedModel,
    mut teacher: LoadedModel,
    verifier: &dyn Verifier,
    source: &mut dyn PromptSource,
    template: &TeacherPrompt,
) -> Result<(Trainer<LoadedModel>, Vec<StepStats>)> {
    let mut trainer = Trainer::new(policy, cfg.algo.clone(), cfg.optim.clone())?;
    let mut teacher_version = 0;
    let mut all = Vec::new();
    // Held-out validation (before step 1 and every `validation.every` steps);
    // the actor runtime's scheduler can call `validate_now` the same way.
    let held_out = if cfg.validation.every > 0 {
        crate::commands::eval::held_out_examples(cfg)?
    } else {
        Vec::new()
    };
    let validate_now = |policy: &LoadedModel, after: u64| -> Result<Vec<ValidationStats>> {
        validation_on(cfg, policy, &held_out, verifier, after)
    };
    let mut pending = validate_now(&trainer.policy, 0)?;
    for step in 1..=cfg.runtime.steps {
        let version = step - 1;
        let examples = source.next_batch(cfg.rollout.batch_prompts)?;
        let plan = StepPlan::new(cfg, step, 0, examples, source.cursor());
        if plan.teacher_version > teacher_version {
            teacher.load_snapshot(&trainer.policy.snapshot(plan.teacher_version)?)?;
            teacher_version = plan.teacher_version;
        }
        let batch = prepare_step(
            cfg,
            plan,
            &trainer.policy,
            version,
            &teacher,
            teacher_version,
            verifier,
            template,
        )?;
        let tb = batch.train_batch(&cfg.algo, cfg.rollout.temperature);
        let trained = train_step(&mut trainer, &tb)?;
        let mut stats = step_stats(
            &batch,
            &tb,
            trained,
            &cfg.algo,
            trainer.policy.tokenizer.as_ref(),
            cfg.observe.completions_per_step,
        );
        pending.extend(validate_now(&trainer.policy, step)?);
        stats.validation = std::mem::take(&mut pending);
        all.push(stats);
    }
    Ok((trainer, all))
}
