//! The OPSD `kl` / `jsd` term through the chunked scoring's vocabulary hook
//! (`SupportVocabLoss`) equals the unchunked path (the student's log-probs on
//! the teacher's support from one `[B, L, V]` forward, then the aggregated
//! divergence): same value, same parameter gradients, for top-k and full
//! supports, both aggregations, and chunks smaller than the batch.

#[path = "common/distill.rs"]
mod distill;

use distill::{rollout, support_divergence_of, T};
use rlsd::model::{teacher_support, Config, LoadedModel};
use rlsd::policy::{Policy, PromptResponse, ResponseScores, ScoreOptions};
use rlsd::rlsd::distill_vocab::SupportVocabLoss;
use rlsd::rlsd::{aggregate, LossAgg, LossNorm, OpsdLoss, TokenSupport};
use tch::{Device, Kind, Tensor};

fn setup(k: usize) -> (LoadedModel, Vec<PromptResponse>, Vec<TokenSupport>) {
    let student = LoadedModel::random(Config::tiny(), Device::Cpu, 1).unwrap();
    let teacher = LoadedModel::random(Config::tiny(), Device::Cpu, 2).unwrap();
    let prompts: Vec<Vec<i64>> = vec![vec![5, 9, 11], vec![5, 9, 11], vec![20, 21], vec![7]];
    let r = rollout(&student, prompts, 7, 3);
    let support = teacher_support(&teacher.lm, &r.teacher_prompts, &r.responses, T, k).unwrap();
    let batch = r
        .prompts
        .into_iter()
        .zip(r.responses)
        .map(|(prompt, response)| PromptResponse {
            prompt,
            response,
            image_key: 0,
        })
        .collect();
    (student, batch, support)
}

fn grads(m: &LoadedModel) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> =
        m.vs.variables()
            .into_iter()
            .map(|(n, t)| (n, t.grad().copy()))
            .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn zero_grads(m: &LoadedModel) {
    for (_, t) in m.vs.variables() {
        let mut g = t.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
}

/// `coef * agg(D)` the unchunked way; returns (value without coef, grads).
fn unchunked(
    m: &LoadedModel,
    batch: &[PromptResponse],
    sup: &[TokenSupport],
    form: OpsdLoss,
    agg: LossAgg,
    norm: LossNorm,
    coef: f64,
) -> (f64, Vec<(String, Tensor)>) {
    zero_grads(m);
    let (d, mask) = support_divergence_of(m, batch, sup, form);
    let value = aggregate(&(d * &mask), &mask, agg, norm).unwrap();
    (&value * coef).backward();
    (f64::try_from(&value).unwrap(), grads(m))
}

#[allow(clippy::too_many_arguments)]
fn chunked(
    m: &LoadedModel,
    batch: &[PromptResponse],
    sup: &[TokenSupport],
    form: OpsdLoss,
    agg: LossAgg,
    norm: LossNorm,
    coef: f64,
    chunk_tokens: usize,
) -> (f64, Vec<(String, Tensor)>) {
    zero_grads(m);
    let lens: Vec<usize> = batch.iter().map(|s| s.response.len()).collect();
    let mut vl = SupportVocabLoss::new(form, sup, &lens, agg, norm, coef, Device::Cpu).unwrap();
    let opts = ScoreOptions {
        chunk_tokens,
        ..ScoreOptions::default()
    };
    // The policy-gradient part is zero here: only the hook's term moves weights.
    let mut zero = |s: &ResponseScores| Ok(Some(s.logprobs.sum(Kind::Float) * 0.0));
    assert!(m
        .backward_scores(batch, T, &opts, &mut zero, Some(&mut vl))
        .unwrap());
    (vl.value(), grads(m))
}

#[test]
fn chunked_support_divergence_equals_the_unchunked_path() {
    for k in [8usize, 0] {
        let (m, batch, sup) = setup(k);
        let n: usize = batch.iter().map(|s| s.response.len()).sum();
        assert!(n > 6, "want several chunks, got {n} tokens");
        // The norm of a larger batch, as in a micro-batch of a step.
        let norm = LossNorm {
            total_tokens: n as f64 + 5.0,
            total_seqs: batch.len() as f64 + 1.0,
        };
        for form in [OpsdLoss::Kl, OpsdLoss::Jsd] {
            for agg in [LossAgg::TokenMean, LossAgg::SeqMeanTokenMean] {
                let (v0, g0) = unchunked(&m, &batch, &sup, form, agg, norm, 0.7);
                for chunk in [3usize, 1 << 20] {
                    let (v1, g1) = chunked(&m, &batch, &sup, form, agg, norm, 0.7, chunk);
                    assert!(
                        (v0 - v1).abs() <= 1e-6 * v0.abs().max(1.0),
                        "k {k} {form:?} {agg:?} chunk {chunk}: value {v0} vs {v1}"
                    );
                    assert!(v0 > 0.0, "the divergence of two random models is positive");
                    for ((name, a), (_, b)) in g0.iter().zip(&g1) {
                        let scale = f64::try_from(a.abs().max()).unwrap().max(1e-6);
                        let diff = f64::try_from((a - b).abs().max()).unwrap();
                        assert!(
                            diff <= 1e-4 * scale,
                            "k {k} {form:?} {agg:?} chunk {chunk}: grad of {name} differs by {diff} (scale {scale})"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn support_vocab_loss_rejects_bad_input() {
    let (_, batch, sup) = setup(8);
    let lens: Vec<usize> = batch.iter().map(|s| s.response.len()).collect();
    let norm = LossNorm {
        total_tokens: 1.0,
        total_seqs: 1.0,
    };
    let e = SupportVocabLoss::new(
        OpsdLoss::TokenKl,
        &sup,
        &lens,
        LossAgg::TokenMean,
        norm,
        1.0,
        Device::Cpu,
    )
    .unwrap_err();
    assert!(e.to_string().contains("token-kl"), "{e}");
    let e = SupportVocabLoss::new(
        OpsdLoss::Kl,
        &sup[..1],
        &lens,
        LossAgg::TokenMean,
        norm,
        1.0,
        Device::Cpu,
    )
    .unwrap_err();
    assert!(e.to_string().contains("1 supports for 4 responses"), "{e}");
}
