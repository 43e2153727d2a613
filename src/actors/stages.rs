//! The work of each pipeline stage as plain functions.
//!
//! The actors call these, and so does [`super::sequential`], the plain loop
//! the runtime is tested against; with `max_staleness = 0` both produce the
//! same weights because they run exactly this code with exactly these seeds.

use super::messages::{Batch, Sample, StepPlan};
use crate::config::RolloutConfig;
use crate::data::prompt::{chat_prompt_ids, student_prompt_ids};
use crate::data::Example;
use crate::data::TeacherPrompt;
use crate::error::Error;
use crate::error::Result;
use crate::model::{
    cut_at_stop, generate_with, prompt_seeds, teacher_support, token_logprobs_by_prompt,
    GenerateOptions, LoadedModel, Tokenizer,
};
use crate::policy::PromptResponse;
use crate::rlsd::sdpo::render_sdpo;
use crate::rlsd::{cepo_negatives, group_advantages, sdpo_feedback, Algo, AlgoConfig};
use crate::stats::StepStats;
use crate::train::TrainBatch;
use crate::verify::{extract_final_answer, Verdict, Verifier};

/// Seed of step `step`'s sampling RNG: a SplitMix64 mix of the run seed and the step,
/// so a re-issued step samples exactly what the first attempt did.
pub fn step_seed(run_seed: u64, step: u64) -> u64 {
    let mut z = run_seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The model's tokenizer, or an error naming what is missing.
pub fn tokenizer_of(model: &LoadedModel) -> Result<&Tokenizer> {
    model.tokenizer.as_ref().ok_or_else(|| {
        Error::InvalidInput("the model has no tokenizer.json; rollouts need one".into())
    })
}

/// The teacher's prompt: the question with the privileged text inserted.
pub fn teacher_prompt_ids(
    tok: &Tokenizer,
    template: &TeacherPrompt,
    ex: &Example,
    privileged: &str,
) -> Result<Vec<i64>> {
    let shown = Example {
        privileged: privileged.to_string(),
        ..ex.clone()
    };
    template.ids(tok, &shown)
}

/// Sampler: `G` responses for each of the plan's prompts, prompt-major.
pub fn rollout(model: &LoadedModel, plan: &StepPlan, cfg: &RolloutConfig) -> Result<Vec<Sample>> {
    let tok = tokenizer_of(model)?;
    let mut prompts = Vec::with_capacity(plan.examples.len() * cfg.group_size);
    let mut groups = Vec::with_capacity(prompts.capacity());
    for (g, ex) in plan.examples.iter().enumerate() {
        let ids = student_prompt_ids(tok, ex)?;
        for _ in 0..cfg.group_size {
            prompts.push(ids.clone());
            groups.push(g);
        }
    }
    let opts = GenerateOptions {
        max_new_tokens: cfg.max_new_tokens,
        greedy: false,
        temperature: cfg.temperature,
        top_k: cfg.top_k,
        top_p: cfg.top_p,
        eos_ids: tok.eos_ids().to_vec(),
        pad_id: tok.pad_id(),
        kv_cache_bytes: cfg.kv_cache_bytes,
        stop: cfg.stop.clone(),
    };
    // Response i samples from the stream prompt_seed(plan.seed, i).
    let seeds = prompt_seeds(plan.seed, prompts.len());
    let gens = generate_with(&model.lm, &prompts, &seeds, &opts, Some(tok))?;
    let mut out = Vec::with_capacity(gens.len());
    for ((prompt_ids, group), g) in prompts.into_iter().zip(groups).zip(gens) {
        out.push(Sample {
            group,
            prompt_ids,
            response_text: cut_at_stop(&tok.decode(&g.tokens, true)?, &cfg.stop)
                .0
                .to_string(),
            stopped_on_stop_string: g.stop_string.is_some(),
            response_ids: g.tokens,
            sampling_logprobs: g.logprobs,
            stopped_on_eos: g.stopped_on_eos,
            ..Default::default()
        });
    }
    Ok(out)
}

/// Verifier (one response): a panic inside a verifier scores 0 instead of
/// stopping the run.
pub fn verify_one(verifier: &dyn Verifier, ex: &Example, response: &str) -> Verdict {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        verifier.verify(ex, response)
    })) {
        Ok(v) if v.reward.is_finite() => v,
        Ok(v) => Verdict {
            reward: 0.0,
            correct: false,
            reason: format!("verifier returned a non-finite reward ({})", v.reward),
        },
        Err(_) => Verdict {
            reward: 0.0,
            correct: false,
            reason: "verifier panicked".into(),
        },
    }
}

/// Store a verdict on its sample.
pub fn apply_verdict(sample: &mut Sample, v: Verdict) {
    sample.reward = v.reward;
    sample.correct = v.correct;
    sample.reason = v.reason;
}

