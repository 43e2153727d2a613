//! The step's sampler and teacher stages for a vision-language policy
//! (Qwen2.5-VL / Qwen3-VL), beside the text ones of [`super::stages`]; the
//! verifier, credit and stats stages are the text ones unchanged.
//!
//! The prompts (student and teacher, images expanded) are built by
//! [`crate::data::vl_prompt`].

use super::batch::{Rollout, RolloutBatch, ScoredBatch, TeacherBatch, TeacherScores};
use super::plan::StepPlan;
use crate::config::RolloutConfig;
use crate::data::vl_prompt::tokenizer;
pub use crate::data::vl_prompt::{example_images, student_prompt, teacher_prompt, VlPrompt};
use crate::data::TeacherPrompt;
use crate::error::{Error, Result};
use crate::model::cut_at_stop;
use crate::model::sampling::SamplingParams;
use crate::model::vision::{VisionInput, VlPolicy};
use crate::policy::{Policy, PromptResponse};
use crate::stats::StageTimings;
use crate::train::TrainBatch;

/// Sampler: `G` responses to each of the plan's prompts, one group at a
/// time (its prompt and images encoded once), each response drawn from the
/// plan's seed for its position. Returns the batch and each group's prompt.
pub fn vl_rollout(
    policy: &VlPolicy,
    plan: StepPlan,
    policy_version: u64,
    cfg: &RolloutConfig,
) -> Result<(RolloutBatch, Vec<VlPrompt>)> {
    let model = &policy.model;
    let tok = tokenizer(model)?;
    let params = SamplingParams {
        greedy: false,
        temperature: cfg.temperature,
        top_k: cfg.top_k,
        top_p: cfg.top_p,
        presence_penalty: 0.0,
    };
    let context =
        usize::try_from(model.model.config.text.max_position_embeddings).unwrap_or(usize::MAX);
    let mut rollouts = Vec::with_capacity(plan.examples.len() * cfg.group_size);
    let mut prompts = Vec::with_capacity(plan.examples.len());
    for (g, ex) in plan.examples.iter().enumerate() {
        let prompt = student_prompt(model, ex)?;
        let max_new = cfg
            .max_new_tokens
            .min(context.saturating_sub(prompt.ids.len()));
        let seeds: Vec<u64> = (0..cfg.group_size)
            .map(|j| plan.response_seed(cfg.group_size, g, j))
            .collect();
        let vision = if prompt.images.is_empty() {
            None
        } else {
            Some(VisionInput::from_processed(
                &prompt.images,
                model.vs.device(),
            )?)
        };
        let responses = model.model.generate_group(
            &prompt.ids,
            vision.as_ref(),
            max_new,
            tok.eos_ids(),
            &params,
            &seeds,
        )?;
        for r in responses {
            let text = tok.decode(&r.tokens, true)?;
            let (cut, stop) = cut_at_stop(&text, &cfg.stop);
            rollouts.push(Rollout {
                group: g,
                prompt_ids: prompt.ids.clone(),
                response_text: cut.to_string(),
                stopped_on_stop_string: stop.is_some(),
                response_ids: r.tokens,
                sampling_logprobs: r.logprobs,
                stopped_on_eos: r.stopped_on_eos,
                episode: None,
            });
        }
        prompts.push(prompt);
    }
    let batch = RolloutBatch {
        plan,
        policy_version,
        rollouts,
        timings: StageTimings::default(),
    };
    Ok((batch, prompts))
}

/// The image key of group `g`'s prompt ([`PromptResponse::image_key`]): two
/// groups whose prompt ids are equal may carry different pictures.
pub fn group_key(g: usize) -> u64 {
    g as u64 + 1
}

/// Bind each group's images (`prompts`, by group) to `policy` under its
/// [`group_key`], and key every row of `batch` (one per rollout, in order)
/// by its group, so that the train step scores each row with its own
/// group's images.
pub fn bind_group_images(
    policy: &VlPolicy,
    prompts: &[VlPrompt],
    rollouts: &[Rollout],
    batch: &mut TrainBatch,
) -> Result<()> {
    if rollouts.len() != batch.samples.len() {
        return Err(Error::InvalidInput(format!(
            "{} rollouts for a train batch of {} rows",
            rollouts.len(),
            batch.samples.len()
        )));
    }
    policy.clear_images();
    for (g, p) in prompts.iter().enumerate() {
        if !p.images.is_empty() {
            policy.bind_images(group_key(g), &p.ids, p.images.clone())?;
        }
    }
    for (sample, r) in batch.samples.iter_mut().zip(rollouts) {
        sample.image_key = group_key(r.group);
    }
    Ok(())
}

/// Teacher: the log-prob of every response token given its group's teacher
/// prompt (privileged context, same images), one group per forward, no
/// gradients. Does nothing but record `version` when the plan needs no teacher.
pub fn vl_teacher_pass(
    teacher: &VlPolicy,
    version: u64,
    template: &TeacherPrompt,
    student_prompts: &[VlPrompt],
    batch: ScoredBatch,
    temperature: f64,
) -> Result<TeacherBatch> {
    let mut scores = TeacherScores {
        version,
        ..TeacherScores::default()
    };
    if !batch.rollout.plan.needs_teacher || batch.rollout.rollouts.is_empty() {
        return Ok(TeacherBatch {
            scored: batch,
            teacher: scores,
        });
    }
    let rollouts = &batch.rollout.rollouts;
    let mut out = vec![Vec::new(); rollouts.len()];
    for (g, ex) in batch.rollout.plan.examples.iter().enumerate() {
        let images = student_prompts
            .get(g)
            .map(|p| p.images.clone())
            .ok_or_else(|| Error::InvalidInput(format!("no student prompt for group {g}")))?;
        let prompt = teacher_prompt(&teacher.model, template, ex, images)?;
        teacher.clear_images();
        if !prompt.images.is_empty() {
            teacher.bind_images(group_key(g), &prompt.ids, prompt.images.clone())?;
        }
        let rows: Vec<usize> = (0..rollouts.len())
            .filter(|&i| rollouts[i].group == g)
            .collect();
        let samples: Vec<PromptResponse> = rows
            .iter()
            .map(|&i| PromptResponse {
                image_key: group_key(g),
                prompt: prompt.ids.clone(),
                response: rollouts[i].response_ids.clone(),
            })
            .collect();
        let lp = tch::no_grad(|| teacher.response_scores(&samples, temperature))?.logprobs;
        let lp = lp
            .f_to_kind(tch::Kind::Float)?
            .f_to_device(tch::Device::Cpu)?;
        let lp: Vec<Vec<f32>> = Vec::try_from(&lp)?;
        for (k, &i) in rows.iter().enumerate() {
            out[i] = lp[k][..rollouts[i].response_ids.len()].to_vec();
        }
    }
    teacher.clear_images();
    scores.logprobs = Some(out);
    Ok(TeacherBatch {
        scored: batch,
        teacher: scores,
    })
}
