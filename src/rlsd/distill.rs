//! OPSD distillation terms (RLSD-SPEC.md, "Other algorithms": `opsd`, `sdpo`,
//! `grpo+opsd`), written from the reference code's formulas
//! (iie-ycx/RLSD, `verl/trainer/opsd_algos.py`). The teacher is always a
//! stop-gradient constant; the gradient flows through the student only.
//!
//! Everything works on a chunk of `n` response positions, so the train step
//! can call it on token chunks and never hold a `[tokens x vocab]` tensor:
//!
//! - [`token_kl`]: the reference's default form, `logp_T_t - logp_S_t` on the
//!   sampled token (`distillation_loss_type = kl`, `opsd_kl_penalty = kl`).
//! - [`support_divergence`]: `KL(P_T || P_S)` or `JSD(P_T, P_S)` between the
//!   teacher's and the student's next-token distributions on a support: the
//!   teacher's top-k tokens plus one tail bucket holding the rest of the mass,
//!   or the whole vocabulary (then there is no tail).

use super::config::OpsdLoss;
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// Floor of the probabilities that are logged (the tail bucket, JSD's mixture).
pub const PROB_EPS: f64 = 1e-10;
/// The reference clamps the per-token KL to `[-10, 10]` ...
pub const KL_CLAMP: f64 = 10.0;
/// ... and the per-token JSD to `[0, 10]`.
pub const JSD_CLAMP: f64 = 10.0;

/// The reference's sampled-token form: `d_t = logp_T_t - logp_S_t`, teacher
/// detached, so `d d_t / d logp_S_t = -1` (minimising it raises the student's
/// log-prob of its own sampled tokens; its value is a one-sample estimate of
/// `KL(P_S || P_T)` with the sign flipped). Any shape.
pub fn token_kl(teacher_logprobs: &Tensor, student_logprobs: &Tensor) -> Result<Tensor> {
    Ok(teacher_logprobs.detach().f_sub(student_logprobs)?)
}

/// Per-position divergence `[n]` between teacher and student on a support of
/// `k` tokens per position (`[n, k]` log-probs of the same token ids under
/// each model, full-vocabulary normalised):
///
/// - `kl`: `sum_j p_T,j (log p_T,j - log p_S,j)`, plus, with `tail`, the bucket
///   `p_T,tail (log p_T,tail - log p_S,tail)` where `p_tail = max(1 - sum_j p_j, 1e-10)`;
///   clamped to `[-10, 10]`;
/// - `jsd`: with `m = (p_T + p_S) / 2` over the support (plus the tail bucket
///   with `tail`; without it both are renormalised over the support),
///   `0.5 * (sum p_T (log p_T - log m) + sum p_S (log p_S - log m))`,
///   probabilities floored at 1e-10 inside the logs; clamped to `[0, 10]`.
///
/// With the full vocabulary as support (`k = V`) pass `tail = false`: the
/// result is the exact divergence. The teacher is detached here.
pub fn support_divergence(
    form: OpsdLoss,
    teacher_logprobs: &Tensor,
    student_logprobs: &Tensor,
    tail: bool,
) -> Result<Tensor> {
    if teacher_logprobs.size() != student_logprobs.size() || teacher_logprobs.dim() != 2 {
        return Err(Error::ShapeMismatch {
            name: "distillation support log-probs (teacher vs student)".into(),
            expected: teacher_logprobs.size(),
            got: student_logprobs.size(),
        });
    }
    let lt = teacher_logprobs.detach();
    let ls = student_logprobs;
    let pt = lt.f_exp()?;
    let kind = ls.kind();
    let tail_of = |p: &Tensor| -> Result<Tensor> {
        Ok(p.f_sum_dim_intlist(-1, true, kind)?
            .f_neg()?
            .f_add_scalar(1.0)?
            .f_clamp_min(PROB_EPS)?)
    };
    match form {
        OpsdLoss::Kl => {
            let mut kl = pt
                .f_mul(&lt.f_sub(ls)?)?
                .f_sum_dim_intlist(-1, false, kind)?;
            if tail {
                let t_tail = tail_of(&pt)?;
                let s_tail = tail_of(&ls.f_exp()?)?;
                let bucket = t_tail
                    .f_mul(&t_tail.f_log()?.f_sub(&s_tail.f_log()?)?)?
                    .f_squeeze_dim(-1)?;
                kl = kl.f_add(&bucket)?;
            }
            Ok(kl.f_clamp(-KL_CLAMP, KL_CLAMP)?)
        }
        OpsdLoss::Jsd => {
            let ps = ls.f_exp()?;
            let (p, q) = if tail {
                (
                    Tensor::f_cat(&[&pt, &tail_of(&pt)?], -1)?,
                    Tensor::f_cat(&[&ps, &tail_of(&ps)?], -1)?,
                )
            } else {
                let norm = |x: &Tensor| -> Result<Tensor> {
                    Ok(x.f_div(&x.f_sum_dim_intlist(-1, true, kind)?.f_clamp_min(PROB_EPS)?)?)
                };
                (norm(&pt)?, norm(&ps)?)
            };
            let log = |x: &Tensor| -> Result<Tensor> { Ok(x.f_clamp_min(PROB_EPS)?.f_log()?) };
            let log_m = log(&p.f_add(&q)?.f_mul_scalar(0.5)?)?;
            let side = |x: &Tensor| -> Result<Tensor> {
                Ok(x.f_mul(&log(x)?.f_sub(&log_m)?)?
                    .f_sum_dim_intlist(-1, false, kind)?)
            };
            let jsd = side(&p)?.f_add(&side(&q)?)?.f_mul_scalar(0.5)?;
            Ok(jsd.f_clamp(0.0, JSD_CLAMP)?)
        }
        other => Err(Error::InvalidInput(format!(
            "support_divergence: opsd_loss `{}` is not a distribution divergence",
            other.name()
        ))),
    }
}

/// The teacher's next-token distribution at each response position, as
/// transported from the teacher pass to the train step: `k` token ids and
/// their teacher log-probs per position, row-major `[len, k]`. With `k` equal
/// to the vocabulary size it is the whole distribution (no tail).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenSupport {
    /// Entries per position.
    pub k: usize,
    /// `true` when the support is the whole vocabulary (no tail bucket).
    pub full_vocab: bool,
    /// `[len * k]` token ids, position-major.
    pub ids: Vec<i64>,
    /// `[len * k]` teacher log-probs of those ids (at the sampling temperature).
    pub logprobs: Vec<f32>,
}

impl TokenSupport {
    /// Positions covered (`ids.len() / k`).
    pub fn len(&self) -> usize {
        self.ids.len().checked_div(self.k).unwrap_or(0)
    }

    /// Whether it covers no position.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Top-`k` of each row of a `[n, V]` log-prob tensor (`k = 0` or `k >= V`:
/// every token, in vocabulary order), as `([n, k'] log-probs, [n, k'] ids)`.
pub fn top_k_support(logprobs: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    let v = *logprobs.size().last().unwrap_or(&0);
    if k == 0 || k as i64 >= v {
        let n = logprobs.size()[0];
        let ids = Tensor::f_arange(v, (Kind::Int64, logprobs.device()))?
            .f_unsqueeze(0)?
            .f_expand([n, v], false)?
            .f_contiguous()?;
        return Ok((logprobs.shallow_clone(), ids));
    }
    let (vals, ids) = logprobs.f_topk(k as i64, -1, true, true)?;
    Ok((vals, ids))
}
