//! Continuous batching over turns that arrive while decoding runs: the
//! multi-turn rollout's decoding loop.
//!
//! A [`TurnSource`] hands over turns (a context to continue and the seed of
//! its random stream) whenever they are ready; each is prefilled into a free
//! row beside the running ones (the context is prefilled again, not
//! continued from an earlier turn's cache rows). A finished turn leaves its
//! row at once and goes back to the source, so a row whose episode waits on
//! its environment holds no slot. Each turn samples from its own stream as
//! in [`super::generate_with`], so a turn's tokens do not depend on which
//! others share its batch: the same turns generated one at a time with the
//! same seeds give the same tokens (log-probs up to float rounding).

use super::continuous::{Decoding, Job};
use super::generate::GenerateOptions;
use super::generation::{Detokenize, Generation, StopCheck};
use super::transformer::CausalLm;
use super::GenerationProfile;
use crate::error::{Error, Result};
use std::collections::VecDeque;

/// One turn to generate: the context it continues and its random stream.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRequest {
    /// The token ids the turn continues (non-empty, in the vocabulary).
    pub context: Vec<i64>,
    /// Seed of its `StdRng` (one uniform per sampled token).
    pub seed: u64,
}

/// Where the turns come from and where they go.
pub trait TurnSource {
    /// Turns ready to start, numbered in the order returned over all calls
    /// (from 0). `wait` is true when nothing is decoding: block until a turn
    /// is ready, or return none to end the loop (every episode is over).
    fn next_turns(&mut self, wait: bool) -> Result<Vec<TurnRequest>>;

    /// Turn `id` finished (EOS, stop string or `max_new_tokens`).
    fn turn_done(&mut self, id: usize, generation: Generation) -> Result<()>;
}

/// Generate every turn `source` hands over, at most `rows` at once, until
/// it has none left; `opts` as in [`super::generate_with`] (`max_new_tokens`
/// per turn; `kv_cache_bytes` is not read: `rows` bounds the batch).
pub fn generate_turns(
    lm: &CausalLm,
    opts: &GenerateOptions,
    decoder: Option<&dyn Detokenize>,
    rows: usize,
    source: &mut dyn TurnSource,
) -> Result<GenerationProfile> {
    if !(opts.temperature > 0.0 && opts.top_p > 0.0 && opts.top_p <= 1.0) {
        return Err(Error::InvalidInput(format!(
            "generation needs temperature > 0 and 0 < top_p <= 1, got {} and {}",
            opts.temperature, opts.top_p
        )));
    }
    if rows == 0 || opts.max_new_tokens == 0 {
        return Err(Error::InvalidInput(format!(
            "multi-turn generation needs at least one row and one new token per turn, \
             got {rows} rows and max_new_tokens = {}",
            opts.max_new_tokens
        )));
    }
    if !opts.stop.is_empty() && decoder.is_none() {
        return Err(Error::InvalidInput(
            "stop strings need a tokenizer to decode responses".into(),
        ));
    }
    let eos = opts.eos_for(lm);
    let pad = opts.pad_for(lm, &eos);
    let stop = decoder.map(|d| StopCheck::new(&opts.stop, d));
    let job = Job {
        prompts: &[],
        seeds: &[],
        params: opts.sampling_params(),
        max_new_tokens: opts.max_new_tokens,
        eos: &eos,
        pad,
        rows,
        capacity: opts.max_new_tokens as i64,
        stop: stop.as_ref().filter(|s| !s.strings.is_empty()),
    };
    tch::no_grad(|| run_turns(lm, &job, source))
}

fn run_turns(
    lm: &CausalLm,
    job: &Job<'_>,
    source: &mut dyn TurnSource,
) -> Result<GenerationProfile> {
    let vocab = lm.config.vocab_size;
    let mut d = Decoding::new(lm, job);
    let mut queue: VecDeque<TurnRequest> = VecDeque::new();
    let mut numbered = 0usize;
    loop {
        let idle = d.running() == 0 && queue.is_empty();
        let fresh = source.next_turns(idle)?;
        if idle && fresh.is_empty() {
            break;
        }
        for t in &fresh {
            check_context(numbered, &t.context, vocab)?;
            numbered += 1;
        }
        queue.extend(fresh);
        let k = job.rows.saturating_sub(d.running()).min(queue.len());
        if k > 0 {
            let (prompts, seeds): (Vec<_>, Vec<_>) =
                queue.drain(..k).map(|t| (t.context, t.seed)).unzip();
            d.admit_now(&prompts, &seeds)?;
        }
        for id in d.step()? {
            source.turn_done(id, d.take(id))?;
        }
    }
    Ok(d.profile().clone())
}

/// A turn's context must be non-empty and inside the vocabulary.
fn check_context(id: usize, context: &[i64], vocab: i64) -> Result<()> {
    if context.is_empty() {
        return Err(Error::InvalidInput(format!("turn {id}: empty context")));
    }
    if let Some(t) = context.iter().find(|&&t| t < 0 || t >= vocab) {
        return Err(Error::InvalidInput(format!(
            "turn {id}: token {t} outside the vocabulary (size {vocab})"
        )));
    }
    Ok(())
}
