//! `rlsd eval`: accuracy and mean reward of a model on the configured data
//! with the configured verifier.
//!
//! Prompts go through the chat template exactly as in training
//! ([`crate::data::prompt::student_prompt_ids`]). Decoding is greedy by
//! default, so the figures are deterministic for a given model, data and
//! `max_new_tokens`; a temperature above 0 samples instead (seeded), which
//! measures what RL optimises: the reward of the policy's own samples.
//!
//! With `samples = K > 1` (`rlsd eval --samples K`, temperature above 0)
//! every prompt is answered `K` times and the report adds pass@k, by the
//! unbiased estimator of Chen et al. (2021), for k = 1, 2, 4, ... and K, and
//! maj@K (the most frequent extracted answer is the one judged).
//!
//! [`validate`] is the validation the reference runs before training and
//! every few steps (RLSD-SPEC.md, "Reward and prompts"): pass@1 greedy,
//! pass@1 sampled and pass@K on a held-out set, for the run loop to log.

use crate::config::ValidationConfig;
use crate::data::prompt::student_prompt_ids;
use crate::data::Example;
use crate::error::{Error, Result};
use crate::model::{generate_with, prompt_seed, GenerateOptions, LoadedModel};
use crate::pipeline::{tokenizer_of, verify_one};
use crate::stats::ValidationStats;
use crate::verify::Verifier;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::time::Instant;

/// One evaluated prompt.
#[derive(Debug, Clone, Serialize)]
pub struct EvalRecord {
    /// The example's id.
    pub id: String,
    /// The prompt (before the chat template).
    pub prompt: String,
    /// The gold answer.
    pub answer: String,
    /// The response (greedy, or sampled at `temperature`).
    pub response: String,
    /// Verifier reward.
    pub reward: f32,
    /// Verifier verdict.
    pub correct: bool,
    /// The verifier's reason.
    pub reason: String,
    /// Generated tokens.
    pub tokens: usize,
    /// Whether generation ended on an EOS token.
    pub stopped_on_eos: bool,
    /// Which of the prompt's `K` samples this is (0-based).
    pub sample: usize,
}

/// What `rlsd eval` reports (and writes as JSON with `--out`).
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The model folder evaluated.
    pub model: String,
    /// Where the prompts came from.
    pub data: String,
    /// Prompts evaluated.
    pub n: usize,
    /// Sampling temperature; 0 means greedy decoding.
    pub temperature: f64,
    /// Responses per prompt (`K`).
    pub samples: usize,
    /// Fraction of all responses judged correct, in `[0, 1]` (pass@1 when `K > 1`).
    pub accuracy: f64,
    /// `(k, pass@k)` for k = 1, 2, 4, ... up to `K`, and `K` itself (unbiased
    /// estimator, averaged over prompts).
    pub pass_at_k: Vec<(usize, f64)>,
    /// maj@K: the share of prompts whose most frequent extracted answer is correct.
    pub maj_at_k: f64,
    /// Mean verifier reward.
    pub reward_mean: f64,
    /// Mean generated tokens per response.
    pub response_len_mean: f64,
    /// Fraction of responses that ended on an EOS token (the rest hit `max_new_tokens`).
    pub stopped_on_eos_frac: f64,
    /// Wall-clock seconds of generation and verification.
    pub wall_s: f64,
    /// Every prompt's response and verdict.
    pub records: Vec<EvalRecord>,
}