/// Whether a step needs the teacher at all: every algorithm but GRPO does,
/// except RLSD once lambda has decayed to 0 (then it is exactly GRPO, and the
/// teacher forward is skipped).
pub fn needs_teacher_pass(algo: &AlgoConfig, lambda: f64) -> bool {
    algo.algo.needs_teacher() && !(algo.algo == crate::rlsd::Algo::Rlsd && lambda == 0.0)
}

/// Teacher: log-probs of every response token under the privileged context
/// (and, for CEPO, under the context of the group's worst wrong answer).
pub fn teacher_pass(
    teacher: &LoadedModel,
    template: &TeacherPrompt,
    examples: &[Example],
    samples: &mut [Sample],
    algo: &AlgoConfig,
    lambda: f64,
    temperature: f64,
) -> Result<()> {
    if !needs_teacher_pass(algo, lambda) {
        return Ok(());
    }
    let tok = tokenizer_of(teacher)?;
    // One teacher context per group; every sample of its group reuses it.
    let contexts = if algo.algo == Algo::Sdpo {
        sdpo_contexts(tok, algo, examples, samples)?
    } else {
        examples
            .iter()
            .map(|ex| template.ids(tok, ex))
            .collect::<Result<Vec<_>>>()?
    };
    let prompts: Vec<Vec<i64>> = samples.iter().map(|s| contexts[s.group].clone()).collect();
    let responses: Vec<Vec<i64>> = samples.iter().map(|s| s.response_ids.clone()).collect();
    let lps = token_logprobs_by_prompt(&teacher.lm, &prompts, &responses, temperature)?;
    for (s, lp) in samples.iter_mut().zip(lps) {
        s.teacher_logprobs = lp;
    }
    if algo.algo.distills() && algo.opsd_loss.needs_distribution() {
        let support = teacher_support(
            &teacher.lm,
            &prompts,
            &responses,
            temperature,
            algo.distill_topk,
        )?;
        for (s, t) in samples.iter_mut().zip(support) {
            s.teacher_support = Some(t);
        }
    }
    if algo.algo.needs_negative_teacher() {
        cepo_negative_pass(teacher, template, examples, samples, temperature)?;
    }
    Ok(())
}

/// SDPO's teacher context per group: the question with the group's shortest
/// correct response and shortest wrong one ([`sdpo_feedback`], [`render_sdpo`]).
fn sdpo_contexts(
    tok: &Tokenizer,
    algo: &AlgoConfig,
    examples: &[Example],
    samples: &[Sample],
) -> Result<Vec<Vec<i64>>> {
    let group_size = samples.iter().filter(|s| s.group == 0).count().max(1);
    let correct: Vec<bool> = samples.iter().map(|s| s.correct).collect();
    let lens: Vec<usize> = samples.iter().map(|s| s.response_ids.len()).collect();
    let picks = sdpo_feedback(&correct, &lens, group_size)?;
    examples
        .iter()
        .enumerate()
        .map(|(g, ex)| {
            let (right, wrong) = picks.get(g).copied().unwrap_or((None, None));
            let text = |i: Option<usize>| i.map(|i| samples[i].response_text.as_str());
            let user = render_sdpo(&algo.sdpo_template, &ex.prompt, text(right), text(wrong));
            chat_prompt_ids(tok, &user)
        })
        .collect()
}

/// CEPO's second pass: the teacher shown the final answer of the lowest-reward
/// wrong response of the same group. Groups without a wrong response keep
/// `None` (the credit then uses the student's log-probs, i.e. plain RLSD).
fn cepo_negative_pass(
    teacher: &LoadedModel,
    template: &TeacherPrompt,
    examples: &[Example],
    samples: &mut [Sample],
    temperature: f64,
) -> Result<()> {
    let tok = tokenizer_of(teacher)?;
    let group_size = samples.iter().filter(|s| s.group == 0).count().max(1);
    let rewards: Vec<f32> = samples.iter().map(|s| s.reward).collect();
    let correct: Vec<bool> = samples.iter().map(|s| s.correct).collect();
    let negatives = cepo_negatives(&rewards, &correct, group_size)?;
    let mut prompts = Vec::new();
    let mut responses = Vec::new();
    let mut owners = Vec::new();
    let mut context: Option<(usize, Vec<i64>)> = None;
    for (i, neg) in negatives.into_iter().enumerate() {
        let Some(w) = neg else { continue };
        if context.as_ref().map(|c| c.0) != Some(w) {
            let wrong = &samples[w];
            let answer = extract_final_answer(&wrong.response_text)
                .unwrap_or_else(|| wrong.response_text.trim().to_string());
            let ex = &examples[samples[i].group];
            context = Some((w, teacher_prompt_ids(tok, template, ex, &answer)?));
        }
        if let Some((_, ids)) = &context {
            prompts.push(ids.clone());
        }
        responses.push(samples[i].response_ids.clone());
        owners.push(i);
    }
    if prompts.is_empty() {
        return Ok(());
    }
    let lps = token_logprobs_by_prompt(&teacher.lm, &prompts, &responses, temperature)?;
    for (i, lp) in owners.into_iter().zip(lps) {
        samples[i].teacher_neg_logprobs = Some(lp);
    }
    Ok(())
}

