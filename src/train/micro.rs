//! How a step splits its samples into micro-batches under a token budget.

use super::TrainBatch;
use crate::policy::PromptResponse;
use std::ops::Range;

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
    }
}