/// A progress bar on stderr for `n` prompts (hidden when stderr is not a terminal).
pub fn progress_bar(n: usize) -> ProgressBar {
    let bar = ProgressBar::new(n as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} eval [{bar:30}] {pos}/{len} prompts, {per_sec}, eta {eta} {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// How `rlsd eval` decodes.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// Most new tokens per response.
    pub max_new_tokens: usize,
    /// Prompts generated together.
    pub batch_size: usize,
    /// 0 decodes greedily; above 0 samples at this temperature.
    pub temperature: f64,
    /// Seed of the sampler (unused when greedy).
    pub seed: u64,
    /// Responses per prompt (`K`, at least 1; above 1 needs a temperature above 0).
    pub samples: usize,
    /// Top-k / top-p truncation and presence penalty of sampled decoding.
    pub filters: SamplingFilters,
}

/// The truncation and penalty of sampled validation decoding (off by default:
/// top-k 0, top-p 1.0, presence penalty 0). The reference validates at
/// temperature 0.7 with top-p 0.8, top-k 20, presence penalty 1.5 and one
/// sample (iie-ycx/RLSD `examples/visual_rl/rlsd_config.yaml` 99-104,
/// `val_override_config`); `configs/paper.toml` sets those.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingFilters {
    /// Sample only from the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Sample only from the smallest set reaching probability `top_p` (1.0 = off).
    pub top_p: f64,
    /// Subtract this from the logit of every token already generated (0 = off).
    pub presence_penalty: f64,
}

impl Default for SamplingFilters {
    fn default() -> Self {
        SamplingFilters {
            top_k: 0,
            top_p: 1.0,
            presence_penalty: 0.0,
        }
    }
}

/// The unbiased pass@k estimator for one prompt with `n` samples of which `c`
/// are correct: `1 - C(n - c, k) / C(n, k)`, computed as
/// `1 - prod_{i = n - c + 1}^{n} (1 - k / i)` (no large binomials). `k > n`
/// is clamped to `n`; `n = 0` gives 0.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    let c = c.min(n);
    let k = k.min(n);
    if n == 0 || k == 0 || c == 0 {
        return 0.0;
    }
    if n - c < k {
        return 1.0;
    }
    let mut miss = 1.0;
    for i in (n - c + 1)..=n {
        miss *= 1.0 - k as f64 / i as f64;
    }
    1.0 - miss
}

/// The ks pass@k is reported for: 1, 2, 4, ... below `big_k`, and `big_k`.
pub fn pass_ks(big_k: usize) -> Vec<usize> {
    let mut ks: Vec<usize> = std::iter::successors(Some(1usize), |k| k.checked_mul(2))
        .take_while(|&k| k < big_k)
        .collect();
    ks.push(big_k.max(1));
    ks
}

/// Majority vote over one prompt's samples: `(answer, correct)` pairs, the
/// answer as extracted (`None`: no answer, never voted for). The most frequent
/// answer (compared after removing whitespace) wins, the first seen on ties;
/// the vote is correct when that answer's first sample was judged correct.
pub fn majority_correct(samples: &[(Option<String>, bool)]) -> bool {
    let mut counts: Vec<(String, usize, bool)> = Vec::new();
    for (answer, correct) in samples {
        let Some(a) = answer else { continue };
        let key: String = a.chars().filter(|c| !c.is_whitespace()).collect();
        match counts.iter_mut().find(|(k, _, _)| *k == key) {
            Some(entry) => entry.1 += 1,
            None => counts.push((key, 1, *correct)),
        }
    }
    let mut best: Option<&(String, usize, bool)> = None;
    for e in &counts {
        if best.is_none_or(|b| e.1 > b.1) {
            best = Some(e);
        }
    }
    best.is_some_and(|b| b.2)
}

/// The answer a response gives, for the majority vote: the strict one
/// (`<answer>` / `\boxed{}`), else what the lenient extractor finds.
fn voted_answer(response: &str) -> Option<String> {
    crate::verify::extract_strict_answer(response)
        .or_else(|| crate::verify::extract_final_answer(response))
}

