//! The train step: forward the policy on prompt + response, take the response
//! tokens' log-probs, compute the RLSD-family loss, back-propagate (with
//! gradient accumulation over micro-batches), clip the gradient norm, AdamW.
//!
//! Garbage in (non-finite log-probs or advantages) and garbage out (a
//! non-finite loss or gradient norm) skip the step: the weights and the
//! optimizer state stay untouched and [`StepStats::skipped`] says so.

use crate::error::{Error, Result};
use crate::optim::{AdamW, OptimConfig};
use crate::policy::{Policy, PromptResponse, ResponseScores, ScoreOptions};
use crate::rlsd::distill_vocab::SupportVocabLoss;
use crate::rlsd::{
    aggregate, policy_loss, support_divergence, token_delta, token_kl, update_credit, Algo,
    AlgoConfig, CepoFallback, LossNorm, OpsdLoss, PolicyLoss, StudentLogprobs, TokenCredit,
    TokenSupport,
};
use crate::stats::StepStats;
use std::ops::Range;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// One batch ready for the optimizer: responses with everything the loss needs.
/// Per-token vectors have exactly the length of their response.
#[derive(Debug, Clone, Default)]
pub struct TrainBatch {
    /// Prompt and response token ids of each sample (`B` of them).
    pub samples: Vec<PromptResponse>,
    /// `logp_old_t`: the sampling log-probs of each response token.
    pub sampling_logprobs: Vec<Vec<f32>>,
    /// `logp_T_t`: the teacher's log-probs (with privileged information). Needed by
    /// rlsd (unless `lambda == 0`), opsd and cepo; for grpo only logged.
    pub teacher_logprobs: Option<Vec<Vec<f32>>>,
    /// CEPO's `logp_Tneg_t` per sample: the teacher given the group's wrong answer;
    /// `None` for a sample whose group has no wrong response (falls back to `logp_S_t`).
    pub teacher_neg_logprobs: Option<Vec<Option<Vec<f32>>>>,
    /// Reference-policy log-probs for the k3 KL term (needed when `kl_coef > 0`).
    pub ref_logprobs: Option<Vec<Vec<f32>>>,
    /// The teacher's next-token distribution at each response position (top-k
    /// plus tail, or the full vocabulary): needed by `opsd_loss = "kl" | "jsd"`.
    pub teacher_support: Option<Vec<TokenSupport>>,
    /// `A_i`: the group-relative advantage of each sample.
    pub advantages: Vec<f32>,
    /// The verifier's verdict per sample, for the delta-on-correct/wrong
    /// statistics; `None`: `A_i > 0` counts as correct, `A_i < 0` as wrong.
    pub correct: Option<Vec<bool>>,
    /// Step number (from 1), for the stats.
    pub step: u64,
    /// Lambda for this step (`rlsd::lambda_at`).
    pub lambda: f64,
    /// Learning rate for this step (`rlsd::lr_at`).
    pub lr: f64,
    /// Sampling temperature; log-probs are taken at the same temperature.
    pub temperature: f64,
}

/// The policy with its optimizer and the update's configuration.
#[derive(Debug)]
pub struct Trainer<P: Policy> {
    /// The model being trained.
    pub policy: P,
    /// AdamW over the policy's trainable variables.
    pub optimizer: AdamW,
    /// The update's hyper-parameters.
    pub algo: AlgoConfig,
    /// Optimizer and micro-batching settings.
    pub optim: OptimConfig,
    /// Steps skipped so far (non-finite inputs, loss or gradient).
    pub skipped_steps: u64,
}

impl<P: Policy> Trainer<P> {
    /// A trainer over `policy`; both configs are validated.
    pub fn new(policy: P, algo: AlgoConfig, optim: OptimConfig) -> Result<Self> {
        algo.validate()?;
        optim.validate()?;
        let optimizer = AdamW::new(policy.var_store(), &optim);
        Ok(Trainer {
            policy,
            optimizer,
            algo,
            optim,
            skipped_steps: 0,
        })
    }
}

