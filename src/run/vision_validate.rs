//! Held-out validation of a vision-language policy, as the text runs'
//! [`super::evaluate::validation_on`] reports it: before step 1 and every
//! `validation.every` steps, one greedy response and `validation.samples`
//! sampled ones per held-out prompt (its images encoded once per prompt),
//! verified; pass@1 greedy and sampled, pass@K, maj@K and the mean reward.
//! The leakage probes are the text runs' (`pipeline::leakage_probe`, on the
//! sampled responses, with the teacher template's text around the same
//! `<image>` marks); `validation.presence_penalty` is not applied.

use super::evaluate::{majority_correct, pass_at_k, privileged_spans, validates_at};
use crate::config::RunConfig;
use crate::data::{Example, TeacherPrompt};
use crate::error::Result;
use crate::model::sampling::SamplingParams;
use crate::model::vision::{VisionInput, VlPolicy};
use crate::pipeline::leakage_probe::{leakage_rates, LeakageRates, PrivilegedSpans};
use crate::pipeline::plan::step_seed;
use crate::pipeline::verify_one;
use crate::pipeline::vision::student_prompt;
use crate::stats::ValidationStats;
use crate::verify::{extract_final_answer, extract_strict_answer, Verifier};
use std::time::Instant;

/// The validation of `policy` after `step` (0 = before step 1) on
/// `held_out`; empty when the run does not validate then or has no
/// held-out prompts. With `teacher` (the run's teacher template) and
/// `validation.leakage_ngram > 0` the sampled responses are probed for
/// leakage; otherwise the leakage rates are 0.
pub fn vl_validation_on(
    cfg: &RunConfig,
    policy: &VlPolicy,
    held_out: &[Example],
    verifier: &dyn Verifier,
    teacher: Option<&TeacherPrompt>,
    step: u64,
) -> Result<Vec<ValidationStats>> {
    if !validates_at(&cfg.validation, step) || held_out.is_empty() {
        return Ok(Vec::new());
    }
    let started = Instant::now();
    let v = &cfg.validation;
    let max_new = match v.max_new_tokens {
        0 => cfg.rollout.max_new_tokens,
        m => m,
    };
    let k = v.samples.max(1);
    let greedy = SamplingParams {
        greedy: true,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        presence_penalty: 0.0,
    };
    let sampled = SamplingParams {
        greedy: v.temperature == 0.0,
        temperature: if v.temperature == 0.0 {
            1.0
        } else {
            v.temperature
        },
        top_k: v.top_k,
        top_p: v.top_p,
        presence_penalty: 0.0,
    };
    let model = &policy.model;
    let tok = model.tokenizer.as_ref().ok_or_else(|| {
        crate::Error::InvalidInput("the vision-language model has no tokenizer.json".into())
    })?;
    let context =
        usize::try_from(model.model.config.text.max_position_embeddings).unwrap_or(usize::MAX);
    let (mut greedy_correct, mut sampled_correct, mut reward) = (0usize, 0usize, 0f64);
    let (mut pass_k, mut maj) = (0f64, 0usize);
    let probe = teacher.filter(|_| v.leakage_ngram > 0);
    // Each example's privileged spans, and each sampled response (ids and
    // text) with its example's index.
    let mut spans_of: Vec<PrivilegedSpans> = Vec::new();
    let mut probed: Vec<(usize, Vec<i64>, String)> = Vec::new();
    for (i, ex) in held_out.iter().enumerate() {
        let prompt = student_prompt(model, ex)?;
        if let Some(t) = probe {
            spans_of.push(privileged_spans(tok, ex, t, v.leakage_ngram)?);
        }
        let vision = if prompt.images.is_empty() {
            None
        } else {
            Some(VisionInput::from_processed(
                &prompt.images,
                model.vs.device(),
            )?)
        };
        let max_new = max_new.min(context.saturating_sub(prompt.ids.len()));
        let run = |params: &SamplingParams, seeds: &[u64]| {
            model.model.generate_group(
                &prompt.ids,
                vision.as_ref(),
                max_new,
                tok.eos_ids(),
                params,
                seeds,
            )
        };
        let base = step_seed(v.seed, i as u64);
        let g = run(&greedy, &[base])?;
        let text = tok.decode(&g[0].tokens, true)?;
        greedy_correct += usize::from(verify_one(verifier, ex, &text).correct);
        let seeds: Vec<u64> = (0..k as u64).map(|j| step_seed(base, j + 1)).collect();
        let mut votes = Vec::with_capacity(k);
        for r in run(&sampled, &seeds)? {
            let text = tok.decode(&r.tokens, true)?;
            let verdict = verify_one(verifier, ex, &text);
            reward += f64::from(verdict.reward);
            let answer = extract_strict_answer(&text).or_else(|| extract_final_answer(&text));
            votes.push((answer, verdict.correct));
            if probe.is_some() {
                probed.push((spans_of.len() - 1, tok.encode(&text, false)?, text));
            }
        }
        let c = votes.iter().filter(|v| v.1).count();
        sampled_correct += c;
        pass_k += pass_at_k(k, c, k);
        maj += usize::from(majority_correct(&votes));
    }
    let leak = match probe {
        Some(_) => leakage_rates(
            probed
                .iter()
                .map(|(e, ids, t)| (&spans_of[*e], ids.as_slice(), t.as_str())),
        ),
        None => LeakageRates::default(),
    };
    let n = held_out.len() as f64;
    Ok(vec![ValidationStats {
        after_step: step,
        n: held_out.len(),
        samples: k,
        pass1_greedy: greedy_correct as f64 / n,
        pass1_sampled: sampled_correct as f64 / (n * k as f64),
        pass_at_k: pass_k / n,
        maj_at_k: maj as f64 / n,
        reward_mean: reward / (n * k as f64),
        wall_s: started.elapsed().as_secs_f64(),
        leakage_span: leak.span,
        leakage_cue: leak.cue,
    }])
}
