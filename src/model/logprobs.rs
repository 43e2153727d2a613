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

use super::transformer::CausalLm;
use super::{distinct_rows, LoadedModel};
use crate::error::{Error, Result};
use crate::policy::{Policy, PromptResponse, ResponseScores};
use tch::{nn, Kind, Tensor};

/// Scores of every response token, right-padded to `[B, L]` (L = longest
/// response), with gradients when grad mode is on.
pub fn score_responses(
    lm: &CausalLm,
    batch: &[PromptResponse],
    temperature: f64,
) -> Result<ResponseScores> {
    check_temperature(temperature)?;
    for (i, pr) in batch.iter().enumerate() {
        check_sequence(lm, i, &pr.prompt, &pr.response)?;
    }
    let device = lm.device();
    let b = batch.len() as i64;
    let l = batch.iter().map(|p| p.response.len()).max().unwrap_or(0) as i64;
    if b == 0 || l == 0 {
        let z = Tensor::f_zeros([b, l], (Kind::Float, device))?;
        return Ok(ResponseScores {
            logprobs: z.f_zeros_like()?,
            entropy: z.f_zeros_like()?,
            mask: z,
        });
    }
    let s = batch
        .iter()
        .map(|p| p.prompt.len() + p.response.len())
        .max()
        .unwrap_or(0);
    let mut ids = vec![0i64; batch.len() * s];
    let mut index = vec![0i64; batch.len() * l as usize];
    let mut targets = vec![0i64; batch.len() * l as usize];
    let mut mask = vec![0f32; batch.len() * l as usize];
    for (r, pr) in batch.iter().enumerate() {
        let row = &mut ids[r * s..(r + 1) * s];
        row[..pr.prompt.len()].copy_from_slice(&pr.prompt);
        row[pr.prompt.len()..pr.prompt.len() + pr.response.len()].copy_from_slice(&pr.response);
        let p = pr.prompt.len() as i64;
        for j in 0..l as usize {
            let k = r * l as usize + j;
            if j < pr.response.len() {
                index[k] = p - 1 + j as i64;
                targets[k] = pr.response[j];
                mask[k] = 1.0;
            } else {
                index[k] = p - 1; // any valid position; masked out
            }
        }
    }
    let ids = Tensor::from_slice(&ids)
        .f_view([b, s as i64])?
        .f_to_device(device)?;
    let hidden = lm.hidden_all(&ids, None)?; // [B, S, H]
    let width = hidden.size()[2];
    let index = Tensor::from_slice(&index)
        .f_view([b, l, 1])?
        .f_to_device(device)?;
    // Only the positions that predict response tokens go through the head.
    let picked = lm.head(&hidden.f_gather(1, &index.f_expand([b, l, width], false)?, false)?)?; // [B, L, V]
    let logp = picked
        .f_to_kind(Kind::Float)?
        .f_div_scalar(temperature)?
        .f_log_softmax(-1, Kind::Float)?;
    let targets = Tensor::from_slice(&targets)
        .f_view([b, l, 1])?
        .f_to_device(device)?;
    let mask = Tensor::from_slice(&mask)
        .f_view([b, l])?
        .f_to_device(device)?;
    let token_lp = logp
        .f_gather(2, &targets, false)?
        .f_squeeze_dim(2)?
        .f_mul(&mask)?;
    let entropy = logp
        .f_exp()?
        .f_mul(&logp)?
        .f_sum_dim_intlist(-1, false, Kind::Float)?
        .f_neg()?
        .f_mul(&mask)?;
    Ok(ResponseScores {
        logprobs: token_lp,
        entropy,
        mask,
    })
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
        let logp = lm
            .head(&hidden)?
            .f_to_kind(Kind::Float)?
            .f_div_scalar(temperature)?
            .f_log_softmax(-1, Kind::Float)?; // [G, L, V]
        let mut targets = vec![0i64; responses.len() * l];
        for (r, resp) in responses.iter().enumerate() {
            targets[r * l..r * l + resp.len()].copy_from_slice(resp);
        }
        let targets = Tensor::from_slice(&targets)
            .f_view([g, l_i, 1])?
            .f_to_device(device)?;
        let lp = logp
            .f_gather(2, &targets, false)?
            .f_view([-1])?
            .f_to_device(tch::Device::Cpu)?;
        Ok(unpad_rows(&Vec::try_from(&lp)?, l, responses))
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
/// once through [`shared_prompt_logprobs`]. The teacher pass uses this.
pub fn token_logprobs_by_prompt(
    lm: &CausalLm,
    prompts: &[Vec<i64>],
    responses: &[Vec<i64>],
    temperature: f64,
) -> Result<Vec<Vec<f32>>> {
    check_pairs(prompts, responses)?;
    let (distinct, row_of) = distinct_rows(prompts);
    let mut out = vec![Vec::new(); responses.len()];
    for (u, prompt) in distinct.into_iter().enumerate() {
        let idx: Vec<usize> = (0..responses.len()).filter(|&i| row_of[i] == u).collect();
        let group: Vec<Vec<i64>> = idx.iter().map(|&i| responses[i].clone()).collect();
        for (&i, lp) in idx
            .iter()
            .zip(shared_prompt_logprobs(lm, prompt, &group, temperature)?)
        {
            out[i] = lp;
        }
    }
    Ok(out)
}

impl Policy for LoadedModel {
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
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

    fn response_scores_on_support(
        &self,
        batch: &[PromptResponse],
        temperature: f64,
        support: &Tensor,
    ) -> Result<(ResponseScores, Tensor)> {
        super::support::score_responses_on_support(&self.lm, batch, temperature, support)
    }
}