/// Sums over the batch of the per-token and per-step quantities logged in
/// [`StepStats`], in this order: loss, pg, kl, entropy, Ahat, |Ahat|, delta,
/// |delta|, w, w clipped, ratio, ratio clipped, dual clipped, tokens with a delta,
/// distill term, w clipped low, w clipped high, delta on correct responses,
/// their tokens, delta on wrong responses, their tokens.
#[derive(Debug, Default)]
struct Accum {
    v: [f64; Accum::N],
}

impl Accum {
    const N: usize = 21;
    fn add(&mut self, vals: &[f64]) {
        for (a, b) in self.v.iter_mut().zip(vals) {
            *a += b;
        }
    }
}

fn invalid(msg: String) -> Error {
    Error::InvalidInput(format!("train_step: {msg}"))
}

/// Check that every per-sample vector has one entry per response token.
fn check_lengths(batch: &TrainBatch) -> Result<()> {
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
    if batch.advantages.len() != b {
        return Err(invalid(format!(
            "{} advantages for {b} samples",
            batch.advantages.len()
        )));
    }
    Ok(())
}

/// Which input, if any, holds a NaN or infinity.
fn non_finite_input(batch: &TrainBatch) -> Option<&'static str> {
    let bad = |v: &[Vec<f32>]| v.iter().flatten().any(|x| !x.is_finite());
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
        if n.iter().flatten().flatten().any(|x| !x.is_finite()) {
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

/// Right-pad rows to `[rows.len(), len]` as f64 on `device`.
fn pad_rows<'a>(
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
fn length_mask(lens: &[usize], len: usize, device: Device) -> Result<Tensor> {
    let mut flat = vec![0f64; lens.len() * len];
    for (i, &l) in lens.iter().enumerate() {
        flat[i * len..i * len + l].fill(1.0);
    }
    Ok(Tensor::f_from_slice(&flat)?
        .f_view([lens.len() as i64, len as i64])?
        .f_to_device(device)?)
}

/// Skip the step: drop gradients, count it, report why.
fn skip<P: Policy>(trainer: &mut Trainer<P>, mut stats: StepStats, reason: String) -> StepStats {
    trainer.optimizer.zero_grad();
    trainer.skipped_steps += 1;
    tracing::warn!(step = stats.step, %reason, "skipping train step");
    stats.skipped = true;
    stats.skip_reason = Some(reason);
    stats.skipped_steps = trainer.skipped_steps;
    stats
}

/// Which credit a step really uses: `cfg.algo`, except that RLSD with
/// `lambda == 0` and no teacher log-probs is run as GRPO (it is exactly GRPO).
/// Errors when the batch lacks what the algorithm needs.
pub fn effective_algo(cfg: &AlgoConfig, batch: &TrainBatch) -> Result<Algo> {
    let algo = match (cfg.algo, &batch.teacher_logprobs) {
        (Algo::Rlsd, None) if batch.lambda == 0.0 => Algo::Grpo,
        (a, None) if a.needs_teacher() => {
            return Err(invalid(format!("`{}` needs teacher_logprobs", a.name())))
        }
        (a, _) => a,
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

impl LossNorm {
    /// The whole batch's response-token and response counts.
    pub fn of_batch(batch: &TrainBatch) -> LossNorm {
        LossNorm {
            total_tokens: batch
                .samples
                .iter()
                .map(|s| s.response.len())
                .sum::<usize>() as f64,
            total_seqs: batch.samples.len() as f64,
        }
    }
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
    /// `[b, L]` response mask (f64).
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
    let max_len = lens.iter().copied().max().unwrap_or(0);
    if size.len() != 2 || size[0] != lens.len() as i64 || (size[1] as usize) < max_len {
        return Err(Error::ShapeMismatch {
            name: "policy response log-probs".into(),
            expected: vec![lens.len() as i64, max_len as i64],
            got: size,
        });
    }
    let device = logp_new.device();
    let len = size[1] as usize;
    let mask = length_mask(&lens, len, device)?;
    let logp_new = logp_new.f_to_kind(Kind::Double)?.f_mul(&mask)?;
    let entropy = entropy.f_to_kind(Kind::Double)?.f_mul(&mask)?;
    let rows =
        |v: &'_ [Vec<f32>]| pad_rows(v[start..end].iter().map(|r| r.as_slice()), len, device);
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
            let negs = &negs[start..end];
            let empty: &[f32] = &[];
            let neg = pad_rows(
                negs.iter().map(|r| r.as_deref().unwrap_or(empty)),
                len,
                device,
            )?;
            let has: Vec<f64> = negs
                .iter()
                .map(|r| f64::from(u8::from(r.is_some())))
                .collect();
            let has = Tensor::f_from_slice(&has)?
                .f_to_device(device)?
                .f_unsqueeze(-1)?
                .f_gt(0.5)?;
            // A group with no wrong response: GRPO (delta_t = 0, its authors'), or
            // with `cepo_fallback = "rlsd"` Tneg is the student (RLSD's credit).
            let delta = match cfg.cepo_fallback {
                CepoFallback::Grpo => {
                    token_delta(t, &neg)?.f_where_self(&has, &neg.f_zeros_like()?)?
                }
                CepoFallback::Rlsd => token_delta(t, &neg.f_where_self(&has, &logp_s)?)?,
            };
            Some(delta.f_mul(&mask)?)
        }
        (Some(t), _) => Some(token_delta(t, &logp_s)?.f_mul(&mask)?),
    };
    let adv: Vec<f64> = batch.advantages[start..end]
        .iter()
        .map(|&a| f64::from(a))
        .collect();
    let adv = Tensor::f_from_slice(&adv)?.f_to_device(device)?;
    let credit = update_credit(cfg, algo, &adv, delta.as_ref(), batch.lambda, &mask)?;
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

/// The values of one micro-batch that [`Accum`] sums, in its order: `total`
/// is the back-propagated loss (policy loss plus the weighted distillation
/// term), `side` is +1 / -1 per row for correct / wrong responses.
/// Index of the distillation term in [`logged_parts`]' vector.
const DISTILL_PART: usize = 14;

fn logged_parts(
    mb: &MicroBatchLoss,
    total: &Tensor,
    distill: Option<&Tensor>,
    side: &[f64],
    device: Device,
) -> Result<Vec<f64>> {
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
    Ok(Vec::<f64>::try_from(
        Tensor::f_stack(&parts, 0)?.f_to_device(Device::Cpu)?,
    )?)
}

/// How a step splits its samples: an order of the samples and micro-batches
/// as ranges over that order. With a token budget (`max_tokens > 0`) the
/// samples are sorted by `prompt + response` length, longest first, and
/// packed greedily while `rows x longest <= max_tokens` (so similar lengths
/// share a padded forward and short responses do not pay for long ones); a
/// sample longer than the budget runs alone. `micro_batch_size > 0` also caps
/// the rows. When everything fits in one micro-batch the order is unchanged.
pub fn micro_batches(
    samples: &[PromptResponse],
    micro_batch_size: usize,
    max_tokens: usize,
) -> (Vec<usize>, Vec<Range<usize>>) {
    let b = samples.len();
    let len = |i: usize| samples[i].prompt.len() + samples[i].response.len();
    let cap = if micro_batch_size == 0 {
        b.max(1)
    } else {
        micro_batch_size
    };
    let longest = (0..b).map(len).max().unwrap_or(0);
    if max_tokens == 0 || (b <= cap && b * longest <= max_tokens) {
        let ranges = (0..b).step_by(cap).map(|s| s..(s + cap).min(b)).collect();
        return ((0..b).collect(), ranges);
    }
    let mut order: Vec<usize> = (0..b).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(len(i)));
    let mut ranges: Vec<Range<usize>> = Vec::new();
    for k in 0..b {
        match ranges.last_mut() {
            // Sorted longest first: a run's first sample is its longest.
            Some(r) if r.len() < cap && (r.len() + 1) * len(order[r.start]) <= max_tokens => {
                r.end = k + 1;
            }
            _ => ranges.push(k..k + 1),
        }
    }
    (order, ranges)
}

/// `batch` with its samples (and every per-sample vector) in `order`.
fn permuted(batch: &TrainBatch, order: &[usize]) -> TrainBatch {
    fn pick<T: Clone>(v: &[T], order: &[usize]) -> Vec<T> {
        order.iter().map(|&i| v[i].clone()).collect()
    }
    TrainBatch {
        samples: pick(&batch.samples, order),
        sampling_logprobs: pick(&batch.sampling_logprobs, order),
        teacher_logprobs: batch.teacher_logprobs.as_deref().map(|v| pick(v, order)),
        teacher_neg_logprobs: batch
            .teacher_neg_logprobs
            .as_deref()
            .map(|v| pick(v, order)),
        ref_logprobs: batch.ref_logprobs.as_deref().map(|v| pick(v, order)),
        teacher_support: batch.teacher_support.as_deref().map(|v| pick(v, order)),
        advantages: pick(&batch.advantages, order),
        correct: batch.correct.as_deref().map(|v| pick(v, order)),
        step: batch.step,
        lambda: batch.lambda,
        lr: batch.lr,
        temperature: batch.temperature,
    }
}

// ---- OPSD distillation term (opsd / sdpo / grpo+opsd with opsd_loss != "pg") ----
// Kept apart from the PPO path so it can be re-plugged into a chunked
// log-prob computation: everything below works per micro-batch and calls the
// pure functions of `rlsd::distill`.

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
/// Aggregated like the policy loss (`loss_agg`, whole-batch `norm`).
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

/// One optimizer step on `batch` (see the module docs). The loss is
/// aggregated with the whole batch's token / sequence counts, so any
/// `micro_batch_size` gives the same update as one big batch.
pub fn train_step<P: Policy>(trainer: &mut Trainer<P>, batch: &TrainBatch) -> Result<StepStats> {
    let started = Instant::now();
    check_lengths(batch)?;
    let cfg = trainer.algo.clone();
    let lens: Vec<usize> = batch.samples.iter().map(|s| s.response.len()).collect();
    let b = batch.samples.len();
    let total_tokens: usize = lens.iter().sum();
    let mut stats = StepStats {
        step: batch.step,
        algo: cfg.algo.name().to_string(),
        skipped_steps: trainer.skipped_steps,
        num_responses: b,
        num_tokens: total_tokens,
        response_len_mean: if b > 0 {
            total_tokens as f64 / b as f64
        } else {
            0.0
        },
        response_len_max: lens.iter().copied().max().unwrap_or(0),
        lambda: batch.lambda,
        lr: batch.lr,
        ..StepStats::default()
    };
    if b > 0 {
        stats.adv_mean = batch.advantages.iter().map(|&a| f64::from(a)).sum::<f64>() / b as f64;
        stats.adv_abs_mean = batch
            .advantages
            .iter()
            .map(|&a| f64::from(a).abs())
            .sum::<f64>()
            / b as f64;
    }
    if let Some(what) = non_finite_input(batch) {
        return Ok(skip(trainer, stats, format!("non-finite values in {what}")));
    }
    if total_tokens == 0 {
        return Ok(skip(trainer, stats, "batch has no response tokens".into()));
    }

    let algo = effective_algo(&cfg, batch)?;
    let norm = LossNorm::of_batch(batch);
    let (order, ranges) = micro_batches(
        &batch.samples,
        trainer.optim.micro_batch_size,
        trainer.optim.max_tokens_per_micro_batch,
    );
    let sorted;
    let batch = if order.iter().enumerate().all(|(i, &o)| i == o) {
        batch
    } else {
        sorted = permuted(batch, &order);
        &sorted
    };
    let opts = ScoreOptions {
        chunk_tokens: trainer.optim.logit_chunk_tokens,
        activation_checkpointing: trainer.optim.activation_checkpointing,
    };
    let device = trainer.policy.device();
    trainer.optimizer.zero_grad();
    let mut acc = Accum::default();
    for range in ranges {
        let chunk = &batch.samples[range.clone()];
        // Rows of correct / wrong responses (the verdicts, or the sign of A_i).
        let side: Vec<f64> = range
            .clone()
            .map(|i| match &batch.correct {
                Some(c) => f64::from(u8::from(c[i])) * 2.0 - 1.0,
                None => f64::from(batch.advantages[i]).signum(),
            })
            .collect();
        let mut vals: Option<Vec<f64>> = None;
        // OPSD kl / jsd: the divergence goes through the chunked scoring's
        // vocabulary hook, not the loss closure (issue 12).
        let vocab_distill = batch.teacher_support.is_some()
            && algo.distills()
            && cfg.opsd_loss.needs_distribution();
        let mut loss_of =
            |scores: &ResponseScores, student_support: Option<&Tensor>| -> Result<Option<Tensor>> {
                let mb = micro_batch_loss(
                    &cfg,
                    algo,
                    batch,
                    range.clone(),
                    &scores.logprobs,
                    &scores.entropy,
                    norm,
                )?;
                let distill = if vocab_distill {
                    None
                } else {
                    distill_loss(
                        &cfg,
                        algo,
                        batch,
                        range.clone(),
                        &scores.logprobs,
                        student_support,
                        &mb.mask,
                        norm,
                    )?
                };
                let total = match &distill {
                    Some(d) => mb.loss.loss.f_add(&d.f_mul_scalar(cfg.distill_coef)?)?,
                    None => mb.loss.loss.shallow_clone(),
                };
                let v = logged_parts(&mb, &total, distill.as_ref(), &side, device)?;
                let finite = v[0].is_finite();
                vals = Some(v);
                Ok(finite.then_some(total))
            };
        match &batch.teacher_support {
            // OPSD kl / jsd: the student's log-probs on the teacher's support
            // are gathered chunk by chunk from the chunked scoring's
            // log-softmax (`SupportVocabLoss`), so no [b, L, V] tensor lives.
            Some(sup) if vocab_distill => {
                let lens: Vec<usize> = chunk.iter().map(|s| s.response.len()).collect();
                let mut vl = SupportVocabLoss::new(
                    cfg.opsd_loss,
                    &sup[range.clone()],
                    &lens,
                    cfg.loss_agg,
                    norm,
                    cfg.distill_coef,
                    device,
                )?;
                trainer.policy.backward_scores(
                    chunk,
                    batch.temperature,
                    &opts,
                    &mut |s: &ResponseScores| loss_of(s, None),
                    Some(&mut vl),
                )?;
                if let Some(v) = vals.as_mut() {
                    v[0] += cfg.distill_coef * vl.value();
                    v[DISTILL_PART] += vl.value();
                }
            }
            _ => {
                trainer.policy.backward_scores(
                    chunk,
                    batch.temperature,
                    &opts,
                    &mut |s: &ResponseScores| loss_of(s, None),
                    None,
                )?;
            }
        }
        let vals = vals.ok_or_else(|| invalid("the policy never computed the loss".into()))?;
        if !vals[0].is_finite() {
            return Ok(skip(trainer, stats, format!("non-finite loss {}", vals[0])));
        }
        acc.add(&vals);
    }
    let grad_norm = trainer
        .optimizer
        .clip_grad_norm(trainer.optim.max_grad_norm)?;
    stats.grad_norm = grad_norm;
    if !grad_norm.is_finite() {
        return Ok(skip(
            trainer,
            stats,
            format!("non-finite gradient norm {grad_norm}"),
        ));
    }
    trainer.optimizer.step(batch.lr)?;
    trainer.optimizer.zero_grad();

    let [loss, pg, kl, ent, ahat, ahat_abs, delta, delta_abs, w, w_clip, ratio, ratio_clip, dual, delta_tokens, distill, w_low, w_high, d_right, n_right, d_wrong, n_wrong] =
        acc.v;
    let n = total_tokens as f64;
    stats.loss = loss;
    stats.pg_loss = pg;
    stats.kl = kl;
    stats.entropy = ent / n;
    stats.ahat_mean = ahat / n;
    stats.ahat_abs_mean = ahat_abs / n;
    if delta_tokens > 0.0 {
        stats.delta_mean = delta / delta_tokens;
        stats.delta_abs_mean = delta_abs / delta_tokens;
    }
    if matches!(algo, Algo::Rlsd | Algo::Cepo) {
        stats.weight_mean = w / n;
        stats.weight_clip_frac = w_clip / n;
        stats.weight_clip_low_frac = w_low / n;
        stats.weight_clip_high_frac = w_high / n;
    }
    stats.distill_loss = distill;
    if n_right > 0.0 {
        stats.delta_mean_correct = d_right / n_right;
    }
    if n_wrong > 0.0 {
        stats.delta_mean_wrong = d_wrong / n_wrong;
    }
    stats.ratio_mean = ratio / n;
    stats.ratio_clip_frac = ratio_clip / n;
    stats.dual_clip_frac = dual / n;
    stats.timings.train_s = started.elapsed().as_secs_f64();
    Ok(stats)
}
