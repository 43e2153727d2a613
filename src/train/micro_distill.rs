//! The OPSD distillation term (opsd / sdpo / grpo+opsd with `opsd_loss != "pg"`).
//! Kept apart from the PPO path so it can be re-plugged into a chunked
//! log-prob computation: everything here works per micro-batch and calls the
//! pure functions of `rlsd::distill`.

use super::checks::invalid;
use super::micro_loss::{keep_trained, pad_rows};
use super::TrainBatch;
use crate::error::{Error, Result};
use crate::rlsd::{
    aggregate, support_divergence, token_kl, Algo, AlgoConfig, LossNorm, OpsdLoss, TokenSupport,
};
use std::ops::Range;
use tch::{Device, Kind, Tensor};

/// The teacher support of samples `range`, padded to `[b, len, k]`: token ids
/// (i64) and teacher log-probs (f64); padding positions hold id 0, log-prob 0.
pub fn support_tensors(
    support: &[TokenSupport],
    len: usize,
    device: Device,
) -> Result<(Tensor, Tensor)> {
    let b = support.len();
    let k = support.first().map_or(1, |s| s.k.max(1));
    let mut ids = vec![0i64; b * len * k];
    let mut lps = vec![0f64; b * len * k];
    for (i, s) in support.iter().enumerate() {
        if s.k != k {
            return Err(invalid(format!(
                "teacher_support rows have k = {} and {k}",
                s.k
            )));
        }
        let n = s.ids.len().min(len * k);
        ids[i * len * k..i * len * k + n].copy_from_slice(&s.ids[..n]);
        for (d, &x) in lps[i * len * k..i * len * k + n]
            .iter_mut()
            .zip(&s.logprobs)
        {
            *d = f64::from(x);
        }
    }
    let shape = [b as i64, len as i64, k as i64];
    Ok((
        Tensor::f_from_slice(&ids)?
            .f_view(shape)?
            .f_to_device(device)?,
        Tensor::f_from_slice(&lps)?
            .f_view(shape)?
            .f_to_device(device)?,
    ))
}

/// The aggregated OPSD distillation term of samples `range` (not yet times
/// `distill_coef`), or `None` where the update has none:
///
/// - `token-kl`: `agg(logp_T_t - logp_S_t)` on the sampled tokens ([`token_kl`]);
/// - `kl` / `jsd`: `agg(D(P_T, P_S))` per position on the teacher's support
///   ([`support_divergence`]); `student_support` is the student's `[b, L, k]`
///   log-probs of the support ids, carrying gradient.
///
/// Aggregated like the policy loss (`loss_agg`, whole-batch `norm`) over
/// the trained tokens `mask` (environment tokens get no divergence).
#[allow(clippy::too_many_arguments)]
pub fn distill_loss(
    cfg: &AlgoConfig,
    algo: Algo,
    batch: &TrainBatch,
    range: Range<usize>,
    logp_new: &Tensor,
    student_support: Option<&Tensor>,
    mask: &Tensor,
    norm: LossNorm,
) -> Result<Option<Tensor>> {
    if !algo.distills() || cfg.opsd_loss == OpsdLoss::Pg {
        return Ok(None);
    }
    let device = logp_new.device();
    let len = mask.size()[1] as usize;
    let per_token = match cfg.opsd_loss {
        OpsdLoss::Pg => return Ok(None),
        OpsdLoss::TokenKl => {
            let teacher = batch
                .teacher_logprobs
                .as_deref()
                .ok_or_else(|| invalid("opsd_loss = \"token-kl\" needs teacher_logprobs".into()))?;
            let t = pad_rows(
                teacher[range.clone()].iter().map(|r| r.as_slice()),
                len,
                device,
            )?;
            let t = keep_trained(&t, mask)?;
            token_kl(&t, &logp_new.f_to_kind(Kind::Double)?)?
        }
        form @ (OpsdLoss::Kl | OpsdLoss::Jsd) => {
            let support = batch
                .teacher_support
                .as_deref()
                .ok_or_else(|| invalid("opsd_loss kl/jsd needs teacher_support".into()))?;
            let student = student_support.ok_or_else(|| {
                invalid("opsd_loss kl/jsd needs the student's support log-probs".into())
            })?;
            let rows = &support[range];
            let (_, teacher) = support_tensors(rows, len, device)?;
            let k = teacher.size()[2];
            let full = rows.first().is_some_and(|s| s.full_vocab);
            let student = student.f_to_kind(Kind::Double)?;
            if student.size() != teacher.size() {
                return Err(Error::ShapeMismatch {
                    name: "student support log-probs".into(),
                    expected: teacher.size(),
                    got: student.size(),
                });
            }
            let d = support_divergence(
                form,
                &teacher.f_view([-1, k])?,
                &student.f_view([-1, k])?,
                !full,
            )?;
            d.f_view([mask.size()[0], len as i64])?
        }
    };
    Ok(Some(aggregate(
        &per_token.f_mul(mask)?,
        mask,
        cfg.loss_agg,
        norm,
    )?))
}
