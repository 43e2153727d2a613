//! Log-probabilities of given responses under the model: the quantity GRPO,
//! RLSD and the teacher all need.
//!
//! One forward over `prompt + response` (right-padded, so causal attention
//! needs no mask): the token at response position `j` is predicted by the
//! logits at `prompt_len - 1 + j`. Log-probs use `log_softmax(logits / T)`
//! over the full vocabulary; the entropy is that distribution's.
//!
//! Without gradients, responses that share a prompt (a group under the
//! teacher's context) can run the prompt once and attend to its cached keys
//! and values: [`shared_prompt_logprobs`], [`token_logprobs_by_prompt`].

use super::chunked::{backward_scores, chunk_tokens, chunked_scores, Layout};
use super::transformer::CausalLm;
use super::{distinct_rows, LoadedModel};
use crate::error::{Error, Result};
use crate::optim::DEFAULT_MAX_TOKENS_PER_MICRO_BATCH;
use crate::policy::{Policy, PromptResponse, ResponseScores, ScoreOptions, VocabLoss};
use tch::{nn, Kind, Tensor};

/// Scores of every response token, right-padded to `[B, L]` (L = longest
/// response), with gradients when grad mode is on. Only the positions that
/// predict response tokens go through the head, [`chunk_tokens`] rows at a
/// time; without gradients at most one chunk's logits exist at once.
pub fn score_responses(
    lm: &CausalLm,
    batch: &[PromptResponse],
    temperature: f64,
) -> Result<ResponseScores> {
    check_batch(lm, batch, temperature)?;
    let layout = Layout::new(batch, lm.device())?;
    let chunk = chunk_tokens(lm.config.vocab_size, 0);
    let (lp, ent) = if layout.n == 0 {
        let z = Tensor::f_zeros([0], (Kind::Float, lm.device()))?;
        (z.f_zeros_like()?, Some(z))
    } else {
        let h = layout.pick(&lm.trunk_forward(&layout.input, false)?.hidden)?;
        chunked_scores(lm, &h, &layout.targets, temperature, chunk, true)?
    };
    let ent = ent.ok_or_else(|| Error::InvalidInput("entropy missing".into()))?;
    Ok(ResponseScores {
        logprobs: layout.pad(&lp)?,
        entropy: layout.pad(&ent)?,
        mask: layout.mask,
    })
}

/// Temperature and every sequence of `batch` checked.
fn check_batch(lm: &CausalLm, batch: &[PromptResponse], temperature: f64) -> Result<()> {
    check_temperature(temperature)?;
    for (i, pr) in batch.iter().enumerate() {
        check_sequence(lm, i, &pr.prompt, &pr.response)?;
    }
    Ok(())
}

fn check_pairs(prompts: &[Vec<i64>], responses: &[Vec<i64>]) -> Result<()> {
    if prompts.len() != responses.len() {
        return Err(Error::InvalidInput(format!(
            "{} prompts but {} responses",
            prompts.len(),
            responses.len()
        )));
    }
    Ok(())
}

fn check_temperature(temperature: f64) -> Result<()> {
    if temperature.is_nan() || temperature <= 0.0 {
        return Err(Error::InvalidInput(format!(
            "temperature must be > 0, got {temperature}"
        )));
    }
    Ok(())
}

/// A non-empty prompt, and every token inside the vocabulary.
fn check_sequence(lm: &CausalLm, i: usize, prompt: &[i64], response: &[i64]) -> Result<()> {
    let vocab = lm.config.vocab_size;
    if prompt.is_empty() {
        return Err(Error::InvalidInput(format!("prompt {i} is empty")));
    }
    if let Some(t) = prompt
        .iter()
        .chain(response)
        .find(|&&t| t < 0 || t >= vocab)
    {
        return Err(Error::InvalidInput(format!(
            "sequence {i} has token {t} outside the vocabulary (size {vocab})"
        )));
    }
    Ok(())
}

