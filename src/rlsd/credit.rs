//! Token credit `Ahat_t` (RLSD-SPEC.md step 5 and the algorithm table).
//!
//! All tensors are `[B, L]` response-token grids (right-padded, `mask` 1 on
//! response tokens, 0 on padding) except the per-response advantages `[B]`.
//! Nothing here carries gradient: `delta_t` is a stop-gradient constant.

use super::config::{Algo, AlgoConfig, OpsdLoss};
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
    /// `[B, L]` 1.0 where `w_t < 1 - eps_w` (clipped low) on a response token.
    pub weight_clipped_low: Option<Tensor>,
    /// `[B, L]` 1.0 where `w_t > 1 + eps_w` (clipped high) on a response token.
    pub weight_clipped_high: Option<Tensor>,
}

impl TokenCredit {
    fn plain(ahat: Tensor) -> TokenCredit {
        TokenCredit {
            ahat,
            weights: None,
            weight_clipped: None,
            weight_clipped_low: None,
            weight_clipped_high: None,
        }
    }
}

/// `Ahat_t` for each algorithm (RLSD-SPEC.md table), masked to response tokens,
/// with no renormalisation over the sequence:
///
/// - `grpo`: `Ahat_t = A_i`
/// - `rlsd`, `cepo`: `Ahat_t = A_i * ((1 - lambda) + lambda * clamp(exp(sign(A_i) delta_t), 1 - eps_w, 1 + eps_w))`
/// - `opsd`, `sdpo`: `Ahat_t = delta_t`
/// - `grpo+opsd`: `Ahat_t = A_i + delta_t` (see [`update_credit`] for its coefficient)
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
        Algo::Grpo => Ok(TokenCredit::plain(a.f_mul(mask)?)),
        Algo::Opsd | Algo::Sdpo => Ok(TokenCredit::plain(need_delta()?.detach().f_mul(mask)?)),
        Algo::GrpoOpsd => Ok(TokenCredit::plain(
            need_delta()?.detach().f_add(&a)?.f_mul(mask)?,
        )),
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
            let low = w.f_lt(1.0 - eps_w)?.f_to_kind(mask.kind())?.f_mul(mask)?;
            let high = w.f_gt(1.0 + eps_w)?.f_to_kind(mask.kind())?.f_mul(mask)?;
            Ok(TokenCredit {
                ahat,
                weights: Some(w),
                weight_clipped: Some(low.f_add(&high)?),
                weight_clipped_low: Some(low),
                weight_clipped_high: Some(high),
            })
        }
    }
}

/// The credit the PPO surrogate of one update uses, for every algorithm and
/// OPSD form (the distillation term itself is [`super::distill`]'s):
///
/// - `opsd`, `sdpo` with `opsd_loss = "pg"`: [`token_advantages`] (`Ahat_t = delta_t`);
///   with any other form: `Ahat_t = 0` (the divergence carries the whole update);
/// - `grpo+opsd`, `pg` form: `Ahat_t = A_i + distill_coef * delta_t`; other forms: `A_i`;
/// - `grpo`, `rlsd`, `cepo`: [`token_advantages`].
pub fn update_credit(
    cfg: &AlgoConfig,
    algo: Algo,
    advantages: &Tensor,
    delta: Option<&Tensor>,
    lambda: f64,
    mask: &Tensor,
) -> Result<TokenCredit> {
    let pg_form = cfg.opsd_loss == OpsdLoss::Pg;
    match algo {
        Algo::Opsd | Algo::Sdpo if !pg_form => Ok(TokenCredit::plain(mask.f_zeros_like()?)),
        Algo::GrpoOpsd if !pg_form => {
            token_advantages(Algo::Grpo, advantages, None, lambda, cfg.eps_w, mask)
        }
        Algo::GrpoOpsd => {
            let scaled = delta
                .map(|d| d.f_mul_scalar(cfg.distill_coef))
                .transpose()?;
            token_advantages(algo, advantages, scaled.as_ref(), lambda, cfg.eps_w, mask)
        }
        _ => token_advantages(algo, advantages, delta, lambda, cfg.eps_w, mask),
    }
}

/// SDPO's teacher context for each group (consecutive blocks of
/// `group_size`): the index of the shortest correct response (the "correct
/// solution") and of the shortest wrong one (the "unsuccessful attempt"),
/// first on ties; `None` where the group has none (the reference then leaves
/// that slot of its template empty).
pub fn sdpo_feedback(
    correct: &[bool],
    lengths: &[usize],
    group_size: usize,
) -> Result<Vec<(Option<usize>, Option<usize>)>> {
    if group_size == 0 || correct.len() % group_size != 0 || lengths.len() != correct.len() {
        return Err(Error::InvalidInput(format!(
            "sdpo_feedback: {} verdicts, {} lengths, groups of {group_size}",
            correct.len(),
            lengths.len()
        )));
    }
    let shortest = |range: std::ops::Range<usize>, want: bool| {
        range
            .filter(|&i| correct[i] == want)
            .min_by_key(|&i| (lengths[i], i))
    };
    Ok((0..correct.len())
        .step_by(group_size)
        .map(|s| {
            (
                shortest(s..s + group_size, true),
                shortest(s..s + group_size, false),
            )
        })
        .collect())
}

/// CEPO's negative response for each sample: within its group (consecutive
/// blocks of `group_size`), the index (into the whole batch) of the wrong
/// response (`correct == false`) with the lowest reward, the first one on ties;
/// `None` when the group has no wrong response (then CEPO falls back to GRPO
/// for that group, or to RLSD with `cepo_fallback = "rlsd"`).
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
