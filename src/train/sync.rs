//! The train step's gradient-sync seam: on a data-parallel rank the step
//! agrees on the global loss normaliser before its backward and sums the
//! gradients and logged values after it. The trait lives here, with its
//! consumer; [`crate::distributed`] implements it over a process group.

use super::TrainBatch;
use crate::error::Result;
use crate::rlsd::LossNorm;
use crate::stats::StepStats;
use tch::Tensor;

/// The hook [`crate::train::train_step`] calls on a data-parallel rank
/// between the backward and the AdamW step (`Trainer::grad_sync`).
pub trait GradSync: std::fmt::Debug + Send {
    /// Number of ranks.
    fn world(&self) -> usize;
    /// Sum `values` over ranks, in place.
    fn sum_values(&mut self, values: &mut [f64]) -> Result<()>;
    /// Sum the gradient of each parameter over ranks, in place; a parameter
    /// without a gradient on this rank counts as zero (and gets one).
    fn sum_grads(&mut self, params: &[Tensor]) -> Result<()>;
}

/// Step 1: the global loss normaliser and whether any rank's input is bad.
/// `local_bad` names this rank's non-finite input, if any.
pub fn agree(
    sync: &mut dyn GradSync,
    local: LossNorm,
    local_bad: Option<&str>,
) -> Result<(LossNorm, Option<String>)> {
    let mut v = [
        local.total_tokens,
        local.total_seqs,
        f64::from(u8::from(local_bad.is_some())),
    ];
    sync.sum_values(&mut v)?;
    let global = LossNorm {
        total_tokens: v[0],
        total_seqs: v[1],
    };
    let bad_ranks = v[2];
    let reason = if bad_ranks == 0.0 {
        None
    } else {
        Some(match local_bad {
            Some(what) => format!(
                "non-finite values in {what} (on {bad_ranks} of {} ranks)",
                sync.world()
            ),
            None => format!("non-finite inputs on {bad_ranks} other rank(s)"),
        })
    };
    Ok((global, reason))
}

/// Step 3: sum the gradients of `params`, then `acc` (the step's logged
/// sums, in place) with a bad-loss flag and the batch counts; fills the
/// global counts of `stats` and, when any rank's loss was non-finite, marks
/// `stats` skipped with the reason (the caller skips the step).
pub fn reduce_step(
    sync: &mut dyn GradSync,
    params: &[Tensor],
    acc: &mut [f64],
    bad_loss: Option<f64>,
    stats: &mut StepStats,
    batch: &TrainBatch,
) -> Result<()> {
    sync.sum_grads(params)?;
    let n = acc.len();
    let mut v = acc.to_vec();
    let tokens: usize = batch.samples.iter().map(|s| s.response.len()).sum();
    v.extend([
        f64::from(u8::from(bad_loss.is_some())),
        batch.samples.len() as f64,
        tokens as f64,
        batch.advantages.iter().map(|&a| f64::from(a)).sum(),
        batch.advantages.iter().map(|&a| f64::from(a).abs()).sum(),
    ]);
    sync.sum_values(&mut v)?;
    acc.copy_from_slice(&v[..n]);
    let [bad, samples, tokens, adv, adv_abs] = [v[n], v[n + 1], v[n + 2], v[n + 3], v[n + 4]];
    stats.num_responses = samples as usize;
    stats.num_tokens = tokens as usize;
    if samples > 0.0 {
        stats.response_len_mean = tokens / samples;
        stats.adv_mean = adv / samples;
        stats.adv_abs_mean = adv_abs / samples;
    }
    if bad > 0.0 {
        stats.skipped = true;
        stats.skip_reason = Some(match bad_loss {
            Some(l) => format!("non-finite loss {l} (on {bad} of {} ranks)", sync.world()),
            None => format!("non-finite loss on {bad} other rank(s)"),
        });
    }
    Ok(())
}
