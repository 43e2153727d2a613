//! The loss of one micro-batch: `delta_t` from the teacher, the token credit
//! `Ahat_t`, the clipped surrogate ([`micro_batch_loss`]), and the logged sums
//! ([`Accum`]) the step's stats are made from.

use super::checks::invalid;
use super::TrainBatch;
use crate::error::{Error, Result};
use crate::rlsd::{
    policy_loss, restrict_reweighting, thought_span_mask, token_delta, update_credit, Algo,
    AlgoConfig, CepoFallback, LossNorm, PolicyLoss, StudentLogprobs, TokenCredit,
};
use std::ops::Range;
use tch::{Device, Kind, Tensor};

/// Right-pad rows to `[rows.len(), len]` as f64 on `device`.
pub(crate) fn pad_rows<'a>(
    rows: impl ExactSizeIterator<Item = &'a [f32]>,
    len: usize,
    device: Device,
) -> Result<Tensor> {
    let b = rows.len();
    let mut flat = vec![0f64; b * len];
    for (i, row) in rows.enumerate() {
        for (j, &x) in row.iter().enumerate() {
            flat[i * len + j] = f64::from(x);
        }
    }
    Ok(Tensor::f_from_slice(&flat)?
        .f_view([b as i64, len as i64])?
        .f_to_device(device)?)
}

/// `[b, len]` response mask from the response lengths.
pub(crate) fn length_mask(lens: &[usize], len: usize, device: Device) -> Result<Tensor> {
    let mut flat = vec![0f64; lens.len() * len];
    for (i, &l) in lens.iter().enumerate() {
        flat[i * len..i * len + l].fill(1.0);
    }
    Ok(Tensor::f_from_slice(&flat)?
        .f_view([lens.len() as i64, len as i64])?
        .f_to_device(device)?)
}

/// `[b, len]` mask of the trained tokens of samples `range`: 1 on the
/// model's response tokens, 0 on padding and on environment tokens
/// ([`TrainBatch::response_mask`]).
pub(crate) fn trained_mask(
    batch: &TrainBatch,
    range: Range<usize>,
    len: usize,
    device: Device,
) -> Result<Tensor> {
    match &batch.response_mask {
        Some(m) => pad_rows(m[range].iter().map(|r| r.as_slice()), len, device),
        None => {
            let lens: Vec<usize> = batch.samples[range]
                .iter()
                .map(|s| s.response.len())
                .collect();
            length_mask(&lens, len, device)
        }
    }
}

/// `values` with 0 wherever `mask` is 0: an environment token's input
/// (even a NaN) never reaches the loss.
pub(crate) fn keep_trained(values: &Tensor, mask: &Tensor) -> Result<Tensor> {
    Ok(values.f_where_self(&mask.f_gt(0.5)?, &values.f_zeros_like()?)?)
}

/// The loss of one micro-batch and the credit behind it.
#[derive(Debug)]
pub struct MicroBatchLoss {
    /// The loss (normalised by the whole batch) and its parts.
    pub loss: PolicyLoss,
    /// `Ahat_t` and token weights.
    pub credit: TokenCredit,
    /// `delta_t`, where a teacher was given.
    pub delta: Option<Tensor>,
    /// `[b, L]` mask of the trained tokens (f64): 0 on padding and on
    /// environment tokens.
    pub mask: Tensor,
    /// `[b, L]` masked entropy (f64).
    pub entropy: Tensor,
}

