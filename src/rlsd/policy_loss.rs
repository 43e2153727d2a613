//! The policy loss: PPO clipped surrogate on `Ahat_t` with asymmetric and dual
//! clipping (RLSD-SPEC.md step 6), optional k3 KL and entropy terms, and the
//! aggregation over tokens.

use super::config::{AlgoConfig, LossAgg};
use crate::error::Result;
use tch::Tensor;

/// Totals over the WHOLE batch that the aggregation divides by, so that
/// micro-batches with gradient accumulation give the same loss as one big batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossNorm {
    /// `sum_i |y_i|`: response tokens in the whole batch (token-mean).
    pub total_tokens: f64,
    /// `B`: responses in the whole batch (seq-mean-token-mean).
    pub total_seqs: f64,
}

impl LossNorm {
    /// The counts of a batch whose responses have these lengths.
    pub fn of_lengths(lens: impl ExactSizeIterator<Item = usize>) -> LossNorm {
        let total_seqs = lens.len() as f64;
        LossNorm {
            total_tokens: lens.sum::<usize>() as f64,
            total_seqs,
        }
    }
}

/// Per-token PPO terms.
#[derive(Debug)]
pub struct PpoTokens {
    /// `[B, L]` per-token loss `pg_t` (carries gradient), 0 on padding.
    pub pg: Tensor,
    /// `[B, L]` `ratio_t = exp(logp_new_t - logp_old_t)` (detached), 1 on padding.
    pub ratio: Tensor,
    /// `[B, L]` 1.0 where the clipped-ratio branch was taken (strictly larger).
    pub ratio_clipped: Tensor,
    /// `[B, L]` 1.0 where the dual clip capped the loss (`Ahat_t < 0`).
    pub dual_clipped: Tensor,
}

/// The PPO clipped surrogate with `Ahat_t` as the advantage:
///
/// `ratio_t = exp(logp_new_t - logp_old_t)`,
/// `pg_t = max(-Ahat_t * ratio_t, -Ahat_t * clamp(ratio_t, 1 - eps_low, 1 + eps_high))`,
/// and where `Ahat_t < 0`: `pg_t = min(pg_t, -Ahat_t * c)` (dual clip).
///
/// Padding (mask 0) contributes 0 and no gradient.
pub fn ppo_token_loss(
    logp_new: &Tensor,
    logp_old: &Tensor,
    ahat: &Tensor,
    mask: &Tensor,
    cfg: &AlgoConfig,
) -> Result<PpoTokens> {
    let ahat = ahat.detach();
    // Mask the log-ratio before exp so padding can never overflow into NaN.
    let log_ratio = logp_new.f_sub(&logp_old.detach())?.f_mul(mask)?;
    let ratio = log_ratio.f_exp()?;
    let neg_a = ahat.f_neg()?;
    let unclipped = neg_a.f_mul(&ratio)?;
    let clipped = neg_a.f_mul(&ratio.f_clamp(1.0 - cfg.eps_low, 1.0 + cfg.eps_high)?)?;
    let pg = unclipped.f_maximum(&clipped)?;
    let cap = neg_a.f_mul_scalar(cfg.dual_clip_c)?;
    let negative = ahat.f_lt(0.0)?;
    let pg_dual = pg.f_minimum(&cap)?;
    let pg = pg_dual.f_where_self(&negative, &pg)?;
    let kind = mask.kind();
    let ratio_clipped = clipped
        .f_gt_tensor(&unclipped)?
        .f_to_kind(kind)?
        .f_mul(mask)?;
    let dual_clipped = negative
        .f_logical_and(&unclipped.f_maximum(&clipped)?.f_gt_tensor(&cap)?)?
        .f_to_kind(kind)?
        .f_mul(mask)?;
    Ok(PpoTokens {
        pg: pg.f_mul(mask)?,
        ratio: ratio.detach(),
        ratio_clipped: ratio_clipped.detach(),
        dual_clipped: dual_clipped.detach(),
    })
}

