//! The per-response records a step hands its observers: the first responses
//! of the batch with their token credit, computed by the train step's own
//! code ([`crate::train::micro_batch_loss`]) with the *sampling* log-probs
//! standing in for the policy's current ones, so `Ahat_t` and
//! `delta_t = logp_T - logp_S` are exactly the train step's when the batch is
//! on-policy or `algo.student_logprobs = "sampling"`, and the sampling-time
//! view of them otherwise (a stale batch).

use tch::{Kind, Tensor};

use super::CreditBatch;
use crate::model::Tokenizer;
use crate::rlsd::AlgoConfig;
use crate::stats::ResponseRecord;
use crate::train::{effective_algo, micro_batch_loss, MicroBatchLoss, TrainBatch};
use crate::{Error, Result};

/// The first `n` responses of a step's batch (prompt-major, so whole groups
/// come first) with their token credit. `tb` must be the [`TrainBatch`]
/// built from `batch`. Never fails the step: a problem is logged and gives
/// an empty sample.
pub fn sample_completions(
    batch: &CreditBatch,
    tb: &TrainBatch,
    algo: &AlgoConfig,
    tokenizer: Option<&Tokenizer>,
    n: usize,
) -> Vec<ResponseRecord> {
    match try_sample(batch, tb, algo, tokenizer, n) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(step = batch.plan().step, error = %e, "could not sample completions for the log");
            Vec::new()
        }
    }
}

fn try_sample(
    batch: &CreditBatch,
    tb: &TrainBatch,
    algo: &AlgoConfig,
    tokenizer: Option<&Tokenizer>,
    n: usize,
) -> Result<Vec<ResponseRecord>> {
    let k = n.min(batch.rollouts().len()).min(tb.samples.len());
    if k == 0 {
        return Ok(Vec::new());
    }
    let effective = effective_algo(algo, tb)?;
    let lens: Vec<usize> = tb.samples[..k].iter().map(|s| s.response.len()).collect();
    let len = lens.iter().copied().max().unwrap_or(0).max(1);
    let logp = padded(&tb.sampling_logprobs[..k], len)?;
    let entropy = logp.f_zeros_like()?;
    let mbl = micro_batch_loss(algo, effective, tb, 0..k, &logp, &entropy, tb.loss_norm())?;
    credit_records(batch, &mbl, k, tokenizer)
}

/// The first `k` responses of `batch` as records, with the token credit of
/// `mbl` (the train step's loss over those rows); a token without a
/// tokenizer shows as `<id>`.
pub fn credit_records(
    batch: &CreditBatch,
    mbl: &MicroBatchLoss,
    k: usize,
    tokenizer: Option<&Tokenizer>,
) -> Result<Vec<ResponseRecord>> {
    let ahat = rows(&mbl.credit.ahat)?;
    let weights = mbl.credit.weights.as_ref().map(rows).transpose()?;
    let delta = mbl.delta.as_ref().map(rows).transpose()?;
    let mut out = Vec::with_capacity(k);
    for (i, s) in batch.rollouts()[..k].iter().enumerate() {
        let score = &batch.scores()[i];
        let l = s.response_ids.len();
        let tokens = s
            .response_ids
            .iter()
            .map(|&id| match tokenizer {
                Some(t) => t.decode(&[id], false),
                None => Ok(format!("<{id}>")),
            })
            .collect::<Result<Vec<_>>>()?;
        let ex = batch.example_of(i);
        // An environment's tokens get no credit (the train step masks them too).
        let trained = s.episode.as_ref().map(|e| e.response_mask.clone());
        let mut ahat = ahat[i][..l].to_vec();
        if let Some(m) = &trained {
            for (a, &m) in ahat.iter_mut().zip(m) {
                if m == 0.0 {
                    *a = 0.0;
                }
            }
        }
        out.push(ResponseRecord {
            group: s.group,
            example_id: ex.map(|e| e.id.clone()).unwrap_or_default(),
            prompt: ex.map(|e| e.prompt.clone()).unwrap_or_default(),
            answer: ex.map(|e| e.answer.clone()).unwrap_or_default(),
            response: s.response_text.clone(),
            response_ids: s.response_ids.clone(),
            tokens,
            reward: score.reward,
            correct: score.correct,
            reason: score.reason.clone(),
            advantage: batch.advantages[i],
            ahat,
            weights: weights.as_ref().map(|w| w[i][..l].to_vec()),
            delta: delta.as_ref().map(|d| d[i][..l].to_vec()),
            trained,
        });
    }
    Ok(out)
}

/// Right-pad per-response values into a `[B, len]` f64 tensor.
pub fn padded(rows: &[Vec<f32>], len: usize) -> Result<Tensor> {
    let mut flat = vec![0f64; rows.len() * len];
    for (i, r) in rows.iter().enumerate() {
        for (j, &x) in r.iter().take(len).enumerate() {
            flat[i * len + j] = f64::from(x);
        }
    }
    Ok(Tensor::f_from_slice(&flat)?.f_view([rows.len() as i64, len as i64])?)
}

/// A `[B, L]` tensor as `B` rows of f32.
pub fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    let size = t.size();
    let (b, l) = match size.as_slice() {
        [b, l] => (*b as usize, *l as usize),
        _ => {
            return Err(Error::ShapeMismatch {
                name: "token credit".into(),
                expected: vec![-1, -1],
                got: size,
            })
        }
    };
    let flat: Vec<f32> = Vec::try_from(
        &t.f_to_device(tch::Device::Cpu)?
            .f_to_kind(Kind::Float)?
            .f_contiguous()?
            .f_view([-1])?,
    )?;
    Ok((0..b).map(|i| flat[i * l..(i + 1) * l].to_vec()).collect())
}
