//! Log-probabilities of given responses under the model: the quantity GRPO,
//! RLSD and the teacher all need.
//!
//! One forward over `prompt + response` (right-padded, so causal attention
//! needs no mask): the token at response position `j` is predicted by the
//! logits at `prompt_len - 1 + j`. Log-probs use `log_softmax(logits / T)`
//! over the full vocabulary; the entropy is that distribution's.

use super::transformer::CausalLm;
use super::LoadedModel;
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
    if temperature.is_nan() || temperature <= 0.0 {
        return Err(Error::InvalidInput(format!(
            "temperature must be > 0, got {temperature}"
        )));
    }
    let vocab = lm.config.vocab_size;
    for (i, pr) in batch.iter().enumerate() {
        if pr.prompt.is_empty() {
            return Err(Error::InvalidInput(format!("prompt {i} is empty")));
        }
        if let Some(t) = pr
            .prompt
            .iter()
            .chain(&pr.response)
            .find(|&&t| t < 0 || t >= vocab)
        {
            return Err(Error::InvalidInput(format!(
                "sequence {i} has token {t} outside the vocabulary (size {vocab})"
            )));
        }
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

/// Log-prob of every response token given its prompt, without gradients:
/// `out[i][j] = log_softmax(logits / temperature)[responses[i][j]]`.
pub fn token_logprobs(
    lm: &CausalLm,
    prompts: &[Vec<i64>],
    responses: &[Vec<i64>],
    temperature: f64,
) -> Result<Vec<Vec<f32>>> {
    if prompts.len() != responses.len() {
        return Err(Error::InvalidInput(format!(
            "{} prompts but {} responses",
            prompts.len(),
            responses.len()
        )));
    }
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
    Ok(responses
        .iter()
        .enumerate()
        .map(|(i, r)| flat[i * l..i * l + r.len()].to_vec())
        .collect())
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
}