/// [`token_logprobs`] for responses that all follow the same prompt (a
/// group's samples under the teacher's context): the prompt runs once, its
/// keys and values are shared by every response, and only response tokens
/// are computed per row. Costs `P + G * R` token-forwards instead of
/// `G * (P + R)`. No gradients.
pub fn shared_prompt_logprobs(
    lm: &CausalLm,
    prompt: &[i64],
    responses: &[Vec<i64>],
    temperature: f64,
) -> Result<Vec<Vec<f32>>> {
    check_temperature(temperature)?;
    for (i, r) in responses.iter().enumerate() {
        check_sequence(lm, i, prompt, r)?;
    }
    let l = responses.iter().map(Vec::len).max().unwrap_or(0);
    if l == 0 {
        return Ok(responses.iter().map(|_| Vec::new()).collect());
    }
    tch::no_grad(|| -> Result<Vec<Vec<f32>>> {
        let device = lm.device();
        let (g, p, l_i) = (responses.len() as i64, prompt.len() as i64, l as i64);
        let mut cache = lm.new_cache(p + l_i);
        let ids = Tensor::from_slice(prompt)
            .f_view([1, p])?
            .f_to_device(device)?;
        let pos = Tensor::f_arange(p, (Kind::Int64, device))?.f_view([1, p])?;
        let prompt_hidden = lm.forward_hidden(&ids, &pos, &mut cache)?; // [1, P, H]
        let width = prompt_hidden.size()[2];
        // The last prompt position predicts every response's first token.
        let mut hidden = prompt_hidden
            .f_narrow(1, p - 1, 1)?
            .f_expand([g, 1, width], false)?;
        if l > 1 {
            // Response tokens 0..L-1 as inputs (right-padded; a row's padding
            // comes after its tokens, so causal attention never reads it).
            cache.select_rows(&Tensor::f_zeros([g], (Kind::Int64, device))?)?;
            let mut inputs = vec![0i64; responses.len() * (l - 1)];
            for (r, resp) in responses.iter().enumerate() {
                let n = resp.len().saturating_sub(1);
                inputs[r * (l - 1)..r * (l - 1) + n].copy_from_slice(&resp[..n]);
            }
            let ids = Tensor::from_slice(&inputs)
                .f_view([g, l_i - 1])?
                .f_to_device(device)?;
            let pos = Tensor::f_arange_start(p, p + l_i - 1, (Kind::Int64, device))?
                .f_view([1, l_i - 1])?
                .f_expand([g, l_i - 1], true)?;
            let rest = lm.forward_hidden(&ids, &pos, &mut cache)?; // [G, L-1, H]
            hidden = Tensor::f_cat(&[&hidden, &rest], 1)?;
        }
        // Only real response tokens go through the head, a chunk at a time.
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        for (r, resp) in responses.iter().enumerate() {
            for (j, &t) in resp.iter().enumerate() {
                rows.push((r * l + j) as i64);
                targets.push(t);
            }
        }
        let rows = Tensor::from_slice(&rows).f_to_device(device)?;
        let targets = Tensor::from_slice(&targets).f_to_device(device)?;
        let h = hidden.f_reshape([-1, width])?.f_index_select(0, &rows)?;
        let chunk = chunk_tokens(lm.config.vocab_size, 0);
        let (lp, _) = chunked_scores(lm, &h, &targets, temperature, chunk, false)?;
        let lp: Vec<f32> = Vec::try_from(&lp.f_to_device(tch::Device::Cpu)?)?;
        let mut at = 0;
        Ok(responses
            .iter()
            .map(|r| {
                at += r.len();
                lp[at - r.len()..at].to_vec()
            })
            .collect())
    })
}

/// Log-prob of every response token given its prompt, without gradients:
/// `out[i][j] = log_softmax(logits / temperature)[responses[i][j]]`.
pub fn token_logprobs(
    lm: &CausalLm,
    prompts: &[Vec<i64>],
    responses: &[Vec<i64>],
    temperature: f64,
) -> Result<Vec<Vec<f32>>> {
    check_pairs(prompts, responses)?;
    let batch: Vec<PromptResponse> = prompts
        .iter()
        .zip(responses)
        .map(|(p, r)| PromptResponse {
            image_key: 0,
            prompt: p.clone(),
            response: r.clone(),
        })
        .collect();
    let scores = tch::no_grad(|| score_responses(lm, &batch, temperature))?;
    let lp = scores.logprobs.f_to_device(tch::Device::Cpu)?;
    let l = lp.size()[1] as usize;
    let flat: Vec<f32> = Vec::try_from(&lp.f_contiguous()?.f_view([-1])?)?;
    Ok(unpad_rows(&flat, l, responses))
}

