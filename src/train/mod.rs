//! The train step: forward the policy on prompt + response, take the response
//! tokens' log-probs, compute the RLSD-family loss, back-propagate (with
//! gradient accumulation over micro-batches), clip the gradient norm, AdamW.
//!
//! Garbage in (non-finite log-probs or advantages) and garbage out (a
//! non-finite loss or gradient norm) skip the step: the weights and the
//! optimizer state stay untouched and [`StepStats::skipped`] says so.

//!
//! Layout: `checks` (input checks, [`effective_algo`]), `micro_loss` (one
//! micro-batch's credit and loss, the logged sums), `micro_distill` (the
//! OPSD distillation term), `micro` (token-budget micro-batches),
//! `micro_step` (one micro-batch's forward and backward), [`sync`] (the
//! data-parallel seam), and here the step itself.
//!
//! Data-parallel seam: a [`Trainer`] with a `grad_sync`
//! ([`GradSync`]) normalises the loss by the global batch and
//! sums the gradients over ranks after every micro-batch's backward and
//! before clipping and AdamW (see [`sync`]).

mod checks;
mod micro;
mod micro_distill;
mod micro_loss;
mod micro_step;
pub mod sync;

pub use checks::effective_algo;
pub use micro::{micro_batches, plan_micro_batches};
pub use micro_distill::{distill_loss, support_tensors};
pub use micro_loss::{micro_batch_loss, MicroBatchLoss};
pub use sync::GradSync;

use crate::error::Result;
use crate::model::shared::TrunkCost;
use crate::optim::{AdamW, OptimConfig};
use crate::policy::{Policy, PromptResponse};
use crate::rlsd::{Algo, AlgoConfig, LossNorm, TokenSupport};
use crate::stats::StepStats;
use checks::{check_lengths, non_finite_input};
use micro::permuted;
use micro_loss::Accum;
use micro_step::MicroStep;
use std::time::Instant;

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
    /// Per-sample loss mask over the response tokens (one value per token):
    /// 1 on the model's tokens, 0 on environment / tool tokens inside a
    /// multi-turn response ([`crate::env::Episode::response_loss_mask`]).
    /// Masked tokens stay in the context but get no loss, no advantage, no
    /// credit and do not count in the loss normaliser; their log-probs are
    /// never read. `None`: every response token is the model's.
    pub response_mask: Option<Vec<Vec<f32>>>,
}

impl TrainBatch {
    /// The whole batch's response-token and response counts (the loss
    /// normaliser of a one-rank step).
    /// Environment tokens ([`TrainBatch::response_mask`]) are not counted.
    pub fn loss_norm(&self) -> LossNorm {
        match &self.response_mask {
            None => LossNorm::of_lengths(self.samples.iter().map(|s| s.response.len())),
            Some(m) => LossNorm {
                total_tokens: m.iter().flatten().map(|&x| f64::from(x)).sum(),
                total_seqs: self.samples.len() as f64,
            },
        }
    }

    /// Whether response token `j` of sample `i` is trained (the model's).
    pub fn is_trained(&self, i: usize, j: usize) -> bool {
        self.response_mask
            .as_ref()
            .and_then(|m| m.get(i)?.get(j).copied())
            .is_none_or(|x| x != 0.0)
    }
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
    /// Data-parallel runs: sums the loss normaliser, the gradients and the
    /// logged sums over ranks ([`GradSync`]); `None` on one rank.
    pub grad_sync: Option<Box<dyn GradSync>>,
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
            grad_sync: None,
        })
    }
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

