//! The work of each stage of a step, as plain functions over the typed
//! batches of [`super::batch`]. The actors call these one stage each; the
//! sequential loop, `rlsd inspect` and the tests call [`prepare_step`],
//! which runs them all in order. With `max_staleness = 0` the actor runtime
//! and the sequential loop produce the same weights because they run exactly
//! this code with exactly these seeds.

use super::batch::{
    CreditBatch, Rollout, RolloutBatch, Score, ScoredBatch, TeacherBatch, TeacherScores,
};
use super::plan::StepPlan;
use crate::config::{RolloutConfig, RunConfig};
use crate::data::prompt::{chat_prompt_ids, student_prompt_ids};
use crate::data::{Example, TeacherPrompt};
use crate::error::{Error, Result};
use crate::model::{
    cut_at_stop, generate_with, teacher_support, token_logprobs_by_prompt_within, GenerateOptions,
    LoadedModel, Tokenizer,
};
use crate::rlsd::sdpo::render_sdpo;
use crate::rlsd::{batch_advantages, cepo_negatives, sdpo_feedback, Algo, AlgoConfig};
use crate::stats::StageTimings;
use crate::verify::{extract_final_answer, Verdict, Verifier};
use std::time::Instant;

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

/// Sampler: `G` responses for each of the plan's prompts, prompt-major,
/// sampled with the plan's seed. `policy_version` is the version of `model`.
pub fn rollout(
    model: &LoadedModel,
    plan: StepPlan,
    policy_version: u64,
    cfg: &RolloutConfig,
) -> Result<RolloutBatch> {
    let tok = tokenizer_of(model)?;
    let mut prompts = Vec::with_capacity(plan.examples.len() * cfg.group_size);
    let mut groups = Vec::with_capacity(prompts.capacity());
    let mut seeds = Vec::with_capacity(prompts.capacity());
    for (g, ex) in plan.examples.iter().enumerate() {
        let ids = student_prompt_ids(tok, ex)?;
        for j in 0..cfg.group_size {
            prompts.push(ids.clone());
            groups.push(g);
            seeds.push(plan.response_seed(cfg.group_size, g, j));
        }
    }
    // SDPO's feedback candidates (`algo.sdpo_num_candidates`), after every
    // group's responses: the teacher pass picks its context from them and
    // drops them ([`split_sdpo_candidates`]), so they are never trained on.
    for (g, ex) in plan.examples.iter().enumerate() {
        let ids = student_prompt_ids(tok, ex)?;
        for c in 0..plan.sdpo_candidates {
            prompts.push(ids.clone());
            groups.push(g);
            seeds.push(plan.response_seed(cfg.group_size, g, cfg.group_size + c));
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
        // Training samples the policy's own distribution (logp_old).
        presence_penalty: 0.0,
    };
    // Each response samples from the stream of its global position.
    let gens = generate_with(&model.lm, &prompts, &seeds, &opts, Some(tok))?;
    let mut rollouts = Vec::with_capacity(gens.len());
    for ((prompt_ids, group), g) in prompts.into_iter().zip(groups).zip(gens) {
        rollouts.push(Rollout {
            group,
            prompt_ids,
            response_text: cut_at_stop(&tok.decode(&g.tokens, true)?, &cfg.stop)
                .0
                .to_string(),
            stopped_on_stop_string: g.stop_string.is_some(),
            response_ids: g.tokens,
            sampling_logprobs: g.logprobs,
            stopped_on_eos: g.stopped_on_eos,
            episode: None,
        });
    }
    Ok(RolloutBatch {
        plan,
        policy_version,
        rollouts,
        timings: StageTimings::default(),
    })
}

/// Verifier (one response): a panic inside a verifier scores 0 instead of
/// stopping the run.
pub fn verify_one(verifier: &dyn Verifier, ex: &Example, response: &str) -> Verdict {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        verifier.verify(ex, response)
    })) {
        Ok(v) if v.reward.is_finite() => v,
        Ok(v) => Verdict::wrong(format!(
            "verifier returned a non-finite reward ({})",
            v.reward
        )),
        Err(_) => Verdict::wrong("verifier panicked"),
    }
}

impl Score {
    /// A verdict as a score (`timed_out`: the verifier was abandoned).
    pub fn of(v: Verdict, timed_out: bool) -> Score {
        Score {
            reward: v.reward,
            correct: v.correct,
            reason: v.reason,
            timed_out,
        }
    }

    /// The score's verdict.
    pub fn verdict(&self) -> Verdict {
        Verdict {
            reward: self.reward,
            correct: self.correct,
            reason: self.reason.clone(),
        }
    }
}

