//! One data-parallel step's collectives, in the order every rank issues them:
//!
//! 1. [`agree`]: sum `[response tokens, responses, bad input]` so the loss
//!    is normalised by the *global* batch (token-mean over all ranks'
//!    tokens) and every rank skips the step together;
//! 2. backward on the rank's own samples (gradients of its share of the
//!    global loss);
//! 3. [`reduce_step`]: sum the gradients (bucketed), then the logged sums
//!    and a bad-loss flag. The summed gradient is the one-rank gradient of
//!    the global batch, so clipping and AdamW give the same update on every
//!    rank (bit-identical: each bucket is reduced once and sent to all).

use super::bucket::{all_reduce_bucketed, ReduceReport};
use super::{GradSync, ProcessGroup, DEFAULT_BUCKET_BYTES};
use crate::error::Result;
use crate::rlsd::LossNorm;
use crate::stats::StepStats;
use crate::train::TrainBatch;
use tch::{Device, Kind, Tensor};

/// [`GradSync`] over a [`ProcessGroup`].
#[derive(Debug)]
pub struct DataParallel {
    pg: Box<dyn ProcessGroup>,
    device: Device,
    bucket_bytes: usize,
    /// What the last gradient all-reduce moved.
    pub last: ReduceReport,
}

impl DataParallel {
    /// Sync over `pg`; small value vectors travel on `device` (the
    /// gradients' device: NCCL reduces only device memory).
    pub fn new(pg: Box<dyn ProcessGroup>, device: Device) -> DataParallel {
        DataParallel {
            pg,
            device,
            bucket_bytes: DEFAULT_BUCKET_BYTES,
            last: ReduceReport::default(),
        }
    }

    /// Change the bucket size (bytes).
    pub fn with_bucket_bytes(mut self, bytes: usize) -> DataParallel {
        self.bucket_bytes = bytes.max(1);
        self
    }

    /// The process group.
    pub fn group(&self) -> &dyn ProcessGroup {
        self.pg.as_ref()
    }

    /// Overwrite `params` with rank 0's, so every replica starts equal.
    pub fn broadcast_params(&self, params: &[Tensor]) -> Result<()> {
        broadcast_params(self.pg.as_ref(), params, 0)
    }
}

/// Overwrite `params` with rank `root`'s over `pg`, in place (every rank
/// passes its replica's parameters in the same order).
pub fn broadcast_params(pg: &dyn ProcessGroup, params: &[Tensor], root: usize) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        let flat: Vec<Tensor> = params
            .iter()
            .map(|p| p.f_detach()?.f_contiguous())
            .collect::<std::result::Result<_, _>>()?;
        pg.broadcast(&flat, root)?;
        for (p, f) in params.iter().zip(&flat) {
            if f.data_ptr() != p.data_ptr() {
                p.shallow_clone().f_copy_(f)?;
            }
        }
        Ok(())
    })
}

impl GradSync for DataParallel {
    fn world(&self) -> usize {
        self.pg.world()
    }

    fn sum_values(&mut self, values: &mut [f64]) -> Result<()> {
        let t = Tensor::f_from_slice(values)?.f_to_device(self.device)?;
        self.pg.all_reduce_sum(std::slice::from_ref(&t))?;
        let back = Vec::<f64>::try_from(t.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?)?;
        values.copy_from_slice(&back);
        Ok(())
    }

    fn sum_grads(&mut self, params: &[Tensor]) -> Result<()> {
        // A rank whose samples never reached a parameter (or that has no
        // samples) holds no gradient for it; give it zeros so every rank
        // reduces the same list.
        for p in params {
            if p.requires_grad() && !p.grad().defined() {
                p.f_mul_scalar(0.0)?.f_sum(p.kind())?.f_backward()?;
            }
        }
        let grads: Vec<Tensor> = params
            .iter()
            .map(|p| p.grad())
            .filter(|g| g.defined())
            .collect();
        self.last = all_reduce_bucketed(self.pg.as_ref(), &grads, self.bucket_bytes)?;
        Ok(())
    }
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
