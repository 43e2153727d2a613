//! Generation for long, uneven responses: continuous batching under a
//! KV-cache budget, per-prompt random streams, EOS ids and stop strings.
//!
//! At most `R` rows run at once (`R` from [`GenerateOptions::kv_cache_bytes`],
//! else every prompt). When a row finishes, the next pending prompt is
//! prefilled and takes its place at the next step (see [`super::continuous`]),
//! so a few long responses do not leave the batch running nearly empty.
//!
//! **Seeding.** Prompt `i` samples from its own `StdRng` seeded with
//! [`prompt_seed`]`(base, i)`, one uniform per generated token, so its tokens
//! and log-probs do not depend on which other prompts share its batch, when it
//! was admitted, or how many rows run at once: generating the prompts one at a
//! time with the same seeds gives the same result (up to float rounding in
//! batched kernels). [`generate`] draws `base` from the caller's RNG;
//! [`generate_with`] takes the seeds.
//!
//! **Stopping.** A row stops on an EOS id (kept, with its log-prob), on a stop
//! string (the decoded response contains it: the response ends with the token
//! that completed it, and [`Generation::stop_string`] says which), or after
//! `max_new_tokens`.

use super::continuous::run;
pub use super::continuous::GenerationProfile;
use super::generation::StopCheck;
pub use super::generation::{cut_at_stop, Detokenize, Generation};
use super::sampling::SamplingParams;
use super::transformer::CausalLm;
use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Sampling and stopping settings for [`generate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerateOptions {
    /// Most tokens generated per sequence.
    pub max_new_tokens: usize,
    /// Arg-max decoding instead of sampling.
    pub greedy: bool,
    /// Softmax temperature (also used for the returned log-probs).
    pub temperature: f64,
    /// Sample only from the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Sample only from the smallest set reaching probability `top_p` (1.0 = off).
    pub top_p: f64,
    /// Stop tokens; empty means the model config's `eos_token_id`.
    pub eos_ids: Vec<i64>,
    /// Left-padding id; `None` means the config's pad id, else the first EOS, else 0.
    pub pad_id: Option<i64>,
    /// Bytes the KV cache may use; bounds the rows running at once to
    /// `kv_cache_bytes / (2 L K D w (prompt + max_new_tokens))` (see
    /// [`kv_bytes_per_position`]). 0: no bound, every prompt runs at once.
    pub kv_cache_bytes: u64,
    /// Stop strings: a row stops once its decoded response contains one.
    /// Needs a tokenizer ([`generate_with`]).
    pub stop: Vec<String>,
    /// Presence penalty (0 = off; validation decoding, see
    /// [`super::sampling::apply_presence_penalty`]).
    pub presence_penalty: f64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 256,
            greedy: false,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            eos_ids: vec![],
            pad_id: None,
            kv_cache_bytes: 0,
            stop: vec![],
            presence_penalty: 0.0,
        }
    }
}

impl GenerateOptions {
    /// The per-token sampling settings of these options.
    pub fn sampling_params(&self) -> SamplingParams {
        SamplingParams {
            greedy: self.greedy,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            presence_penalty: self.presence_penalty,
        }
    }

    /// The stop tokens: `eos_ids`, else the model config's EOS ids.
    pub fn eos_for(&self, lm: &CausalLm) -> Vec<i64> {
        if self.eos_ids.is_empty() {
            lm.config.eos_token_id.clone()
        } else {
            self.eos_ids.clone()
        }
    }

    /// The left-padding id: `pad_id`, else the model config's pad id, else
    /// the first of `eos`, else 0.
    pub fn pad_for(&self, lm: &CausalLm, eos: &[i64]) -> i64 {
        self.pad_id
            .or(lm.config.pad_token_id)
            .or_else(|| eos.first().copied())
            .unwrap_or(0)
    }
}

/// The seed of prompt `index`'s random stream in a run whose base seed is
/// `base` (e.g. the step's seed): two rounds of SplitMix64, so neighbouring
/// indices and bases give unrelated streams.
pub fn prompt_seed(base: u64, index: u64) -> u64 {
    splitmix64(base ^ splitmix64(index.wrapping_add(0x5851_f42d_4c95_7f2d)))
}

/// `[prompt_seed(base, 0), .., prompt_seed(base, n - 1)]`.
pub fn prompt_seeds(base: u64, n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| prompt_seed(base, i)).collect()
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// KV-cache bytes of one position of one row: `2 (keys, values) x layers x
/// kv_heads x head_dim x` the bytes of the model's dtype.
pub fn kv_bytes_per_position(lm: &CausalLm) -> u64 {
    let c = &lm.config;
    (2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim) as u64
        * lm.kind().elt_size_in_bytes() as u64
}

/// Rows that may run at once: every prompt without a budget, else as many
/// rows of `max_prompt + max_new_tokens` positions as fit in the budget.
/// Errors (naming the key and the numbers) when not even one row fits.
pub fn max_concurrent_rows(
    lm: &CausalLm,
    opts: &GenerateOptions,
    max_prompt: usize,
    prompts: usize,
) -> Result<usize> {
    if opts.kv_cache_bytes == 0 {
        return Ok(prompts.max(1));
    }
    let per_row = kv_bytes_per_position(lm) * (max_prompt + opts.max_new_tokens) as u64;
    let rows = (opts.kv_cache_bytes / per_row.max(1)) as usize;
    if rows == 0 {
        return Err(Error::InvalidInput(format!(
            "kv_cache_bytes = {} is below one row's KV cache: {} bytes ({} prompt + {} new \
             positions x {} bytes per position)",
            opts.kv_cache_bytes,
            per_row,
            max_prompt,
            opts.max_new_tokens,
            kv_bytes_per_position(lm)
        )));
    }
    Ok(rows.min(prompts.max(1)))
}

/// Generate a continuation of every prompt; prompt `i` samples from the
/// stream [`prompt_seed`]`(base, i)` with `base` drawn from `rng`. Stop strings
/// need a tokenizer: use [`generate_with`].
pub fn generate(
    lm: &CausalLm,
    prompts: &[Vec<i64>],
    opts: &GenerateOptions,
    rng: &mut StdRng,
) -> Result<Vec<Generation>> {
    if !opts.stop.is_empty() {
        return Err(Error::InvalidInput(
            "stop strings need a tokenizer to decode responses: call generate_with".into(),
        ));
    }
    let base: u64 = rng.random();
    generate_with(lm, prompts, &prompt_seeds(base, prompts.len()), opts, None)
}

/// Generate a continuation of every prompt, prompt `i` sampling from its own
/// stream `StdRng::seed_from_u64(seeds[i])`; `decoder` turns responses into
/// text for [`GenerateOptions::stop`].
pub fn generate_with(
    lm: &CausalLm,
    prompts: &[Vec<i64>],
    seeds: &[u64],
    opts: &GenerateOptions,
    decoder: Option<&dyn Detokenize>,
) -> Result<Vec<Generation>> {
    Ok(generate_profiled(lm, prompts, seeds, opts, decoder)?.0)
}

/// [`generate_with`], also saying where the time went.
pub fn generate_profiled(
    lm: &CausalLm,
    prompts: &[Vec<i64>],
    seeds: &[u64],
    opts: &GenerateOptions,
    decoder: Option<&dyn Detokenize>,
) -> Result<(Vec<Generation>, GenerationProfile)> {
    let valid = opts.temperature > 0.0 && opts.top_p > 0.0 && opts.top_p <= 1.0;
    if !valid {
        return Err(Error::InvalidInput(format!(
            "generation needs temperature > 0 and 0 < top_p <= 1, got {} and {}",
            opts.temperature, opts.top_p
        )));
    }
    if seeds.len() != prompts.len() {
        return Err(Error::InvalidInput(format!(
            "{} prompts need {} seeds, got {}",
            prompts.len(),
            prompts.len(),
            seeds.len()
        )));
    }
    if let Some(i) = opts.stop.iter().position(String::is_empty) {
        return Err(Error::InvalidInput(format!("stop string {i} is empty")));
    }
    if !opts.stop.is_empty() && decoder.is_none() {
        return Err(Error::InvalidInput(
            "stop strings need a tokenizer to decode responses".into(),
        ));
    }
    let vocab = lm.config.vocab_size;
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(Error::InvalidInput(format!("prompt {i} is empty")));
        }
        if let Some(t) = p.iter().find(|&&t| t < 0 || t >= vocab) {
            return Err(Error::InvalidInput(format!(
                "prompt {i} has token {t} outside the vocabulary (size {vocab})"
            )));
        }
    }
    if prompts.is_empty() || opts.max_new_tokens == 0 {
        let none = prompts
            .iter()
            .map(|_| Generation {
                tokens: vec![],
                logprobs: vec![],
                stopped_on_eos: false,
                stop_string: None,
            })
            .collect();
        return Ok((none, GenerationProfile::default()));
    }
    let eos = opts.eos_for(lm);
    let pad = opts.pad_for(lm, &eos);
    let max_prompt = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let rows = max_concurrent_rows(lm, opts, max_prompt, prompts.len())?;
    let stop = decoder.map(|d| StopCheck::new(&opts.stop, d));
    let job = super::continuous::Job {
        prompts,
        seeds,
        params: opts.sampling_params(),
        max_new_tokens: opts.max_new_tokens,
        eos: &eos,
        pad,
        rows,
        capacity: (max_prompt + opts.max_new_tokens) as i64,
        stop: stop.as_ref().filter(|s| !s.strings.is_empty()),
    };
    tch::no_grad(|| run(lm, &job))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_the_earliest_stop_string() {
        let stop = vec!["</a>".to_string(), "\n\n".to_string()];
        assert_eq!(cut_at_stop("x</a>y\n\nz", &stop), ("x</a>", Some(0)));
        assert_eq!(cut_at_stop("x\n\ny</a>", &stop), ("x\n\n", Some(1)));
        assert_eq!(cut_at_stop("plain", &stop), ("plain", None));
    }

    #[test]
    fn prompt_seeds_differ_by_index_and_base() {
        let a = prompt_seeds(7, 4);
        let mut all = a.clone();
        all.extend(prompt_seeds(8, 4));
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 8);
        assert_eq!(a, prompt_seeds(7, 4));
        assert_eq!(prompt_seed(7, 2), a[2]);
    }

    #[test]
    fn stop_check_reads_only_the_tail() {
        // Token t decodes to the letter 'a' + t.
        let dec =
            |ids: &[i64]| -> String { ids.iter().map(|&t| char::from(b'a' + t as u8)).collect() };
        let strings = vec!["cd".to_string()];
        let check = StopCheck::new(&strings, &dec);
        assert_eq!(check.window, 6);
        assert_eq!(check.hit(&[0, 1, 2]).unwrap(), None);
        assert_eq!(check.hit(&[0, 1, 2, 3]).unwrap(), Some(0));
        // An occurrence older than the window is not seen again.
        let mut long = vec![2, 3];
        long.extend([0; 6]);
        assert_eq!(check.hit(&long).unwrap(), None);
    }
}