/// Verifier, one response after another on this thread (the actor runtime's
/// pool runs them concurrently with a timeout instead).
pub fn verify_all(verifier: &dyn Verifier, batch: RolloutBatch) -> Result<ScoredBatch> {
    let scores = batch
        .rollouts
        .iter()
        .map(|r| match &r.episode {
            // A multi-turn episode was scored by its environment.
            Some(e) => e.score.clone(),
            None => {
                let ex = &batch.plan.examples[r.group];
                Score::of(verify_one(verifier, ex, &r.response_text), false)
            }
        })
        .collect();
    ScoredBatch::new(batch, scores)
}

/// Teacher: log-probs of every response token under the privileged context
/// (and, for CEPO, under the context of the group's worst wrong answer; for
/// OPSD `kl` / `jsd`, the teacher's next-token support). Does nothing but
/// record `version` when the plan needs no teacher. `max_tokens` bounds the
/// padded positions per forward (`optim.max_tokens_per_micro_batch`).
#[allow(clippy::too_many_arguments)]
pub fn teacher_pass(
    teacher: &LoadedModel,
    version: u64,
    template: &TeacherPrompt,
    batch: ScoredBatch,
    algo: &AlgoConfig,
    temperature: f64,
    max_tokens: usize,
) -> Result<TeacherBatch> {
    let mut scores = TeacherScores {
        version,
        ..TeacherScores::default()
    };
    if !batch.rollout.plan.needs_teacher {
        return Ok(TeacherBatch {
            scored: split_sdpo_candidates(batch)?.0,
            teacher: scores,
        });
    }
    let tok = tokenizer_of(teacher)?;
    let (batch, candidates) = split_sdpo_candidates(batch)?;
    let examples = &batch.rollout.plan.examples;
    let rollouts = &batch.rollout.rollouts;
    // One teacher context per group; every sample of its group reuses it.
    let contexts = if algo.algo == Algo::Sdpo {
        match &candidates {
            Some(c) => sdpo_candidate_contexts(tok, algo, &batch, c)?,
            None => sdpo_contexts(tok, algo, &batch)?,
        }
    } else {
        examples
            .iter()
            .map(|ex| template.ids(tok, ex))
            .collect::<Result<Vec<_>>>()?
    };
    // An episode's teacher sees the environment's opening with the
    // privileged text (its system turn and tools included); SDPO's
    // contexts are its own.
    let prompts: Vec<Vec<i64>> = rollouts
        .iter()
        .map(|s| {
            s.episode
                .as_ref()
                .and_then(|e| e.teacher_prompt_ids.clone())
                .filter(|_| algo.algo != Algo::Sdpo)
                .unwrap_or_else(|| contexts[s.group].clone())
        })
        .collect();
    let responses: Vec<Vec<i64>> = rollouts.iter().map(|s| s.response_ids.clone()).collect();
    scores.logprobs = Some(token_logprobs_by_prompt_within(
        &teacher.lm,
        &prompts,
        &responses,
        temperature,
        max_tokens,
    )?);
    if algo.algo.distills() && algo.opsd_loss.needs_distribution() {
        scores.support = Some(teacher_support(
            &teacher.lm,
            &prompts,
            &responses,
            temperature,
            algo.distill_topk,
        )?);
    }
    if algo.algo.needs_negative_teacher() {
        scores.neg_logprobs = Some(cepo_negative_pass(
            teacher,
            template,
            &batch,
            temperature,
            max_tokens,
        )?);
    }
    Ok(TeacherBatch {
        scored: batch,
        teacher: scores,
    })
}

/// SDPO's teacher context per group: the question with the group's shortest
/// correct response and shortest wrong one ([`sdpo_feedback`], [`render_sdpo`]).
fn sdpo_contexts(tok: &Tokenizer, algo: &AlgoConfig, batch: &ScoredBatch) -> Result<Vec<Vec<i64>>> {
    let rollouts = &batch.rollout.rollouts;
    let group_size = rollouts.iter().filter(|s| s.group == 0).count().max(1);
    let correct: Vec<bool> = batch.scores.iter().map(|s| s.correct).collect();
    let lens: Vec<usize> = rollouts.iter().map(|s| s.response_ids.len()).collect();
    let picks = sdpo_feedback(&correct, &lens, group_size)?;
    batch
        .rollout
        .plan
        .examples
        .iter()
        .enumerate()
        .map(|(g, ex)| {
            let (right, wrong) = picks.get(g).copied().unwrap_or((None, None));
            let text = |i: Option<usize>| i.map(|i| rollouts[i].response_text.as_str());
            let user = render_sdpo(&algo.sdpo_template, &ex.prompt, text(right), text(wrong));
            chat_prompt_ids(tok, &user)
        })
        .collect()
}

