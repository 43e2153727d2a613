//! The forward and backward of one micro-batch of the train step: the
//! clipped surrogate of [`super::micro_batch_loss`] plus, for the
//! distilling algorithms, the divergence (through the loss closure, or
//! through the chunked scoring's vocabulary hook for OPSD `kl` / `jsd`).

use super::checks::invalid;
use super::distill_loss;
use super::micro_loss::{logged_parts, Accum};
use super::{micro_batch_loss, TrainBatch};
use crate::error::Result;
use crate::model::lora_dropout::train_key;
use crate::optim::OptimConfig;
use crate::policy::{Policy, ResponseScores, ScoreOptions};
use crate::rlsd::distill_vocab::SupportVocabLoss;
use crate::rlsd::{Algo, AlgoConfig, LossNorm};
use std::ops::Range;
use tch::Tensor;

/// What every micro-batch of one step shares.
pub(super) struct MicroStep<'a> {
    /// The update's hyper-parameters.
    pub(super) cfg: &'a AlgoConfig,
    /// The algorithm after the train step's fallbacks.
    pub(super) algo: Algo,
    /// The step's batch (in micro-batch order).
    pub(super) batch: &'a TrainBatch,
    /// The step's loss normaliser (global on a data-parallel rank).
    pub(super) norm: LossNorm,
}

impl MicroStep<'_> {
    /// Forward and backward of `range`, gradients accumulated into the
    /// policy; the micro-batch's logged sums (`loss` non-finite when its
    /// loss was).
    pub(super) fn backward<P: Policy>(
        &self,
        policy: &P,
        optim: &OptimConfig,
        range: Range<usize>,
    ) -> Result<Accum> {
        // Random parts of the forward (LoRA dropout) draw from a key of this
        // step and micro-batch, so the checkpointed backward's recomputation
        // draws the same masks; unset again for anything else.
        policy.set_train_key(Some(train_key(self.batch.step, range.start)));
        let out = self.backward_keyed(policy, optim, range);
        policy.set_train_key(None);
        out
    }

    /// [`MicroStep::backward`] with the key set.
    fn backward_keyed<P: Policy>(
        &self,
        policy: &P,
        optim: &OptimConfig,
        range: Range<usize>,
    ) -> Result<Accum> {
        let (cfg, batch) = (self.cfg, self.batch);
        let opts = ScoreOptions {
            chunk_tokens: optim.logit_chunk_tokens,
            activation_checkpointing: optim.activation_checkpointing,
            share_prompt: optim.share_prompt,
        };
        let chunk = &batch.samples[range.clone()];
        // OPSD kl / jsd: the divergence goes through the chunked scoring's
        // vocabulary hook, not the loss closure (issue 12).
        let vocab_distill = batch.teacher_support.is_some()
            && self.algo.distills()
            && cfg.opsd_loss.needs_distribution();
        let side = self.sides(range.clone());
        let device = policy.device();
        let mut vals: Option<Accum> = None;
        let mut loss_of = |scores: &ResponseScores| -> Result<Option<Tensor>> {
            let v = self.loss(range.clone(), scores, vocab_distill, &side, device)?;
            let (total, v) = v;
            let finite = v.loss.is_finite();
            vals = Some(v);
            Ok(finite.then_some(total))
        };
        match &batch.teacher_support {
            // OPSD kl / jsd: the student's log-probs on the teacher's support
            // are gathered chunk by chunk from the chunked scoring's
            // log-softmax (`SupportVocabLoss`), so no [b, L, V] tensor lives.
            Some(sup) if vocab_distill => {
                let lens: Vec<usize> = chunk.iter().map(|s| s.response.len()).collect();
                let mask = batch.response_mask.as_deref().map(|m| &m[range.clone()]);
                let mut vl = SupportVocabLoss::new_masked(
                    cfg.opsd_loss,
                    &sup[range.clone()],
                    &lens,
                    mask,
                    cfg.loss_agg,
                    self.norm,
                    cfg.distill_coef,
                    device,
                )?;
                policy.backward_scores(
                    chunk,
                    batch.temperature,
                    &opts,
                    &mut loss_of,
                    Some(&mut vl),
                )?;
                if let Some(v) = vals.as_mut() {
                    v.loss += cfg.distill_coef * vl.value();
                    v.distill += vl.value();
                }
            }
            _ => {
                policy.backward_scores(chunk, batch.temperature, &opts, &mut loss_of, None)?;
            }
        }
        vals.ok_or_else(|| invalid("the policy never computed the loss".into()))
    }

    /// Rows of correct / wrong responses (the verdicts, or the sign of `A_i`).
    fn sides(&self, range: Range<usize>) -> Vec<f64> {
        let batch = self.batch;
        range
            .map(|i| match &batch.correct {
                Some(c) => f64::from(u8::from(c[i])) * 2.0 - 1.0,
                None => f64::from(batch.advantages[i]).signum(),
            })
            .collect()
    }

    /// The micro-batch's total loss (surrogate plus `distill_coef` times the
    /// divergence, unless the vocabulary hook adds it) and its logged parts.
    fn loss(
        &self,
        range: Range<usize>,
        scores: &ResponseScores,
        vocab_distill: bool,
        side: &[f64],
        device: tch::Device,
    ) -> Result<(Tensor, Accum)> {
        let (cfg, algo, batch, norm) = (self.cfg, self.algo, self.batch, self.norm);
        let mb = micro_batch_loss(
            cfg,
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
                cfg,
                algo,
                batch,
                range,
                &scores.logprobs,
                None,
                &mb.mask,
                norm,
            )?
        };
        let total = match &distill {
            Some(d) => mb.loss.loss.f_add(&d.f_mul_scalar(cfg.distill_coef)?)?,
            None => mb.loss.loss.shallow_clone(),
        };
        let v = logged_parts(&mb, &total, distill.as_ref(), side, device)?;
        Ok((total, v))
    }
}