/// Row `i` of a row-major `[B, l]` buffer, cut to `responses[i]`'s length.
fn unpad_rows(flat: &[f32], l: usize, responses: &[Vec<i64>]) -> Vec<Vec<f32>> {
    responses
        .iter()
        .enumerate()
        .map(|(i, r)| flat[i * l..i * l + r.len()].to_vec())
        .collect()
}

/// [`token_logprobs`] with the same contract, for batches where many
/// responses share a prompt (a group's samples): each distinct prompt runs
/// once through [`shared_prompt_logprobs`]. The teacher pass uses this,
/// with the default token budget per forward
/// ([`DEFAULT_MAX_TOKENS_PER_MICRO_BATCH`]).
pub fn token_logprobs_by_prompt(
    lm: &CausalLm,
    prompts: &[Vec<i64>],
    responses: &[Vec<i64>],
    temperature: f64,
) -> Result<Vec<Vec<f32>>> {
    token_logprobs_by_prompt_within(
        lm,
        prompts,
        responses,
        temperature,
        DEFAULT_MAX_TOKENS_PER_MICRO_BATCH,
    )
}

/// [`token_logprobs_by_prompt`] with at most about `max_tokens` padded
/// positions per forward (`optim.max_tokens_per_micro_batch`; 0 = no limit):
/// a group whose `prompt + G x longest response` exceeds it is split into
/// sub-groups that each run the prompt again. A single response longer than
/// the budget still runs (alone).
pub fn token_logprobs_by_prompt_within(
    lm: &CausalLm,
    prompts: &[Vec<i64>],
    responses: &[Vec<i64>],
    temperature: f64,
    max_tokens: usize,
) -> Result<Vec<Vec<f32>>> {
    check_pairs(prompts, responses)?;
    let (distinct, row_of) = distinct_rows(prompts);
    let mut out = vec![Vec::new(); responses.len()];
    for (u, prompt) in distinct.into_iter().enumerate() {
        let idx: Vec<usize> = (0..responses.len()).filter(|&i| row_of[i] == u).collect();
        for part in budget_parts(&idx, |i| responses[i].len(), prompt.len(), max_tokens) {
            let group: Vec<Vec<i64>> = part.iter().map(|&i| responses[i].clone()).collect();
            for (&i, lp) in
                part.iter()
                    .zip(shared_prompt_logprobs(lm, prompt, &group, temperature)?)
            {
                out[i] = lp;
            }
        }
    }
    Ok(out)
}

/// Split `idx` (in order) into runs whose `prompt_len + rows x longest`
/// stays within `max_tokens` (0 = one run); every run has at least one row.
fn budget_parts(
    idx: &[usize],
    len: impl Fn(usize) -> usize,
    prompt_len: usize,
    max_tokens: usize,
) -> Vec<Vec<usize>> {
    let mut parts: Vec<Vec<usize>> = Vec::new();
    let mut longest = 0;
    for &i in idx {
        let grown = longest.max(len(i));
        let fits = |rows: usize| max_tokens == 0 || prompt_len + rows * grown <= max_tokens;
        match parts.last_mut() {
            Some(p) if fits(p.len() + 1) => {
                p.push(i);
                longest = grown;
            }
            _ => {
                parts.push(vec![i]);
                longest = len(i);
            }
        }
    }
    parts
}

impl Policy for LoadedModel {
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn set_train_key(&self, key: Option<u64>) {
        self.dropout_key.set(key);
    }

    fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    fn response_scores(
        &self,
        batch: &[PromptResponse],
        temperature: f64,
    ) -> Result<ResponseScores> {
        score_responses(&self.lm, batch, temperature)
    }

    fn backward_scores(
        &self,
        batch: &[PromptResponse],
        temperature: f64,
        opts: &ScoreOptions,
        loss: &mut dyn FnMut(&ResponseScores) -> Result<Option<Tensor>>,
        vocab_loss: Option<&mut dyn VocabLoss>,
    ) -> Result<bool> {
        check_batch(&self.lm, batch, temperature)?;
        backward_scores(&self.lm, batch, temperature, opts, loss, vocab_loss)
    }

    fn response_scores_on_support(
        &self,
        batch: &[PromptResponse],
        temperature: f64,
        support: &Tensor,
    ) -> Result<(ResponseScores, Tensor)> {
        super::support::score_responses_on_support(&self.lm, batch, temperature, support)
    }
}
