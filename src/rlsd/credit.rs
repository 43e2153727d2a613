//! Token credit `Ahat_t` (RLSD-SPEC.md step 5 and the algorithm table).
//!
//! All tensors are `[B, L]` response-token grids (right-padded, `mask` 1 on
//! response tokens, 0 on padding) except the per-response advantages `[B]`.
//! Nothing here carries gradient: `delta_t` is a stop-gradient constant.

use super::config::Algo;
use crate::error::{Error, Result};
use tch::Tensor;

/// The teacher/student log-ratio, a stop-gradient constant:
///
/// `delta_t = logp_T_t - logp_S_t` (RLSD, OPSD), or
/// `delta_t = logp_Tpos_t - logp_Tneg_t` (CEPO, called with the two teacher passes).
pub fn token_delta(teacher_logprobs: &Tensor, student_logprobs: &Tensor) -> Result<Tensor> {
    Ok(teacher_logprobs
        .detach()
        .f_sub(&student_logprobs.detach())?)
}

/// Raw token weights `w_t = exp(sign(A_i) * delta_t)`; `advantages` is `[B]`.
pub fn token_weights(advantages: &Tensor, delta: &Tensor) -> Result<Tensor> {
    let sign = advantages.detach().f_sign()?.f_unsqueeze(-1)?;
    Ok(delta.detach().f_mul(&sign)?.f_exp()?)
}

/// Clipped token weights `w_clip_t = clamp(w_t, 1 - eps_w, 1 + eps_w)`.
pub fn clip_token_weights(weights: &Tensor, eps_w: f64) -> Result<Tensor> {
    Ok(weights.f_clamp(1.0 - eps_w, 1.0 + eps_w)?)
}

/// The credit of every response token, and what it took to compute it.
#[derive(Debug)]
pub struct TokenCredit {
    /// `[B, L]` `Ahat_t`, 0 on padding.
    pub ahat: Tensor,
    /// `[B, L]` raw `w_t = exp(sign(A_i) delta_t)` where the algorithm uses it (rlsd, cepo).
    pub weights: Option<Tensor>,
    /// `[B, L]` 1.0 where `w_t` fell outside `[1 - eps_w, 1 + eps_w]` on a response token.
    pub weight_clipped: Option<Tensor>,
}

/// `Ahat_t` for each algorithm (RLSD-SPEC.md table), masked to response tokens,
/// with no renormalisation over the sequence:
///
/// - `grpo`: `Ahat_t = A_i`
/// - `rlsd`, `cepo`: `Ahat_t = A_i * ((1 - lambda) + lambda * clamp(exp(sign(A_i) delta_t), 1 - eps_w, 1 + eps_w))`
/// - `opsd`: `Ahat_t = delta_t`
///
/// `advantages` is `[B]`; `delta` (`[B, L]`, see [`token_delta`]) is required for
/// every algorithm but `grpo`, where it is ignored.
pub fn token_advantages(
    algo: Algo,
    advantages: &Tensor,
    delta: Option<&Tensor>,
    lambda: f64,
    eps_w: f64,
    mask: &Tensor,
) -> Result<TokenCredit> {
    let a = advantages.detach().f_unsqueeze(-1)?;
    let need_delta = || {
        delta.ok_or_else(|| {
            Error::InvalidInput(format!(
                "token credit for `{}` needs delta_t (teacher log-probs)",
                algo.name()
            ))
        })
    };
    match algo {
        Algo::Grpo => Ok(TokenCredit {
            ahat: a.f_mul(mask)?,
            weights: None,
            weight_clipped: None,
        }),
        Algo::Opsd => Ok(TokenCredit {
            ahat: need_delta()?.detach().f_mul(mask)?,
            weights: None,
            weight_clipped: None,
        }),
        Algo::Rlsd | Algo::Cepo => {
            let w = token_weights(advantages, need_delta()?)?;
            let w_clip = clip_token_weights(&w, eps_w)?;
            // (1 - lambda) + lambda * w_clip, written as 1 + lambda * (w_clip - 1) so that
            // lambda = 0 or w_clip = 1 gives a factor of exactly 1 (RLSD reduces to GRPO
            // bit for bit, not just up to rounding).
            let scale = w_clip
                .f_sub_scalar(1.0)?
                .f_mul_scalar(lambda)?
                .f_add_scalar(1.0)?;
            let ahat = a.f_mul(&scale)?.f_mul(mask)?;
            let clipped = w
                .f_lt(1.0 - eps_w)?
                .f_logical_or(&w.f_gt(1.0 + eps_w)?)?
                .f_to_kind(mask.kind())?
                .f_mul(mask)?;
            Ok(TokenCredit {
                ahat,
                weights: Some(w),
                weight_clipped: Some(clipped),
            })
        }
    }
}

/// CEPO's negative response for each sample: within its group (consecutive
/// blocks of `group_size`), the index (into the whole batch) of the wrong
/// response (`correct == false`) with the lowest reward, the first one on ties;
/// `None` when the group has no wrong response (then `Tneg` falls back to the
/// student, and CEPO equals RLSD for that group).
pub fn cepo_negatives(
    rewards: &[f32],
    correct: &[bool],
    group_size: usize,
) -> Result<Vec<Option<usize>>> {
    if group_size == 0 || rewards.len() % group_size != 0 || correct.len() != rewards.len() {
        return Err(Error::InvalidInput(format!(
            "cepo_negatives: {} rewards, {} verdicts, groups of {group_size}",
            rewards.len(),
            correct.len()
        )));
    }
    let mut out = Vec::with_capacity(rewards.len());
    for start in (0..rewards.len()).step_by(group_size) {
        let mut best: Option<usize> = None;
        for i in start..start + group_size {
            if correct[i] {
                continue;
            }
            // `<` keeps the first index on ties; a NaN reward never wins.
            if best.is_none_or(|b| rewards[i] < rewards[b]) {
                best = Some(i);
            }
        }
        out.extend(std::iter::repeat_n(best, group_size));
    }
    Ok(out)
}
