//! Next-token distributions at response positions, for the OPSD
//! distillation forms that compare whole distributions (`opsd_loss = "kl" |
//! "jsd"`): the teacher's top-k (or full-vocabulary) log-probs as plain
//! vectors for transport, and the student's log-probs of those same token ids
//! with gradient in the train step.
//!
//! Both take the `[B, L, V]` log-softmax of one padded forward, `rows_per_chunk`
//! responses at a time on the teacher side; the student side builds it for one
//! micro-batch, as [`super::score_responses`] does.

use super::transformer::CausalLm;
use crate::error::{Error, Result};
use crate::policy::{PromptResponse, ResponseScores};
use crate::rlsd::{top_k_support, TokenSupport};
use tch::{Kind, Tensor};

/// Teacher rows scored per forward (bounds the `[rows, L, V]` tensor).
const TEACHER_ROWS_PER_CHUNK: usize = 8;

/// Row `r` of a batch checked before it goes into a forward: a non-empty
/// prompt and every id inside the vocabulary (`vocab` entries).
pub fn check_row(r: usize, pr: &PromptResponse, vocab: i64) -> Result<()> {
    if pr.prompt.is_empty() {
        return Err(Error::InvalidInput(format!("prompt {r} is empty")));
    }
    if let Some(t) = pr
        .prompt
        .iter()
        .chain(&pr.response)
        .find(|&&t| t < 0 || t >= vocab)
    {
        return Err(Error::InvalidInput(format!(
            "sequence {r} has token {t} outside the vocabulary (size {vocab})"
        )));
    }
    Ok(())
}

