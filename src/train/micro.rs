//! How a step splits its samples into micro-batches under a token budget.

use super::TrainBatch;
use crate::model::shared::TrunkCost;
use crate::policy::PromptResponse;
use std::ops::Range;

/// How a step splits its samples: an order of the samples and micro-batches
/// as ranges over that order. With a token budget (`max_tokens > 0`) the
/// samples are sorted by `prompt + response` length, longest first, and
/// packed greedily while `rows x longest <= max_tokens` (so similar lengths
/// share a padded forward and short responses do not pay for long ones); a
/// sample longer than the budget runs alone. `micro_batch_size > 0` also caps
/// the rows. When everything fits in one micro-batch the order is unchanged.
/// This is [`plan_micro_batches`] without prompt sharing.
pub fn micro_batches(
    samples: &[PromptResponse],
    micro_batch_size: usize,
    max_tokens: usize,
) -> (Vec<usize>, Vec<Range<usize>>) {
    plan_micro_batches(samples, micro_batch_size, max_tokens, false)
}

/// [`micro_batches`] measuring a micro-batch by the positions its trunk pass
/// runs ([`TrunkCost::positions`]): with `share_prompt`, a micro-batch in
/// which a prompt repeats costs `G x P + B x max(1, L - 1)`, so more of a
/// group's responses fit beside one copy of its prompt. Samples are then
/// sorted by response length, longest first (stable: a group's responses of
/// equal length stay together, in batch order); a group cut by the budget
/// runs its prompt once in each micro-batch it spans, which is still exact
/// (the gradients through the prompt add up over micro-batches).
pub fn plan_micro_batches(
    samples: &[PromptResponse],
    micro_batch_size: usize,
    max_tokens: usize,
    share_prompt: bool,
) -> (Vec<usize>, Vec<Range<usize>>) {
    let b = samples.len();
    let cap = if micro_batch_size == 0 {
        b.max(1)
    } else {
        micro_batch_size
    };
    let mut whole = TrunkCost::default();
    samples.iter().for_each(|s| whole.add(s));
    if max_tokens == 0 || (b <= cap && whole.positions(share_prompt) <= max_tokens) {
        let ranges = (0..b).step_by(cap).map(|s| s..(s + cap).min(b)).collect();
        return ((0..b).collect(), ranges);
    }
    let mut order: Vec<usize> = (0..b).collect();
    if share_prompt {
        order.sort_by_key(|&i| std::cmp::Reverse(samples[i].response.len()));
    } else {
        order.sort_by_key(|&i| {
            std::cmp::Reverse(samples[i].prompt.len() + samples[i].response.len())
        });
    }
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut run = TrunkCost::default();
    for (k, &i) in order.iter().enumerate() {
        let mut grown = run.clone();
        grown.add(&samples[i]);
        match ranges.last_mut() {
            Some(r) if r.len() < cap && grown.positions(share_prompt) <= max_tokens => {
                r.end = k + 1;
                run = grown;
            }
            _ => {
                ranges.push(k..k + 1);
                run = TrunkCost::default();
                run.add(&samples[i]);
            }
        }
    }
    (order, ranges)
}

/// `batch` with its samples (and every per-sample vector) in `order`.
pub(super) fn permuted(batch: &TrainBatch, order: &[usize]) -> TrainBatch {
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
        response_mask: batch.response_mask.as_deref().map(|v| pick(v, order)),
    }
}
