//! The whole training loop as one plain function, top to bottom: the
//! reference the actor runtime must match exactly with `max_staleness = 0`.

use super::messages::{Batch, StepPlan};
use super::source::PromptSource;
use super::stages::{
    apply_verdict, assign_advantages, fill_rollout_stats, rollout, step_seed, teacher_pass,
    train_batch, verify_one,
};
use super::teacher::required_teacher_version;
use crate::commands::eval::{validate, validates_at};
use crate::config::RunConfig;
use crate::data::TeacherPrompt;
use crate::error::Result;
use crate::model::LoadedModel;
use crate::rlsd::{lambda_at, lr_at};
use crate::stats::{StageTimings, StepStats, ValidationStats};
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
    let interval = cfg.runtime.teacher_sync_interval;
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
        if !validates_at(&cfg.validation, after) || held_out.is_empty() {
            return Ok(Vec::new());
        }
        let mut v = validate(
            policy,
            &held_out,
            verifier,
            &cfg.validation,
            cfg.rollout.max_new_tokens,
            cfg.rollout.batch_prompts * cfg.rollout.group_size,
        )?;
        v.after_step = after;
        Ok(vec![v])
    };
    let mut pending = validate_now(&trainer.policy, 0)?;
    for step in 1..=cfg.runtime.steps {
        let version = step - 1;
        let need = required_teacher_version(version, interval);
        if need > teacher_version {
            teacher.load_snapshot(&trainer.policy.snapshot(need)?)?;
            teacher_version = need;
        }
        let examples = source.next_batch(cfg.rollout.batch_prompts)?;
        let plan = StepPlan {
            step,
            examples,
            lambda: lambda_at(step, &cfg.algo),
            lr: lr_at(step, &cfg.optim),
            min_version: version,
            seed: step_seed(cfg.runtime.seed, step),
            cursor_after: source.cursor(),
        };
        let samples = rollout(&trainer.policy, &plan, &cfg.rollout)?;
        let mut batch = Batch {
            plan,
            policy_version: version,
            teacher_version,
            samples,
            timings: StageTimings::default(),
        };
        for s in batch.samples.iter_mut() {
            let v = verify_one(verifier, &batch.plan.examples[s.group], &s.response_text);
            apply_verdict(s, v);
        }
        teacher_pass(
            &teacher,
            template,
            &batch.plan.examples,
            &mut batch.samples,
            &cfg.algo,
            batch.plan.lambda,
            cfg.rollout.temperature,
        )?;
        assign_advantages(&mut batch.samples, cfg.rollout.group_size, &cfg.algo)?;
        let tb = train_batch(&batch, &cfg.algo, cfg.rollout.temperature);
        let mut stats = train_step(&mut trainer, &tb)?;
        fill_rollout_stats(&batch, &mut stats);
        stats.teacher_version = teacher_version;
        stats.completions = crate::observe::sample_completions(
            &batch,
            &tb,
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