/// Credit and loss of samples `range` of `batch`, given the policy's current
/// log-probs `logp_new` (`[b, L]`, carrying gradient, `L` at least the longest
/// response) and entropies of those samples. Builds `delta_t` from the
/// teacher (CEPO: `logp_Tpos - logp_Tneg`, `Tneg` falling back to `logp_S`
/// where the group has no wrong response), then `Ahat_t`, then the loss.
pub fn micro_batch_loss(
    cfg: &AlgoConfig,
    algo: Algo,
    batch: &TrainBatch,
    range: Range<usize>,
    logp_new: &Tensor,
    entropy: &Tensor,
    norm: LossNorm,
) -> Result<MicroBatchLoss> {
    let (start, end) = (range.start, range.end);
    let lens: Vec<usize> = batch.samples[range.clone()]
        .iter()
        .map(|s| s.response.len())
        .collect();
    let size = logp_new.size();
    check_shape(&size, &lens)?;
    let device = logp_new.device();
    let len = size[1] as usize;
    let mask = trained_mask(batch, range.clone(), len, device)?;
    let logp_new = logp_new.f_to_kind(Kind::Double)?.f_mul(&mask)?;
    let entropy = entropy.f_to_kind(Kind::Double)?.f_mul(&mask)?;
    let rows = |v: &'_ [Vec<f32>]| {
        let padded = pad_rows(v[start..end].iter().map(|r| r.as_slice()), len, device)?;
        match batch.response_mask {
            Some(_) => keep_trained(&padded, &mask),
            None => Ok(padded),
        }
    };
    let logp_old = rows(&batch.sampling_logprobs)?;
    let logp_s = match cfg.student_logprobs {
        StudentLogprobs::Current => logp_new.detach(),
        StudentLogprobs::Sampling => logp_old.shallow_clone(),
    };
    let teacher = batch.teacher_logprobs.as_deref().map(rows).transpose()?;
    let delta = match (&teacher, algo) {
        (None, _) => None,
        (Some(t), Algo::Cepo) => {
            let negs = batch
                .teacher_neg_logprobs
                .as_ref()
                .ok_or_else(|| invalid("`cepo` needs teacher_neg_logprobs".into()))?;
            let delta = cepo_delta(cfg, t, &negs[start..end], &logp_s, &mask)?;
            Some(delta.f_mul(&mask)?)
        }
        (Some(t), _) => Some(token_delta(t, &logp_s)?.f_mul(&mask)?),
    };
    let adv: Vec<f64> = batch.advantages[start..end]
        .iter()
        .map(|&a| f64::from(a))
        .collect();
    let adv = Tensor::f_from_slice(&adv)?.f_to_device(device)?;
    let mut credit = update_credit(cfg, algo, &adv, delta.as_ref(), batch.lambda, &mask)?;
    if matches!(algo, Algo::Rlsd | Algo::Cepo) && (cfg.rlsd_negative_only || cfg.rlsd_thought_only)
    {
        let thought = cfg
            .rlsd_thought_only
            .then(|| thought_rows(cfg, &batch.samples[range.clone()], len, device))
            .transpose()?;
        credit.ahat = restrict_reweighting(
            &credit.ahat,
            &adv,
            &mask,
            cfg.rlsd_negative_only,
            thought.as_ref(),
        )?;
    }
    let logp_ref = batch.ref_logprobs.as_deref().map(rows).transpose()?;
    let loss = policy_loss(
        &logp_new,
        &logp_old,
        &credit.ahat,
        &mask,
        logp_ref.as_ref(),
        Some(&entropy),
        cfg,
        norm,
    )?;
    Ok(MicroBatchLoss {
        loss,
        credit,
        delta,
        mask,
        entropy,
    })
}

/// The policy's response log-probs must be `[rows, >= longest response]`.
fn check_shape(size: &[i64], lens: &[usize]) -> Result<()> {
    let max_len = lens.iter().copied().max().unwrap_or(0);
    if size.len() != 2 || size[0] != lens.len() as i64 || (size[1] as usize) < max_len {
        return Err(Error::ShapeMismatch {
            name: "policy response log-probs".into(),
            expected: vec![lens.len() as i64, max_len as i64],
            got: size.to_vec(),
        });
    }
    Ok(())
}

/// CEPO's `delta_t = logp_T - logp_Tneg` per row (`negs`: the teacher given
/// the group's wrong answer, `None` for a group with none), padded to the
/// width of `mask` (the trained tokens; `Tneg` is read only there).
/// A group with no wrong response: GRPO (`delta_t = 0`, its authors'), or
/// with `cepo_fallback = "rlsd"` Tneg is the student (RLSD's credit).
fn cepo_delta(
    cfg: &AlgoConfig,
    teacher: &Tensor,
    negs: &[Option<Vec<f32>>],
    logp_s: &Tensor,
    mask: &Tensor,
) -> Result<Tensor> {
    let device = teacher.device();
    let empty: &[f32] = &[];
    let neg = pad_rows(
        negs.iter().map(|r| r.as_deref().unwrap_or(empty)),
        mask.size()[1] as usize,
        device,
    )?;
    let neg = keep_trained(&neg, mask)?;
    let has: Vec<f64> = negs
        .iter()
        .map(|r| f64::from(u8::from(r.is_some())))
        .collect();
    let has = Tensor::f_from_slice(&has)?
        .f_to_device(device)?
        .f_unsqueeze(-1)?
        .f_gt(0.5)?;
    match cfg.cepo_fallback {
        CepoFallback::Grpo => {
            Ok(token_delta(teacher, &neg)?.f_where_self(&has, &neg.f_zeros_like()?)?)
        }
        CepoFallback::Rlsd => token_delta(teacher, &neg.f_where_self(&has, logp_s)?),
    }
}