/// The k3 estimator of `KL(pi_theta || pi_ref)` per token:
/// `k3_t = exp(logp_ref_t - logp_new_t) - (logp_ref_t - logp_new_t) - 1`, 0 on padding.
pub fn k3_kl(logp_new: &Tensor, logp_ref: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let d = logp_ref.detach().f_sub(logp_new)?.f_mul(mask)?;
    Ok(d.f_exp()?.f_sub(&d)?.f_sub_scalar(1.0)?.f_mul(mask)?)
}

/// Reduce a `[B, L]` per-token quantity to a scalar:
///
/// - token-mean: `sum_{i,t} x_{i,t} m_{i,t} / total_tokens`
/// - seq-mean-token-mean: `sum_i (sum_t x_{i,t} m_{i,t} / sum_t m_{i,t}) / total_seqs`
///
/// With the whole batch's totals in `norm`, summing this over micro-batches
/// gives the whole-batch value.
pub fn aggregate(values: &Tensor, mask: &Tensor, agg: LossAgg, norm: LossNorm) -> Result<Tensor> {
    let masked = values.f_mul(mask)?;
    match agg {
        LossAgg::TokenMean => Ok(masked
            .f_sum(values.kind())?
            .f_div_scalar(norm.total_tokens.max(1.0))?),
        LossAgg::SeqMeanTokenMean => {
            let lens = mask
                .f_sum_dim_intlist(-1, false, mask.kind())?
                .f_clamp_min(1.0)?;
            let per_seq = masked
                .f_sum_dim_intlist(-1, false, values.kind())?
                .f_div(&lens)?;
            Ok(per_seq
                .f_sum(values.kind())?
                .f_div_scalar(norm.total_seqs.max(1.0))?)
        }
    }
}

/// The scalar loss and its parts, each aggregated with [`aggregate`].
#[derive(Debug)]
pub struct PolicyLoss {
    /// `pg + kl_coef * kl - entropy_coef * entropy`; the tensor to back-propagate.
    pub loss: Tensor,
    /// Aggregated clipped surrogate.
    pub pg: Tensor,
    /// Aggregated k3 KL, where a reference was given.
    pub kl: Option<Tensor>,
    /// Aggregated entropy, where given.
    pub entropy: Option<Tensor>,
    /// The per-token PPO terms (for statistics).
    pub tokens: PpoTokens,
}

/// The full policy loss of RLSD-SPEC.md step 6:
///
/// `L = agg(pg_t) + kl_coef * agg(k3_t) - entropy_coef * agg(H_t)`.
///
/// `logp_ref` is needed only when `kl_coef > 0`; `entropy` only when
/// `entropy_coef != 0` (it is still aggregated for logging when given).
#[allow(clippy::too_many_arguments)]
pub fn policy_loss(
    logp_new: &Tensor,
    logp_old: &Tensor,
    ahat: &Tensor,
    mask: &Tensor,
    logp_ref: Option<&Tensor>,
    entropy: Option<&Tensor>,
    cfg: &AlgoConfig,
    norm: LossNorm,
) -> Result<PolicyLoss> {
    let tokens = ppo_token_loss(logp_new, logp_old, ahat, mask, cfg)?;
    let pg = aggregate(&tokens.pg, mask, cfg.loss_agg, norm)?;
    let mut loss = pg.shallow_clone();
    let kl = match logp_ref {
        Some(r) if cfg.kl_coef > 0.0 => {
            let kl = aggregate(&k3_kl(logp_new, r, mask)?, mask, cfg.loss_agg, norm)?;
            loss = loss.f_add(&kl.f_mul_scalar(cfg.kl_coef)?)?;
            Some(kl)
        }
        _ => None,
    };
    let entropy = match entropy {
        Some(h) if cfg.entropy_coef != 0.0 => {
            let h = aggregate(h, mask, cfg.loss_agg, norm)?;
            loss = loss.f_sub(&h.f_mul_scalar(cfg.entropy_coef)?)?;
            Some(h)
        }
        // Logged only: keep it out of the autograd graph.
        Some(h) => Some(aggregate(&h.detach(), mask, cfg.loss_agg, norm)?),
        None => None,
    };
    Ok(PolicyLoss {
        loss,
        pg,
        kl,
        entropy,
        tokens,
    })
}