/// `[B, L, V]` log-softmax of `logits / temperature` at the positions that
/// predict each response token, `[B, L]` response targets and the `[B, L]` mask.
fn response_log_softmax(
    lm: &CausalLm,
    batch: &[PromptResponse],
    temperature: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    if temperature.is_nan() || temperature <= 0.0 {
        return Err(Error::InvalidInput(format!(
            "temperature must be > 0, got {temperature}"
        )));
    }
    let vocab = lm.config.vocab_size;
    let device = lm.device();
    let b = batch.len();
    let l = batch
        .iter()
        .map(|p| p.response.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let s = batch
        .iter()
        .map(|p| p.prompt.len() + p.response.len())
        .max()
        .unwrap_or(1);
    let mut ids = vec![0i64; b * s];
    let mut index = vec![0i64; b * l];
    let mut targets = vec![0i64; b * l];
    let mut mask = vec![0f32; b * l];
    for (r, pr) in batch.iter().enumerate() {
        check_row(r, pr, vocab)?;
        let row = &mut ids[r * s..(r + 1) * s];
        row[..pr.prompt.len()].copy_from_slice(&pr.prompt);
        row[pr.prompt.len()..pr.prompt.len() + pr.response.len()].copy_from_slice(&pr.response);
        let p = pr.prompt.len() as i64;
        for j in 0..l {
            let k = r * l + j;
            index[k] = p - 1 + j.min(pr.response.len().saturating_sub(1)) as i64;
            if j < pr.response.len() {
                targets[k] = pr.response[j];
                mask[k] = 1.0;
            }
        }
    }
    let (b, l, s) = (b as i64, l as i64, s as i64);
    let ids = Tensor::from_slice(&ids)
        .f_view([b, s])?
        .f_to_device(device)?;
    let hidden = lm.hidden_all(&ids, None)?;
    let width = hidden.size()[2];
    let index = Tensor::from_slice(&index)
        .f_view([b, l, 1])?
        .f_to_device(device)?
        .f_expand([b, l, width], false)?;
    let logp = lm
        .head(&hidden.f_gather(1, &index, false)?)?
        .f_to_kind(Kind::Float)?
        .f_div_scalar(temperature)?
        .f_log_softmax(-1, Kind::Float)?;
    let targets = Tensor::from_slice(&targets)
        .f_view([b, l])?
        .f_to_device(device)?;
    let mask = Tensor::from_slice(&mask)
        .f_view([b, l])?
        .f_to_device(device)?;
    Ok((logp, targets, mask))
}

/// Student side: [`super::score_responses`]'s log-probs and entropies plus
/// the `[B, L, K]` log-probs of the token ids `support`, all with gradient.
pub fn score_responses_on_support(
    lm: &CausalLm,
    batch: &[PromptResponse],
    temperature: f64,
    support: &Tensor,
) -> Result<(ResponseScores, Tensor)> {
    let (logp, targets, mask) = response_log_softmax(lm, batch, temperature)?;
    let (b, l) = (mask.size()[0], mask.size()[1]);
    let ss = support.size();
    if ss.len() != 3 || ss[0] != b || ss[1] > l {
        return Err(Error::ShapeMismatch {
            name: "support ids".into(),
            expected: vec![b, l, -1],
            got: ss,
        });
    }
    // Responses may all be shorter than 1 token (l was floored to 1).
    let logp = logp.f_narrow(1, 0, ss[1])?;
    let mask = mask.f_narrow(1, 0, ss[1])?;
    let targets = targets.f_narrow(1, 0, ss[1])?;
    let token_lp = logp
        .f_gather(2, &targets.f_unsqueeze(-1)?, false)?
        .f_squeeze_dim(2)?
        .f_mul(&mask)?;
    let entropy = logp
        .f_exp()?
        .f_mul(&logp)?
        .f_sum_dim_intlist(-1, false, Kind::Float)?
        .f_neg()?
        .f_mul(&mask)?;
    let on_support = logp
        .f_gather(2, &support.f_to_device(logp.device())?, false)?
        .f_mul(&mask.f_unsqueeze(-1)?)?;
    Ok((
        ResponseScores {
            logprobs: token_lp,
            entropy,
            mask,
        },
        on_support,
    ))
}

/// Teacher side, no gradient: at each response token's position, the `k`
/// most likely tokens under `prompts[i]` and their log-probs (`k = 0`, or `k`
/// at least the vocabulary: the whole distribution, `full_vocab = true`).
pub fn teacher_support(
    lm: &CausalLm,
    prompts: &[Vec<i64>],
    responses: &[Vec<i64>],
    temperature: f64,
    k: usize,
) -> Result<Vec<TokenSupport>> {
    if prompts.len() != responses.len() {
        return Err(Error::InvalidInput(format!(
            "{} prompts but {} responses",
            prompts.len(),
            responses.len()
        )));
    }
    let vocab = lm.config.vocab_size as usize;
    let full = k == 0 || k >= vocab;
    let k_eff = if full { vocab } else { k };
    let mut out = Vec::with_capacity(responses.len());
    tch::no_grad(|| -> Result<()> {
        for start in (0..responses.len()).step_by(TEACHER_ROWS_PER_CHUNK) {
            let end = (start + TEACHER_ROWS_PER_CHUNK).min(responses.len());
            let batch: Vec<PromptResponse> = (start..end)
                .map(|i| PromptResponse {
                    image_key: 0,
                    prompt: prompts[i].clone(),
                    response: responses[i].clone(),
                })
                .collect();
            let (logp, _, _) = response_log_softmax(lm, &batch, temperature)?;
            let (b, l, v) = (logp.size()[0], logp.size()[1], logp.size()[2]);
            let (vals, ids) = top_k_support(&logp.f_view([b * l, v])?, k_eff)?;
            let vals: Vec<f32> = Vec::try_from(
                vals.f_contiguous()?
                    .f_view([-1])?
                    .f_to_device(tch::Device::Cpu)?,
            )?;
            let ids: Vec<i64> = Vec::try_from(
                ids.f_contiguous()?
                    .f_view([-1])?
                    .f_to_device(tch::Device::Cpu)?,
            )?;
            let row = l as usize * k_eff;
            for (r, resp) in batch.iter().enumerate() {
                let n = resp.response.len() * k_eff;
                out.push(TokenSupport {
                    k: k_eff,
                    full_vocab: full,
                    ids: ids[r * row..r * row + n].to_vec(),
                    logprobs: vals[r * row..r * row + n].to_vec(),
                });
            }
        }
        Ok(())
    })?;
    Ok(out)
}