/// `[b, L]` 1.0 on the response tokens inside `<thought> ... </thought>`
/// ([`crate::rlsd::thought_span_mask`]) for `rlsd_thought_only`.
fn thought_rows(
    cfg: &AlgoConfig,
    samples: &[crate::policy::PromptResponse],
    len: usize,
    device: Device,
) -> Result<Tensor> {
    let (open, close) = cfg.thought_tag_ids.as_ref().ok_or_else(|| {
        invalid("algo.rlsd_thought_only needs the token ids of <thought> and </thought> (AlgoConfig::thought_tag_ids)".into())
    })?;
    let rows: Vec<Vec<f32>> = samples
        .iter()
        .map(|s| thought_span_mask(&s.response, open, close))
        .collect();
    pad_rows(rows.iter().map(|r| r.as_slice()), len, device)
}

/// Sums over a batch of the per-token and per-step quantities logged in
/// [`crate::stats::StepStats`]; one micro-batch's are added to the step's.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Accum {
    /// The back-propagated loss (policy loss plus the weighted distillation term).
    pub(crate) loss: f64,
    /// The policy-gradient part of the loss.
    pub(crate) pg: f64,
    /// The KL part of the loss.
    pub(crate) kl: f64,
    /// Sum of token entropies.
    pub(crate) entropy: f64,
    /// Sum of `Ahat_t`.
    pub(crate) ahat: f64,
    /// Sum of `|Ahat_t|`.
    pub(crate) ahat_abs: f64,
    /// Sum of `delta_t`.
    pub(crate) delta: f64,
    /// Sum of `|delta_t|`.
    pub(crate) delta_abs: f64,
    /// Sum of the token weights `w_t`.
    pub(crate) weight: f64,
    /// Tokens whose weight was clipped.
    pub(crate) weight_clipped: f64,
    /// Sum of the PPO ratios.
    pub(crate) ratio: f64,
    /// Tokens whose ratio was clipped.
    pub(crate) ratio_clipped: f64,
    /// Tokens hit by the dual clip.
    pub(crate) dual_clipped: f64,
    /// Tokens that have a `delta_t` (a teacher was given).
    pub(crate) delta_tokens: f64,
    /// The distillation term (before `distill_coef`).
    pub(crate) distill: f64,
    /// Tokens whose weight was clipped from below.
    pub(crate) weight_clipped_low: f64,
    /// Tokens whose weight was clipped from above.
    pub(crate) weight_clipped_high: f64,
    /// Sum of `delta_t` on correct responses.
    pub(crate) delta_correct: f64,
    /// Tokens of correct responses.
    pub(crate) tokens_correct: f64,
    /// Sum of `delta_t` on wrong responses.
    pub(crate) delta_wrong: f64,
    /// Tokens of wrong responses.
    pub(crate) tokens_wrong: f64,
}

impl Accum {
    /// The sums in field order (what a data-parallel step all-reduces).
    pub(crate) fn to_vec(self) -> Vec<f64> {
        vec![
            self.loss,
            self.pg,
            self.kl,
            self.entropy,
            self.ahat,
            self.ahat_abs,
            self.delta,
            self.delta_abs,
            self.weight,
            self.weight_clipped,
            self.ratio,
            self.ratio_clipped,
            self.dual_clipped,
            self.delta_tokens,
            self.distill,
            self.weight_clipped_low,
            self.weight_clipped_high,
            self.delta_correct,
            self.tokens_correct,
            self.delta_wrong,
            self.tokens_wrong,
        ]
    }

    /// The inverse of [`Accum::to_vec`].
    pub(crate) fn from_slice(v: &[f64]) -> Accum {
        let [loss, pg, kl, entropy, ahat, ahat_abs, delta, delta_abs, weight, weight_clipped, ratio, ratio_clipped, dual_clipped, delta_tokens, distill, weight_clipped_low, weight_clipped_high, delta_correct, tokens_correct, delta_wrong, tokens_wrong] =
            v[..]
        else {
            panic!("Accum::from_slice needs {} values, got {}", 21, v.len());
        };
        Accum {
            loss,
            pg,
            kl,
            entropy,
            ahat,
            ahat_abs,
            delta,
            delta_abs,
            weight,
            weight_clipped,
            ratio,
            ratio_clipped,
            dual_clipped,
            delta_tokens,
            distill,
            weight_clipped_low,
            weight_clipped_high,
            delta_correct,
            tokens_correct,
            delta_wrong,
            tokens_wrong,
        }
    }