/// SDPO's feedback candidates of a step with their scores, prompt-major.
pub type SdpoCandidates = (Vec<Rollout>, Vec<Score>);

/// SDPO's feedback candidates, the reference's (iie-ycx/RLSD
/// `verl/trainer/opsd_trainer.py` 686-727): `plan.sdpo_candidates` responses
/// per prompt, sampled after the groups' responses ([`rollout`]) and
/// verified with them. Returns the batch without them (what is distilled and
/// trained) and, where the plan has any, the candidates with their scores
/// (`C` per prompt, prompt-major).
pub fn split_sdpo_candidates(
    mut batch: ScoredBatch,
) -> Result<(ScoredBatch, Option<SdpoCandidates>)> {
    let c = batch.rollout.plan.sdpo_candidates;
    let n = batch.rollout.plan.examples.len() * c;
    if c == 0 || batch.rollout.rollouts.is_empty() {
        return Ok((batch, None));
    }
    let total = batch.rollout.rollouts.len();
    if n > total || batch.scores.len() != total {
        return Err(Error::InvalidInput(format!(
            "sdpo: {total} responses and {} scores cannot hold {n} candidates",
            batch.scores.len()
        )));
    }
    let rollouts = batch.rollout.rollouts.split_off(total - n);
    let scores = batch.scores.split_off(total - n);
    Ok((batch, Some((rollouts, scores))))
}

/// SDPO's teacher context per group from its candidates, as the reference's
/// `_select_sdpo_feedback` (opsd_trainer.py 561-615): "correct" is a score
/// above 0 (a formatted wrong answer scoring 0.1 counts), the shortest such
/// candidate is the correct solution and the shortest other one the
/// feedback, the first on ties; none leaves its slot empty.
fn sdpo_candidate_contexts(
    tok: &Tokenizer,
    algo: &AlgoConfig,
    batch: &ScoredBatch,
    (rollouts, scores): &SdpoCandidates,
) -> Result<Vec<Vec<i64>>> {
    let c = batch.rollout.plan.sdpo_candidates;
    let correct: Vec<bool> = scores.iter().map(|s| s.reward > 0.0).collect();
    let lens: Vec<usize> = rollouts.iter().map(|r| r.response_ids.len()).collect();
    let picks = sdpo_feedback(&correct, &lens, c)?;
    let text = |i: Option<usize>| i.map(|i| rollouts[i].response_text.as_str());
    (batch.rollout.plan.examples.iter().zip(picks))
        .map(|(ex, (right, wrong))| {
            chat_prompt_ids(
                tok,
                &render_sdpo(&algo.sdpo_template, &ex.prompt, text(right), text(wrong)),
            )
        })
        .collect()
}

/// CEPO's second pass: the teacher shown the final answer of the lowest-reward
/// wrong response of the same group. Groups without a wrong response get
/// `None` (the credit then falls back as `cepo_fallback` says).
fn cepo_negative_pass(
    teacher: &LoadedModel,
    template: &TeacherPrompt,
    batch: &ScoredBatch,
    temperature: f64,
    max_tokens: usize,
) -> Result<Vec<Option<Vec<f32>>>> {
    let tok = tokenizer_of(teacher)?;
    let rollouts = &batch.rollout.rollouts;
    let examples = &batch.rollout.plan.examples;
    let group_size = rollouts.iter().filter(|s| s.group == 0).count().max(1);
    let rewards: Vec<f32> = batch.scores.iter().map(|s| s.reward).collect();
    let correct: Vec<bool> = batch.scores.iter().map(|s| s.correct).collect();
    let negatives = cepo_negatives(&rewards, &correct, group_size)?;
    let mut out = vec![None; rollouts.len()];
    let mut prompts = Vec::new();
    let mut responses = Vec::new();
    let mut owners = Vec::new();
    let mut context: Option<(usize, Vec<i64>)> = None;
    for (i, neg) in negatives.into_iter().enumerate() {
        let Some(w) = neg else { continue };
        if context.as_ref().map(|c| c.0) != Some(w) {
            let wrong = &rollouts[w];
            let answer = extract_final_answer(&wrong.response_text)
                .unwrap_or_else(|| wrong.response_text.trim().to_string());
            let ex = &examples[rollouts[i].group];
            context = Some((w, teacher_prompt_ids(tok, template, ex, &answer)?));
        }
        if let Some((_, ids)) = &context {
            prompts.push(ids.clone());
        }
        responses.push(rollouts[i].response_ids.clone());
        owners.push(i);
    }
    if prompts.is_empty() {
        return Ok(out);
    }
    let lps = token_logprobs_by_prompt_within(
        &teacher.lm,
        &prompts,
        &responses,
        temperature,
        max_tokens,
    )?;
    for (i, lp) in owners.into_iter().zip(lps) {
        out[i] = Some(lp);
    }
    Ok(out)
}