/// One optimizer step on `batch` (see the module docs). The loss is
/// aggregated with the whole batch's token / sequence counts, so any
/// `micro_batch_size` gives the same update as one big batch.
///
/// Agree on the normaliser, backward each micro-batch, reduce over ranks,
/// clip, step.
pub fn train_step<P: Policy>(trainer: &mut Trainer<P>, batch: &TrainBatch) -> Result<StepStats> {
    let started = Instant::now();
    check_lengths(batch)?;
    let mut stats = initial_stats(trainer, batch);
    let norm = match agree_on_norm(trainer, batch, &mut stats)? {
        Ok(norm) => norm,
        Err(reason) => return Ok(skip(trainer, stats, reason)),
    };
    let cfg = trainer.algo.clone();
    let algo = effective_algo(&cfg, batch)?;
    let (order, ranges) = plan_micro_batches(
        &batch.samples,
        trainer.optim.micro_batch_size,
        trainer.optim.max_tokens_per_micro_batch,
        trainer.optim.share_prompt,
    );
    stats.train_positions = train_positions(batch, &order, &ranges, trainer.optim.share_prompt);
    let sorted;
    let batch = if order.iter().enumerate().all(|(i, &o)| i == o) {
        batch
    } else {
        sorted = permuted(batch, &order);
        &sorted
    };
    trainer.optimizer.zero_grad();
    let mut acc = Accum::default();
    let mut bad_loss = None;
    for range in ranges {
        let step = MicroStep {
            cfg: &cfg,
            algo,
            batch,
            norm,
        };
        let vals = step.backward(&trainer.policy, &trainer.optim, range)?;
        if !vals.loss.is_finite() {
            if trainer.grad_sync.is_none() {
                let reason = format!("non-finite loss {}", vals.loss);
                return Ok(skip(trainer, stats, reason));
            }
            // Data-parallel: the other ranks wait in the reduction below.
            bad_loss = Some(vals.loss);
            break;
        }
        acc.add(&vals);
    }
    let n = match reduce_over_ranks(trainer, batch, norm, bad_loss, &mut acc, &mut stats)? {
        Ok(n) => n,
        Err(reason) => return Ok(skip(trainer, stats, reason)),
    };
    let grad_norm = trainer
        .optimizer
        .clip_grad_norm(trainer.optim.max_grad_norm)?;
    stats.grad_norm = grad_norm;
    if !grad_norm.is_finite() {
        let reason = format!("non-finite gradient norm {grad_norm}");
        return Ok(skip(trainer, stats, reason));
    }
    trainer.optimizer.step(batch.lr)?;
    trainer.optimizer.zero_grad();
    fill_from_sums(&mut stats, &acc, algo, n);
    stats.timings.train_s = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// The stats a step knows before its forward: the batch's counts, lengths,
/// advantages, lambda and learning rate.
fn initial_stats<P: Policy>(trainer: &Trainer<P>, batch: &TrainBatch) -> StepStats {
    let lens: Vec<usize> = batch.samples.iter().map(|s| s.response.len()).collect();
    let b = batch.samples.len();
    let total_tokens: usize = lens.iter().sum();
    let mut stats = StepStats {
        step: batch.step,
        algo: trainer.algo.algo.name().to_string(),
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
        let adv = batch.advantages.iter().map(|&a| f64::from(a));
        stats.adv_mean = adv.clone().sum::<f64>() / b as f64;
        stats.adv_abs_mean = adv.map(f64::abs).sum::<f64>() / b as f64;
    }
    stats
}

/// The loss normaliser of the step (the global batch's on a data-parallel
/// rank, where every rank takes the same decision, [`sync`]), or why the
/// step is skipped (non-finite inputs, no response tokens).
fn agree_on_norm<P: Policy>(
    trainer: &mut Trainer<P>,
    batch: &TrainBatch,
    stats: &mut StepStats,
) -> Result<std::result::Result<LossNorm, String>> {
    let mut norm = batch.loss_norm();
    let agreed = Instant::now();
    if let Some(sync) = trainer.grad_sync.as_mut() {
        let (global, bad) = self::sync::agree(sync.as_mut(), norm, non_finite_input(batch))?;
        norm = global;
        stats.timings.collective_s = agreed.elapsed().as_secs_f64();
        if let Some(reason) = bad {
            return Ok(Err(reason));
        }
    } else if let Some(what) = non_finite_input(batch) {
        return Ok(Err(format!("non-finite values in {what}")));
    }
    if norm.total_tokens == 0.0 {
        return Ok(Err("batch has no response tokens".into()));
    }
    Ok(Ok(norm))
}

/// Positions the train step's forwards run over (the shared prompt counted
/// once per micro-batch where it is shared).
fn train_positions(
    batch: &TrainBatch,
    order: &[usize],
    ranges: &[std::ops::Range<usize>],
    share_prompt: bool,
) -> usize {
    ranges
        .iter()
        .map(|r| {
            let mut cost = TrunkCost::default();
            r.clone().for_each(|k| cost.add(&batch.samples[order[k]]));
            cost.positions(share_prompt)
        })
        .sum()
}

/// On a data-parallel rank, sum the gradients and the logged sums over
/// ranks (a rank's non-finite loss skips the step everywhere). The token
/// count the step's means divide by, or why the step is skipped.
fn reduce_over_ranks<P: Policy>(
    trainer: &mut Trainer<P>,
    batch: &TrainBatch,
    norm: LossNorm,
    bad_loss: Option<f64>,
    acc: &mut Accum,
    stats: &mut StepStats,
) -> Result<std::result::Result<f64, String>> {
    let Some(sync) = trainer.grad_sync.as_mut() else {
        return Ok(Ok(norm.total_tokens));
    };
    let t0 = Instant::now();
    let params = trainer.optimizer.parameters();
    let mut sums = acc.to_vec();
    self::sync::reduce_step(sync.as_mut(), &params, &mut sums, bad_loss, stats, batch)?;
    *acc = Accum::from_slice(&sums);
    stats.timings.collective_s += t0.elapsed().as_secs_f64();
    if stats.skipped {
        let reason = stats.skip_reason.take().unwrap_or_default();
        stats.skipped = false;
        return Ok(Err(reason));
    }
    Ok(Ok(norm.total_tokens))
}

/// The step's means and fractions from the summed [`Accum`] over
/// `n` response tokens (the global count on a data-parallel rank).
fn fill_from_sums(stats: &mut StepStats, acc: &Accum, algo: Algo, n: f64) {
    stats.loss = acc.loss;
    stats.pg_loss = acc.pg;
    stats.kl = acc.kl;
    stats.entropy = acc.entropy / n;
    stats.ahat_mean = acc.ahat / n;
    stats.ahat_abs_mean = acc.ahat_abs / n;
    if acc.delta_tokens > 0.0 {
        stats.delta_mean = acc.delta / acc.delta_tokens;
        stats.delta_abs_mean = acc.delta_abs / acc.delta_tokens;
    }
    if matches!(algo, Algo::Rlsd | Algo::Cepo) {
        stats.weight_mean = acc.weight / n;
        stats.weight_clip_frac = acc.weight_clipped / n;
        stats.weight_clip_low_frac = acc.weight_clipped_low / n;
        stats.weight_clip_high_frac = acc.weight_clipped_high / n;
    }
    stats.distill_loss = acc.distill;
    if acc.tokens_correct > 0.0 {
        stats.delta_mean_correct = acc.delta_correct / acc.tokens_correct;
    }
    if acc.tokens_wrong > 0.0 {
        stats.delta_mean_wrong = acc.delta_wrong / acc.tokens_wrong;
    }
    stats.ratio_mean = acc.ratio / n;
    stats.ratio_clip_frac = acc.ratio_clipped / n;
    stats.dual_clip_frac = acc.dual_clipped / n;
}
