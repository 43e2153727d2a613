//! What the train step checks before it computes anything: per-token
//! vectors of the right lengths, finite inputs, and an algorithm the batch
//! has the inputs for ([`effective_algo`]).

use super::TrainBatch;
use crate::error::{Error, Result};
use crate::rlsd::{Algo, AlgoConfig};

pub(crate) fn invalid(msg: String) -> Error {
    Error::InvalidInput(format!("train_step: {msg}"))
}

/// Check that every per-sample vector has one entry per response token.
pub(crate) fn check_lengths(batch: &TrainBatch) -> Result<()> {
    let b = batch.samples.len();
    let rows = |name: &str, v: &[Vec<f32>]| -> Result<()> {
        if v.len() != b {
            return Err(invalid(format!(
                "{name} has {} rows for {b} samples",
                v.len()
            )));
        }
        for (i, (row, s)) in v.iter().zip(&batch.samples).enumerate() {
            if row.len() != s.response.len() {
                return Err(invalid(format!(
                    "{name}[{i}] has {} values for a response of {} tokens",
                    row.len(),
                    s.response.len()
                )));
            }
        }
        Ok(())
    };
    rows("sampling_logprobs", &batch.sampling_logprobs)?;
    if let Some(t) = &batch.teacher_logprobs {
        rows("teacher_logprobs", t)?;
    }
    if let Some(r) = &batch.ref_logprobs {
        rows("ref_logprobs", r)?;
    }
    if let Some(n) = &batch.teacher_neg_logprobs {
        if n.len() != b {
            return Err(invalid(format!(
                "teacher_neg_logprobs has {} rows for {b} samples",
                n.len()
            )));
        }
        for (i, (row, s)) in n.iter().zip(&batch.samples).enumerate() {
            if let Some(row) = row {
                if row.len() != s.response.len() {
                    return Err(invalid(format!(
                        "teacher_neg_logprobs[{i}] has {} values for a response of {} tokens",
                        row.len(),
                        s.response.len()
                    )));
                }
            }
        }
    }
    if let Some(m) = &batch.response_mask {
        rows("response_mask", m)?;
        for (i, row) in m.iter().enumerate() {
            if let Some((j, x)) = row.iter().enumerate().find(|(_, &x)| x != 0.0 && x != 1.0) {
                return Err(invalid(format!(
                    "response_mask[{i}][{j}] is {x}; it must be 1 (model token) or 0 (environment token)"
                )));
            }
        }
    }
    if batch.advantages.len() != b {
        return Err(invalid(format!(
            "{} advantages for {b} samples",
            batch.advantages.len()
        )));
    }
    Ok(())
}

/// Which input, if any, holds a NaN or infinity on a trained token
/// (environment tokens' values are never read, [`TrainBatch::response_mask`]).
pub(crate) fn non_finite_input(batch: &TrainBatch) -> Option<&'static str> {
    let bad_row = |i: usize, r: &[f32]| {
        r.iter()
            .enumerate()
            .any(|(j, x)| !x.is_finite() && batch.is_trained(i, j))
    };
    let bad = |v: &[Vec<f32>]| v.iter().enumerate().any(|(i, r)| bad_row(i, r));
    if batch.advantages.iter().any(|x| !x.is_finite()) {
        return Some("advantages (rewards)");
    }
    if bad(&batch.sampling_logprobs) {
        return Some("sampling_logprobs");
    }
    if batch.teacher_logprobs.as_deref().is_some_and(bad) {
        return Some("teacher_logprobs");
    }
    if let Some(n) = &batch.teacher_neg_logprobs {
        let rows = n.iter().enumerate();
        if rows
            .filter_map(|(i, r)| Some((i, r.as_deref()?)))
            .any(|(i, r)| bad_row(i, r))
        {
            return Some("teacher_neg_logprobs");
        }
    }
    if batch.ref_logprobs.as_deref().is_some_and(bad) {
        return Some("ref_logprobs");
    }
    if !batch.lambda.is_finite() || !batch.lr.is_finite() {
        return Some("lambda / lr");
    }
    None
}

/// Which credit a step really uses: `cfg.algo`, except that RLSD with
/// `lambda == 0` and no teacher log-probs is run as GRPO (it is exactly GRPO).
/// Errors when the batch lacks what the algorithm needs.
pub fn effective_algo(cfg: &AlgoConfig, batch: &TrainBatch) -> Result<Algo> {
    let algo = match (cfg.algo, &batch.teacher_logprobs) {
        (a, None) if a.at_lambda(batch.lambda).needs_teacher() => {
            return Err(invalid(format!("`{}` needs teacher_logprobs", a.name())))
        }
        (a, None) => a.at_lambda(batch.lambda),
        (a, Some(_)) => a,
    };
    if algo == Algo::Cepo && batch.teacher_neg_logprobs.is_none() {
        return Err(invalid("`cepo` needs teacher_neg_logprobs".into()));
    }
    if cfg.kl_coef > 0.0 && batch.ref_logprobs.is_none() {
        return Err(invalid("kl_coef > 0 needs ref_logprobs".into()));
    }
    if algo.distills() && cfg.opsd_loss.needs_distribution() {
        let Some(sup) = &batch.teacher_support else {
            return Err(invalid(format!(
                "`{}` with opsd_loss = \"{}\" needs teacher_support",
                algo.name(),
                cfg.opsd_loss.name()
            )));
        };
        for (i, (t, s)) in sup.iter().zip(&batch.samples).enumerate() {
            if t.len() != s.response.len() || t.logprobs.len() != t.ids.len() {
                return Err(invalid(format!(
                    "teacher_support[{i}] covers {} positions of a {}-token response",
                    t.len(),
                    s.response.len()
                )));
            }
        }
        if sup.len() != batch.samples.len() {
            return Err(invalid(format!(
                "teacher_support has {} rows for {} samples",
                sup.len(),
                batch.samples.len()
            )));
        }
    }
    Ok(algo)
}