    /// Add another micro-batch's sums.
    pub(crate) fn add(&mut self, o: &Accum) {
        self.loss += o.loss;
        self.pg += o.pg;
        self.kl += o.kl;
        self.entropy += o.entropy;
        self.ahat += o.ahat;
        self.ahat_abs += o.ahat_abs;
        self.delta += o.delta;
        self.delta_abs += o.delta_abs;
        self.weight += o.weight;
        self.weight_clipped += o.weight_clipped;
        self.ratio += o.ratio;
        self.ratio_clipped += o.ratio_clipped;
        self.dual_clipped += o.dual_clipped;
        self.delta_tokens += o.delta_tokens;
        self.distill += o.distill;
        self.weight_clipped_low += o.weight_clipped_low;
        self.weight_clipped_high += o.weight_clipped_high;
        self.delta_correct += o.delta_correct;
        self.tokens_correct += o.tokens_correct;
        self.delta_wrong += o.delta_wrong;
        self.tokens_wrong += o.tokens_wrong;
    }
}

/// One micro-batch's [`Accum`], with one device-to-host copy: `total` is the
/// back-propagated loss (policy loss plus the weighted distillation term),
/// `side` is +1 / -1 per row for correct / wrong responses.
pub(crate) fn logged_parts(
    mb: &MicroBatchLoss,
    total: &Tensor,
    distill: Option<&Tensor>,
    side: &[f64],
    device: Device,
) -> Result<Accum> {
    let MicroBatchLoss {
        loss: pl,
        credit,
        delta,
        mask,
        entropy,
    } = mb;
    let zero = || Tensor::f_zeros([], (Kind::Double, device));
    let sum = |t: &Tensor| t.f_mul(mask)?.f_sum(Kind::Double);
    let abs_sum = |t: &Tensor| t.f_abs()?.f_mul(mask)?.f_sum(Kind::Double);
    let delta_tokens = if delta.is_some() {
        mask.f_sum(Kind::Double)?
    } else {
        zero()?
    };
    let side = Tensor::f_from_slice(side)?
        .f_to_device(device)?
        .f_unsqueeze(-1)?;
    let right = side.f_gt(0.0)?.f_to_kind(Kind::Double)?.f_mul(mask)?;
    let wrong = side.f_lt(0.0)?.f_to_kind(Kind::Double)?.f_mul(mask)?;
    let on = |rows: &Tensor| -> Result<[Tensor; 2]> {
        match delta {
            Some(d) => Ok([
                d.f_mul(rows)?.f_sum(Kind::Double)?,
                rows.f_sum(Kind::Double)?,
            ]),
            None => Ok([zero()?, zero()?]),
        }
    };
    let [d_right, n_right] = on(&right)?;
    let [d_wrong, n_wrong] = on(&wrong)?;
    // Stacked for a single copy to the host; unpacked by name below.
    let parts = [
        total.detach(),
        pl.pg.detach(),
        pl.kl.as_ref().map_or_else(zero, |k| Ok(k.detach()))?,
        sum(&entropy.detach())?,
        sum(&credit.ahat)?,
        abs_sum(&credit.ahat)?,
        delta.as_ref().map_or_else(zero, &sum)?,
        delta.as_ref().map_or_else(zero, &abs_sum)?,
        credit.weights.as_ref().map_or_else(zero, &sum)?,
        credit.weight_clipped.as_ref().map_or_else(zero, &sum)?,
        sum(&pl.tokens.ratio)?,
        sum(&pl.tokens.ratio_clipped)?,
        sum(&pl.tokens.dual_clipped)?,
        delta_tokens,
        distill.map_or_else(zero, |d| Ok(d.detach()))?,
        credit.weight_clipped_low.as_ref().map_or_else(zero, &sum)?,
        credit
            .weight_clipped_high
            .as_ref()
            .map_or_else(zero, &sum)?,
        d_right,
        n_right,
        d_wrong,
        n_wrong,
    ];
    let v = Vec::<f64>::try_from(Tensor::f_stack(&parts, 0)?.f_to_device(Device::Cpu)?)?;
    if v.len() != 21 {
        return Err(invalid(format!("{} logged values, expected 21", v.len())));
    }
    Ok(Accum::from_slice(&v))
}
