//! `rlsd eval`: accuracy and mean reward of a model on the configured data
//! with the configured verifier.
//!
//! Prompts go through the chat template exactly as in training
//! ([`crate::data::prompt::student_prompt_ids`]). Decoding is greedy by
//! default, so the figures are deterministic for a given model, data and
//! `max_new_tokens`; a temperature above 0 samples instead (seeded), which
//! measures what RL optimises: the reward of the policy's own samples.

use crate::actors::stages::{tokenizer_of, verify_one};
use crate::data::prompt::student_prompt_ids;
use crate::data::Example;
use crate::error::{Error, Result};
use crate::model::{generate, GenerateOptions, LoadedModel};
use crate::verify::Verifier;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
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
    /// Fraction judged correct, in `[0, 1]`.
    pub accuracy: f64,
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
    let EvalOptions {
        max_new_tokens,
        batch_size,
        temperature,
        seed,
    } = *opts;
    if examples.is_empty() {
        return Err(Error::InvalidInput("eval needs at least one prompt".into()));
    }
    if batch_size == 0 || max_new_tokens == 0 {
        return Err(Error::InvalidInput(
            "eval needs a batch size and max_new_tokens of at least 1".into(),
        ));
    }
    if !(temperature >= 0.0 && temperature.is_finite()) {
        return Err(Error::InvalidInput(format!(
            "eval temperature must be 0 (greedy) or positive, got {temperature}"
        )));
    }
    let greedy = temperature == 0.0;
    let started = Instant::now();
    let tok = tokenizer_of(model)?;
    let opts = GenerateOptions {
        max_new_tokens,
        greedy,
        temperature: if greedy { 1.0 } else { temperature },
        eos_ids: tok.eos_ids().to_vec(),
        pad_id: tok.pad_id(),
        ..GenerateOptions::default()
    };
    // Greedy decoding never draws from the RNG.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut records = Vec::with_capacity(examples.len());
    let mut eos = 0usize;
    let mut correct = 0usize;
    for chunk in examples.chunks(batch_size) {
        let prompts = chunk
            .iter()
            .map(|ex| student_prompt_ids(tok, ex))
            .collect::<Result<Vec<_>>>()?;
        let gens = tch::no_grad(|| generate(&model.lm, &prompts, &opts, &mut rng))?;
        for (ex, g) in chunk.iter().zip(gens) {
            let response = tok.decode(&g.tokens, true)?;
            let v = verify_one(verifier, ex, &response);
            eos += usize::from(g.stopped_on_eos);
            correct += usize::from(v.correct);
            records.push(EvalRecord {
                id: ex.id.clone(),
                prompt: ex.prompt.clone(),
                answer: ex.answer.clone(),
                response,
                reward: v.reward,
                correct: v.correct,
                reason: v.reason,
                tokens: g.tokens.len(),
            });
        }
        if let Some(bar) = progress {
            bar.inc(chunk.len() as u64);
            bar.set_message(format!("acc {:.3}", correct as f64 / records.len() as f64));
        }
    }
    let n = records.len();
    let nf = n as f64;
    Ok(EvalReport {
        model: String::new(),
        data: String::new(),
        n,
        temperature,
        accuracy: correct as f64 / nf,
        reward_mean: records.iter().map(|r| f64::from(r.reward)).sum::<f64>() / nf,
        response_len_mean: records.iter().map(|r| r.tokens as f64).sum::<f64>() / nf,
        stopped_on_eos_frac: eos as f64 / nf,
        wall_s: started.elapsed().as_secs_f64(),
        records,
    })
}