/// Decode one response per example in batches of `opts.batch_size` and
/// verify it. `progress`, when given, advances by one per prompt and shows the
/// running accuracy.
pub fn evaluate(
    model: &LoadedModel,
    examples: &[Example],
    verifier: &dyn Verifier,
    opts: &EvalOptions,
    progress: Option<&ProgressBar>,
) -> Result<EvalReport> {
    check_options(opts, examples)?;
    let started = Instant::now();
    let tok = tokenizer_of(model)?;
    let greedy = opts.temperature == 0.0;
    let gen = GenerateOptions {
        max_new_tokens: opts.max_new_tokens,
        greedy,
        temperature: if greedy { 1.0 } else { opts.temperature },
        top_k: opts.filters.top_k,
        top_p: opts.filters.top_p,
        presence_penalty: if greedy {
            0.0
        } else {
            opts.filters.presence_penalty
        },
        eos_ids: tok.eos_ids().to_vec(),
        pad_id: tok.pad_id(),
        ..GenerateOptions::default()
    };
    let samples = opts.samples;
    let mut records = Vec::with_capacity(examples.len() * samples);
    // Each prompt `samples` times in a row, so a prompt's samples share a
    // prefill; each response's random stream comes from its (prompt index,
    // sample index), never from its place in a batch, so the report is the
    // same at any batch size (greedy decoding draws nothing).
    let jobs: Vec<(&Example, usize, u64)> = examples
        .iter()
        .enumerate()
        .flat_map(|(i, ex)| (0..samples).map(move |k| (ex, k, response_seed(opts.seed, i, k))))
        .collect();
    for chunk in jobs.chunks(opts.batch_size) {
        let prompts = chunk
            .iter()
            .map(|(ex, _, _)| student_prompt_ids(tok, ex))
            .collect::<Result<Vec<_>>>()?;
        let seeds: Vec<u64> = chunk.iter().map(|&(_, _, seed)| seed).collect();
        let gens = tch::no_grad(|| generate_with(&model.lm, &prompts, &seeds, &gen, None))?;
        for (&(ex, sample, _), g) in chunk.iter().zip(gens) {
            let response = tok.decode(&g.tokens, true)?;
            let v = verify_one(verifier, ex, &response);
            records.push(EvalRecord {
                id: ex.id.clone(),
                prompt: ex.prompt.clone(),
                answer: ex.answer.clone(),
                response,
                reward: v.reward,
                correct: v.correct,
                reason: v.reason,
                tokens: g.tokens.len(),
                stopped_on_eos: g.stopped_on_eos,
                sample,
            });
        }
        if let Some(bar) = progress {
            let correct = records.iter().filter(|r| r.correct).count();
            bar.inc(chunk.iter().filter(|(_, k, _)| *k + 1 == samples).count() as u64);
            bar.set_message(format!("acc {:.3}", correct as f64 / records.len() as f64));
        }
    }
    let mut report = summarize(records, examples.len(), opts);
    report.wall_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The seed of sample `sample` of prompt `prompt` in an evaluation seeded
/// with `seed`: a pure function of the three, so batching cannot change it.
fn response_seed(seed: u64, prompt: usize, sample: usize) -> u64 {
    prompt_seed(prompt_seed(seed, prompt as u64), sample as u64)
}

/// The options `rlsd eval` and validation decode with must make sense for
/// `examples`.
fn check_options(opts: &EvalOptions, examples: &[Example]) -> Result<()> {
    let (samples, temperature) = (opts.samples, opts.temperature);
    if samples == 0 {
        return Err(Error::InvalidInput(
            "eval needs --samples of at least 1".into(),
        ));
    }
    if samples > 1 && temperature == 0.0 {
        return Err(Error::InvalidInput(
            "--samples above 1 needs --temperature above 0 (greedy decoding repeats itself)".into(),
        ));
    }
    if examples.is_empty() {
        return Err(Error::InvalidInput("eval needs at least one prompt".into()));
    }
    if opts.batch_size == 0 || opts.max_new_tokens == 0 {
        return Err(Error::InvalidInput(
            "eval needs a batch size and max_new_tokens of at least 1".into(),
        ));
    }
    if !(temperature >= 0.0 && temperature.is_finite()) {
        return Err(Error::InvalidInput(format!(
            "eval temperature must be 0 (greedy) or positive, got {temperature}"
        )));
    }
    Ok(())
}

/// The report of `n` prompts' records (each prompt's `opts.samples` in a
/// row): accuracy, pass@k, maj@K, means; `wall_s` left 0.
fn summarize(records: Vec<EvalRecord>, n: usize, opts: &EvalOptions) -> EvalReport {
    let nf = records.len() as f64;
    let per_prompt: Vec<&[EvalRecord]> = records.chunks(opts.samples).collect();
    let pass = pass_ks(opts.samples)
        .into_iter()
        .map(|k| {
            let mean = per_prompt
                .iter()
                .map(|rs| pass_at_k(rs.len(), rs.iter().filter(|r| r.correct).count(), k))
                .sum::<f64>()
                / per_prompt.len() as f64;
            (k, mean)
        })
        .collect();
    let maj = per_prompt
        .iter()
        .filter(|rs| {
            let votes: Vec<(Option<String>, bool)> = rs
                .iter()
                .map(|r| (voted_answer(&r.response), r.correct))
                .collect();
            majority_correct(&votes)
        })
        .count() as f64
        / per_prompt.len() as f64;
    let mean = |f: &dyn Fn(&EvalRecord) -> f64| records.iter().map(f).sum::<f64>() / nf;
    EvalReport {
        model: String::new(),
        data: String::new(),
        n,
        temperature: opts.temperature,
        samples: opts.samples,
        accuracy: mean(&|r| f64::from(u8::from(r.correct))),
        pass_at_k: pass,
        maj_at_k: maj,
        reward_mean: mean(&|r| f64::from(r.reward)),
        response_len_mean: mean(&|r| r.tokens as f64),
        stopped_on_eos_frac: mean(&|r| f64::from(u8::from(r.stopped_on_eos))),
        wall_s: 0.0,
        records,
    }
}

/// The held-out prompts of a run (see [`crate::config::ValidationConfig::path`]): the first
/// `num_prompts` of the validation file, or built-in task problems that do
/// not occur in the training set.
pub fn held_out_examples(cfg: &crate::config::RunConfig) -> Result<Vec<Example>> {
    let v = &cfg.validation;
    match (&v.path, &cfg.data.path) {
        (Some(path), _) => {
            let data = crate::data::Dataset::from_config(&crate::data::DataConfig {
                path: Some(path.clone()),
                shuffle: false,
                ..cfg.data.clone()
            })?;
            Ok(data
                .examples()
                .iter()
                .take(v.num_prompts)
                .cloned()
                .collect())
        }
        (None, Some(_)) => Err(Error::config(
            "validation.path",
            "validation with a training dataset needs a held-out file",
        )),
        (None, None) => {
            let task = crate::data::task::ArithmeticTask::new(cfg.data.task.clone())?;
            let train: std::collections::HashSet<String> = task
                .examples(cfg.data.task.num_examples, cfg.data.task.seed)
                .into_iter()
                .map(|e| e.prompt)
                .collect();
            let mut out = Vec::with_capacity(v.num_prompts);
            let mut seen = std::collections::HashSet::new();
            // Draw until enough unseen problems (bounded: a tiny problem space
            // ends it); text prompts tell problems apart, pictures are drawn
            // for the kept ones (`data.task.image`).
            let n = v.num_prompts * 20;
            for (p, e) in task
                .problems(n, v.seed)
                .iter()
                .zip(task.examples(n, v.seed))
            {
                if out.len() == v.num_prompts {
                    break;
                }
                if !train.contains(&e.prompt) && seen.insert(e.prompt.clone()) {
                    out.push(task.image_example(p, e)?);
                }
            }
            if out.is_empty() {
                return Err(Error::config(
                    "validation.seed",
                    "the built-in task has no problem outside the training set",
                ));
            }
            Ok(out)
        }
    }
}

/// Whether the run validates after `step` (0 = before step 1).
pub fn validates_at(cfg: &ValidationConfig, step: u64) -> bool {
    cfg.every > 0 && step % cfg.every == 0
}

/// The validation a run does after `step` (0 = before step 1) on the
/// held-out prompts the caller holds ([`held_out_examples`], read once by the
/// sequential loop and by the actor runtime for its optimizer): [`validate`]
/// with `cfg.validation`; empty when the run does not validate after `step`
/// or `held_out` is empty.
pub fn validation_on(
    cfg: &crate::config::RunConfig,
    model: &LoadedModel,
    held_out: &[Example],
    verifier: &dyn Verifier,
    step: u64,
) -> Result<Vec<ValidationStats>> {
    if !validates_at(&cfg.validation, step) || held_out.is_empty() {
        return Ok(Vec::new());
    }
    let teacher = crate::data::prompt::TeacherPrompt::for_data(&cfg.data)?;
    let mut v = validate(
        model,
        held_out,
        verifier,
        &cfg.validation,
        cfg.rollout.max_new_tokens,
        cfg.rollout.batch_prompts * cfg.rollout.group_size,
        Some(&teacher),
    )?;

    v.after_step = step;
    Ok(vec![v])
}

/// Validate `model` on `examples`: one greedy pass and one of `cfg.samples`
/// samples per prompt (see [`evaluate`]); with `teacher` (the run's teacher
/// prompt) and `cfg.leakage_ngram > 0`, the leakage of the sampled
/// responses ([`held_out_leakage`]).
pub fn validate(
    model: &LoadedModel,
    examples: &[Example],
    verifier: &dyn Verifier,
    cfg: &ValidationConfig,
    default_max_new_tokens: usize,
    batch_size: usize,
    teacher: Option<&crate::data::prompt::TeacherPrompt>,
) -> Result<ValidationStats> {
    let started = Instant::now();
    let max_new_tokens = match cfg.max_new_tokens {
        0 => default_max_new_tokens,
        m => m,
    };
    let base = EvalOptions {
        max_new_tokens,
        batch_size: batch_size.max(1),
        temperature: 0.0,
        seed: cfg.seed,
        samples: 1,
        filters: SamplingFilters::default(),
    };
    let greedy = evaluate(model, examples, verifier, &base, None)?;
    let sampled = evaluate(
        model,
        examples,
        verifier,
        &EvalOptions {
            temperature: cfg.temperature,
            samples: cfg.samples.max(1),
            filters: SamplingFilters {
                top_k: cfg.top_k,
                top_p: cfg.top_p,
                presence_penalty: cfg.presence_penalty,
            },
            ..base
        },
        None,
    )?;
    let leak = match teacher {
        Some(t) if cfg.leakage_ngram > 0 => {
            held_out_leakage(model, examples, &sampled.records, t, cfg.leakage_ngram)?
        }
        _ => crate::pipeline::leakage_probe::LeakageRates::default(),
    };
    Ok(ValidationStats {
        leakage_span: leak.span,
        leakage_cue: leak.cue,
        after_step: 0,
        n: examples.len(),
        samples: sampled.samples,
        pass1_greedy: greedy.accuracy,
        pass1_sampled: sampled.accuracy,
        pass_at_k: sampled.pass_at_k.last().map_or(0.0, |p| p.1),
        maj_at_k: sampled.maj_at_k,
        reward_mean: sampled.reward_mean,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// The `n`-grams of `ex`'s teacher message (`teacher`'s rendering) that its
/// student prompt and its answer lines do not hold (`pipeline::leakage_probe`).
pub fn privileged_spans(
    tok: &crate::model::Tokenizer,
    ex: &Example,
    teacher: &crate::data::prompt::TeacherPrompt,
    n: usize,
) -> Result<crate::pipeline::leakage_probe::PrivilegedSpans> {
    use crate::pipeline::leakage_probe::{answer_lines, PrivilegedSpans};
    let excluded = answer_lines(&ex.answer)
        .iter()
        .map(|a| tok.encode(a, false))
        .collect::<Result<Vec<_>>>()?;
    Ok(PrivilegedSpans::new(
        &tok.encode(&teacher.render(ex), false)?,
        &tok.encode(&ex.prompt, false)?,
        &excluded,
        n,
    ))
}

/// The leakage of validation responses (`pipeline::leakage_probe`): for each
/// example, the `n`-grams of its teacher message (`teacher`, the privileged
/// text in it) that are in neither its student message nor its answer line;
/// `records` are [`evaluate`]'s, the samples of each example in a row.
pub fn held_out_leakage(
    model: &LoadedModel,
    examples: &[Example],
    records: &[EvalRecord],
    teacher: &crate::data::prompt::TeacherPrompt,
    n: usize,
) -> Result<crate::pipeline::leakage_probe::LeakageRates> {
    use crate::pipeline::leakage_probe::{leakage_rates, PrivilegedSpans};
    let tok = tokenizer_of(model)?;
    let mut spans = std::collections::HashMap::new();
    for ex in examples {
        spans.insert(ex.id.clone(), privileged_spans(tok, ex, teacher, n)?);
    }
    let ids = records
        .iter()
        .map(|r| tok.encode(&r.response, false))
        .collect::<Result<Vec<_>>>()?;
    let empty = PrivilegedSpans::default();
    Ok(leakage_rates(records.iter().zip(&ids).map(|(r, ids)| {
        (
            spans.get(&r.id).unwrap_or(&empty),
            ids.as_slice(),
            r.response.as_str(),
        )
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The estimator's definition, by enumeration: over every k-subset of n
    /// samples with the first c correct, the share holding a correct one.
    fn pass_by_enumeration(n: usize, c: usize, k: usize) -> f64 {
        let (mut hit, mut all) = (0u64, 0u64);
        for mask in 0u32..(1 << n) {
            if mask.count_ones() as usize != k {
                continue;
            }
            all += 1;
            hit += u64::from(mask & ((1u32 << c) - 1) != 0);
        }
        hit as f64 / all as f64
    }

    #[test]
    fn pass_at_k_is_the_unbiased_estimator() {
        for n in 1..=8 {
            for c in 0..=n {
                for k in 1..=n {
                    let want = pass_by_enumeration(n, c, k);
                    let got = pass_at_k(n, c, k);
                    assert!(
                        (got - want).abs() < 1e-12,
                        "n {n} c {c} k {k}: {got} vs {want}"
                    );
                }
            }
        }
        // Hand values: n=4, c=1: pass@1 = 1/4, pass@2 = 1 - C(3,2)/C(4,2) = 1/2.
        assert_eq!(pass_at_k(4, 1, 1), 0.25);
        assert!((pass_at_k(4, 1, 2) - 0.5).abs() < 1e-12);
        assert_eq!(pass_at_k(0, 0, 1), 0.0);
        assert_eq!(pass_ks(8), vec![1, 2, 4, 8]);
        assert_eq!(pass_ks(6), vec![1, 2, 4, 6]);
        assert_eq!(pass_ks(1), vec![1]);
    }

    #[test]
    fn majority_vote_judges_the_most_frequent_answer() {
        let v = |a: &str, ok: bool| (Some(a.to_string()), ok);
        assert!(majority_correct(&[
            v("4", true),
            v("5", false),
            v(" 4", true)
        ]));
        assert!(!majority_correct(&[
            v("5", false),
            v("4", true),
            v("5", false)
        ]));
        // Ties: the first seen wins; unanswered samples do not vote.
        assert!(!majority_correct(&[v("5", false), v("4", true)]));
        assert!(majority_correct(&[
            (None, false),
            (None, false),
            v("4", true)
        ]));
        assert!(!majority_correct(&[(None, false)]));
    }
}
