//! Batched generation with a KV cache.
//!
//! Prompts are left-padded to a common length so every row's next token sits
//! in the same column; positions restart at 0 on each row's first real token
//! (`cumsum(mask) - 1`) and padding is masked out, so a row's tokens do not
//! depend on the other rows. Generation stops per row on an EOS id (which is
//! kept, with its log-prob) or after `max_new_tokens`; finished rows leave the
//! batch (their cache rows are dropped) so they cost nothing afterwards.

use super::distinct_rows;
use super::sampling::{sample_next, SamplingParams};
use super::transformer::{positions_from_mask, CausalLm};
use crate::error::{Error, Result};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

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
        }
    }
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Generated token ids (the EOS included when it stopped on one).
    pub tokens: Vec<i64>,
    /// `log_softmax(logits / temperature)` at each generated token, full vocabulary.
    pub logprobs: Vec<f32>,
    /// True when the last token is an EOS id.
    pub stopped_on_eos: bool,
}

/// Generate a continuation of every prompt, all in one batch.
pub fn generate(
    lm: &CausalLm,
    prompts: &[Vec<i64>],
    opts: &GenerateOptions,
    rng: &mut StdRng,
) -> Result<Vec<Generation>> {
    let valid = opts.temperature > 0.0 && opts.top_p > 0.0 && opts.top_p <= 1.0;
    if !valid {
        return Err(Error::InvalidInput(format!(
            "generation needs temperature > 0 and 0 < top_p <= 1, got {} and {}",
            opts.temperature, opts.top_p
        )));
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
    let b = prompts.len();
    let mut out: Vec<Generation> = (0..b)
        .map(|_| Generation {
            tokens: vec![],
            logprobs: vec![],
            stopped_on_eos: false,
        })
        .collect();
    if b == 0 || opts.max_new_tokens == 0 {
        return Ok(out);
    }
    let eos: Vec<i64> = if opts.eos_ids.is_empty() {
        lm.config.eos_token_id.clone()
    } else {
        opts.eos_ids.clone()
    };
    let pad = opts
        .pad_id
        .or(lm.config.pad_token_id)
        .or_else(|| eos.first().copied())
        .unwrap_or(0);
    let params = SamplingParams {
        greedy: opts.greedy,
        temperature: opts.temperature,
        top_k: opts.top_k,
        top_p: opts.top_p,
    };

    tch::no_grad(|| -> Result<()> {
        let device = lm.device();
        let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let padded = prompts.iter().any(|p| p.len() < width);
        // Rows with the same prompt (a group's samples) share one prefill;
        // its cache rows and last logits are then copied out to every row.
        let (uniq, row_of) = distinct_rows(prompts);
        let row_of: Vec<i64> = row_of.into_iter().map(|u| u as i64).collect();
        let mut ids = Vec::with_capacity(uniq.len() * width);
        let mut mask = Vec::with_capacity(uniq.len() * width);
        for p in &uniq {
            let n_pad = width - p.len();
            ids.extend(std::iter::repeat_n(pad, n_pad).chain(p.iter().copied()));
            mask.extend(std::iter::repeat_n(0i64, n_pad).chain(std::iter::repeat_n(1, p.len())));
        }
        let (u_i, w_i) = (uniq.len() as i64, width as i64);
        let ids = Tensor::from_slice(&ids)
            .f_view([u_i, w_i])?
            .f_to_device(device)?;
        let mut mask = Tensor::from_slice(&mask)
            .f_view([u_i, w_i])?
            .f_to_device(device)?;
        let mut positions = positions_from_mask(&mask)?;
        // Sized for the whole run, up to 4096 new positions (it grows beyond).
        let mut cache = lm.new_cache(w_i + (opts.max_new_tokens as i64).min(4096));
        let mut logits = lm.forward(&ids, &positions, padded.then_some(&mask), &mut cache)?;
        if uniq.len() < b {
            let rows = Tensor::from_slice(&row_of).f_to_device(device)?;
            cache.select_rows(&rows)?;
            logits = logits.f_index_select(0, &rows)?;
            mask = mask.f_index_select(0, &rows)?;
            positions = positions.f_index_select(0, &rows)?;
        }
        // [rows, 1]
        let mut pos = positions.f_narrow(1, w_i - 1, 1)?;
        // Batch row -> prompt index; finished rows are dropped from the batch.
        let mut active: Vec<usize> = (0..b).collect();

        for step in 0..opts.max_new_tokens {
            let (next, lp) = sample_next(&logits, &params, rng)?;
            let next_v: Vec<i64> = Vec::try_from(&next.f_to_device(tch::Device::Cpu)?)?;
            let lp_v: Vec<f32> = Vec::try_from(&lp.f_to_device(tch::Device::Cpu)?)?;
            let mut keep = Vec::with_capacity(active.len());
            for (row, &i) in active.iter().enumerate() {
                out[i].tokens.push(next_v[row]);
                out[i].logprobs.push(lp_v[row]);
                if eos.contains(&next_v[row]) {
                    out[i].stopped_on_eos = true;
                } else {
                    keep.push(row as i64);
                }
            }
            if keep.is_empty() || step + 1 == opts.max_new_tokens {
                break;
            }
            let mut step_ids = next.f_view([-1, 1])?;
            if keep.len() < active.len() {
                let rows = Tensor::from_slice(&keep).f_to_device(device)?;
                cache.select_rows(&rows)?;
                step_ids = step_ids.f_index_select(0, &rows)?;
                pos = pos.f_index_select(0, &rows)?;
                if padded {
                    mask = mask.f_index_select(0, &rows)?;
                }
                active = keep.iter().map(|&r| active[r as usize]).collect();
            }
            pos = pos.f_add_scalar(1)?;
            if padded {
                let ones = Tensor::f_ones([active.len() as i64, 1], (Kind::Int64, device))?;
                mask = Tensor::f_cat(&[&mask, &ones], 1)?;
            }
            logits = lm.forward(&step_ids, &pos, padded.then_some(&mask), &mut cache)?;
        }
        Ok(())
    })?;
    Ok(out)
}