/// Credit-assigner: group-relative advantages `A_i` for every sample.
pub fn assign_advantages(
    samples: &mut [Sample],
    group_size: usize,
    algo: &AlgoConfig,
) -> Result<()> {
    let rewards: Vec<f32> = samples.iter().map(|s| s.reward).collect();
    let adv = group_advantages(&rewards, group_size, algo.scale_by_std)?;
    for (s, a) in samples.iter_mut().zip(adv) {
        s.advantage = a;
    }
    Ok(())
}

/// The optimizer's input, built from a finished batch.
pub fn train_batch(batch: &Batch, algo: &AlgoConfig, temperature: f64) -> TrainBatch {
    let s = &batch.samples;
    let teacher = needs_teacher_pass(algo, batch.plan.lambda);
    let cepo = algo.algo.needs_negative_teacher();
    TrainBatch {
        samples: s
            .iter()
            .map(|x| PromptResponse {
                prompt: x.prompt_ids.clone(),
                response: x.response_ids.clone(),
            })
            .collect(),
        sampling_logprobs: s.iter().map(|x| x.sampling_logprobs.clone()).collect(),
        teacher_logprobs: teacher.then(|| s.iter().map(|x| x.teacher_logprobs.clone()).collect()),
        teacher_neg_logprobs: cepo
            .then(|| s.iter().map(|x| x.teacher_neg_logprobs.clone()).collect()),
        ref_logprobs: None,
        teacher_support: (teacher && algo.algo.distills() && algo.opsd_loss.needs_distribution())
            .then(|| {
                s.iter()
                    .map(|x| x.teacher_support.clone().unwrap_or_default())
                    .collect()
            }),
        advantages: s.iter().map(|x| x.advantage).collect(),
        correct: Some(s.iter().map(|x| x.correct).collect()),
        step: batch.plan.step,
        lambda: batch.plan.lambda,
        lr: batch.plan.lr,
        temperature,
    }
}

/// Fill the rollout-side fields of a step's stats (reward, accuracy, lengths, lag).
pub fn fill_rollout_stats(batch: &Batch, stats: &mut StepStats) {
    let n = batch.samples.len().max(1) as f64;
    stats.step = batch.plan.step;
    stats.reward_mean = batch.samples.iter().map(|s| s.reward as f64).sum::<f64>() / n;
    stats.accuracy = batch.samples.iter().filter(|s| s.correct).count() as f64 / n;
    stats.response_len_mean = batch
        .samples
        .iter()
        .map(|s| s.response_ids.len() as f64)
        .sum::<f64>()
        / n;
    stats.truncation_rate = batch
        .samples
        .iter()
        .filter(|s| !s.stopped_on_eos && !s.stopped_on_stop_string)
        .count() as f64
        / n;
    stats.leakage_rate = crate::rlsd::leakage::leakage_rate(
        batch
            .samples
            .iter()
            .map(|s| (&batch.plan.examples[s.group], s.response_text.as_str())),
    );
    stats.policy_version = batch.policy_version;
    stats.verifier_timeouts = batch
        .samples
        .iter()
        .filter(|s| s.verifier_timed_out)
        .count() as u64;
    stats.version_lag = (batch.plan.step - 1).saturating_sub(batch.policy_version);
    stats.timings.generate_s = batch.timings.generate_s;
    stats.timings.verify_s = batch.timings.verify_s;
    stats.timings.teacher_s = batch.timings.teacher_s;
    stats.timings.credit_s = batch.timings.credit_s;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teacher_pass_is_skipped_only_when_it_cannot_matter() {
        use crate::rlsd::Algo;
        let cfg = |a| AlgoConfig::with_algo(a);
        assert!(needs_teacher_pass(&cfg(Algo::Rlsd), 0.3));
        assert!(!needs_teacher_pass(&cfg(Algo::Rlsd), 0.0));
        assert!(!needs_teacher_pass(&cfg(Algo::Grpo), 0.3));
        assert!(needs_teacher_pass(&cfg(Algo::Opsd), 0.0));
        assert!(needs_teacher_pass(&cfg(Algo::Cepo), 0.0));
    }

    #[test]
    fn step_seeds_differ_and_repeat() {
        assert_eq!(step_seed(7, 3), step_seed(7, 3));
        assert_ne!(step_seed(7, 3), step_seed(7, 4));
        assert_ne!(step_seed(7, 3), step_seed(8, 3));
    }
}