/// The update's configuration for a run of `model`: `algo` with the token
/// ids of `<thought>` / `</thought>` (each encoded alone, as the reference's
/// `_build_thought_span_mask`) filled in when `rlsd_thought_only` asks.
pub fn algo_for(algo: &AlgoConfig, model: &LoadedModel) -> Result<AlgoConfig> {
    let mut algo = algo.clone();
    if algo.rlsd_thought_only {
        let tok = tokenizer_of(model)?;
        algo.thought_tag_ids = Some((
            tok.encode("<thought>", false)?,
            tok.encode("</thought>", false)?,
        ));
    }
    Ok(algo)
}

/// Credit-assigner: the advantage `A_i` of every response (group-relative;
/// `grpo+opsd`: see [`batch_advantages`]).
pub fn assign_credit(
    batch: TeacherBatch,
    group_size: usize,
    algo: &AlgoConfig,
) -> Result<CreditBatch> {
    let rewards: Vec<f32> = batch.scored.scores.iter().map(|s| s.reward).collect();
    let lengths: Vec<usize> = (batch.scored.rollout.rollouts.iter())
        .map(|r| r.response_ids.len())
        .collect();
    let advantages = batch_advantages(algo, &rewards, &lengths, group_size)?;
    Ok(CreditBatch {
        taught: batch,
        advantages,
    })
}

/// Every stage of one step before the train step, in order on this thread:
/// rollout with `policy` (at `policy_version`), verify, teacher pass with
/// `teacher` (at `teacher_version`), credit, each timed. The sequential loop
/// and `rlsd inspect` use this; the actors run the same stages one each.
#[allow(clippy::too_many_arguments)]
pub fn prepare_step(
    cfg: &RunConfig,
    plan: StepPlan,
    policy: &LoadedModel,
    policy_version: u64,
    teacher: &LoadedModel,
    teacher_version: u64,
    verifier: &dyn Verifier,
    template: &TeacherPrompt,
) -> Result<CreditBatch> {
    let scored = sample_and_verify(cfg, plan, policy, policy_version, verifier)?;
    teach_and_credit(cfg, scored, teacher, teacher_version, template)
}

/// Generate `G` responses for each of the plan's prompts with `policy` (at
/// `version`) and verify them, timing both stages. A plan without prompts
/// (a data-parallel rank without a share this step, which still joins every
/// collective) gives an empty batch.
pub fn sample_and_verify(
    cfg: &RunConfig,
    plan: StepPlan,
    policy: &LoadedModel,
    version: u64,
    verifier: &dyn Verifier,
) -> Result<ScoredBatch> {
    if plan.examples.is_empty() {
        let empty = RolloutBatch {
            plan,
            policy_version: version,
            rollouts: Vec::new(),
            timings: StageTimings::default(),
        };
        return ScoredBatch::new(empty, Vec::new());
    }
    if cfg.env.enabled() {
        return Err(Error::config(
            "env.kind",
            "multi-turn episodes run in the actor runtime (`rlsd train` on one process), \
             not in the sequential loop or data-parallel ranks",
        ));
    }
    let t = Instant::now();
    let mut rolled = rollout(policy, plan, version, &cfg.rollout)?;
    rolled.timings.generate_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut scored = verify_all(verifier, rolled)?;
    scored.rollout.timings.verify_s = t.elapsed().as_secs_f64();
    Ok(scored)
}

/// The teacher pass (with `teacher`, at `teacher_version`) and the credit
/// of a scored batch, timing both; a batch without responses skips the
/// teacher.
pub fn teach_and_credit(
    cfg: &RunConfig,
    scored: ScoredBatch,
    teacher: &LoadedModel,
    teacher_version: u64,
    template: &TeacherPrompt,
) -> Result<CreditBatch> {
    let t = Instant::now();
    let mut taught = if scored.rollout.rollouts.is_empty() {
        TeacherBatch {
            scored,
            teacher: TeacherScores {
                version: teacher_version,
                ..TeacherScores::default()
            },
        }
    } else {
        teacher_pass(
            teacher,
            teacher_version,
            template,
            scored,
            &cfg.algo,
            cfg.rollout.temperature,
            cfg.optim.max_tokens_per_micro_batch,
        )?
    };
    taught.scored.rollout.timings.teacher_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut credit = assign_credit(taught, cfg.rollout.group_size, &cfg.algo)?;
    credit.taught.scored.rollout.timings.credit_s = t.elapsed().as_secs_f64();
    Ok(credit)
}
