//! The memory-bounded paths equal the plain computation: chunked log-probs,
//! entropies and their gradients against a full `[B, S, V]` log-softmax
//! written out here; checkpointed layers against the plain backward; the
//! vocabulary-loss hook; token-budget teacher passes; the micro-batch plan.

#[path = "common/grads.rs"]
mod grads;

use grads::take_grads;
use rlsd::model::{token_logprobs, token_logprobs_by_prompt_within, Config, LoadedModel};
use rlsd::policy::{Policy, PromptResponse, ResponseScores, ScoreOptions, VocabLoss};
use rlsd::train::micro_batches;
use std::collections::BTreeMap;
use std::ops::Range;
use tch::{Device, Kind, Tensor};

const T: f64 = 0.7;

fn model(tied: bool) -> LoadedModel {
    let cfg = Config {
        tie_word_embeddings: tied,
        vocab_size: 96,
        ..Config::tiny()
    };
    LoadedModel::random(cfg, Device::Cpu, 5).unwrap()
}

/// Uneven lengths, so padding and chunk edges fall mid-response.
fn batch() -> Vec<PromptResponse> {
    let s = |p: &[i64], r: &[i64]| PromptResponse {
        image_key: 0,
        prompt: p.to_vec(),
        response: r.to_vec(),
    };
    vec![
        s(&[3, 4, 5], &[10, 11, 12, 13, 14, 15, 16]),
        s(&[7], &[20]),
        s(&[8, 9], &[30, 31, 32, 33]),
        s(&[1, 2, 3, 4, 5, 6], &[40, 41, 95]),
    ]
}

/// Fixed per-token weights `[B, L]` of the test loss.
fn weights(b: i64, l: i64, seed: i64) -> Tensor {
    Tensor::arange(b * l, (Kind::Float, Device::Cpu))
        .view([b, l])
        .f_mul_scalar(0.37 * seed as f64)
        .unwrap()
        .sin()
}

/// The reference: logits of every position, full log-softmax, gathered.
fn full_scores(m: &LoadedModel, batch: &[PromptResponse]) -> (Tensor, Tensor) {
    let l = batch.iter().map(|p| p.response.len()).max().unwrap() as i64;
    let (mut lps, mut ents) = (Vec::new(), Vec::new());
    for pr in batch {
        let ids: Vec<i64> = [pr.prompt.as_slice(), &pr.response].concat();
        let n = ids.len() as i64;
        let logits =
            m.lm.forward_all(&Tensor::from_slice(&ids).view([1, n]), None)
                .unwrap();
        let logp = (logits.squeeze_dim(0) / T).log_softmax(-1, Kind::Float);
        let p = pr.prompt.len() as i64;
        let r = pr.response.len() as i64;
        let rows = logp.narrow(0, p - 1, r);
        let targets = Tensor::from_slice(&pr.response).view([r, 1]);
        let lp = rows.gather(1, &targets, false).view([r]);
        let ent = -(rows.exp() * &rows).sum_dim_intlist(-1, false, Kind::Float);
        let pad = Tensor::zeros([l - r], (Kind::Float, Device::Cpu));
        lps.push(Tensor::cat(&[lp, pad.shallow_clone()], 0));
        ents.push(Tensor::cat(&[ent, pad], 0));
    }
    (Tensor::stack(&lps, 0), Tensor::stack(&ents, 0))
}

fn test_loss(s: &ResponseScores) -> Tensor {
    let (b, l) = (s.logprobs.size()[0], s.logprobs.size()[1]);
    (&s.logprobs * weights(b, l, 1) + &s.entropy * weights(b, l, 2)).sum(Kind::Float)
}

fn assert_grads_close(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>, what: &str) {
    for (name, ga) in a {
        let gb = &b[name];
        let scale = ga.abs().max().double_value(&[]).max(1e-6);
        let d = (ga - gb).abs().max().double_value(&[]);
        assert!(
            d <= 1e-4 * scale,
            "{what}: {name} differs by {d} (scale {scale})"
        );
    }
}

/// A full-vocabulary term: `c * sum_t sum_v exp(logp_tv) * logp_tv[v]` weighted
/// by a fixed per-vocabulary vector, over tokens numbered row-major.
struct Hook {
    seen: Vec<Range<usize>>,
}

fn hook_weights(v: i64) -> Tensor {
    Tensor::arange(v, (Kind::Float, Device::Cpu))
        .f_mul_scalar(0.11)
        .unwrap()
        .cos()
}

impl VocabLoss for Hook {
    fn chunk_loss(&mut self, tokens: Range<usize>, logp: &Tensor) -> rlsd::Result<Option<Tensor>> {
        self.seen.push(tokens);
        let v = logp.size()[1];
        Ok(Some((logp * hook_weights(v)).sum(Kind::Float) * 0.05))
    }
}

#[test]
fn chunked_values_equal_the_full_log_softmax() {
    for tied in [true, false] {
        let m = model(tied);
        let (lp, ent) = tch::no_grad(|| full_scores(&m, &batch()));
        let s = tch::no_grad(|| m.response_scores(&batch(), T)).unwrap();
        let d_lp = (&s.logprobs - &lp).abs().max().double_value(&[]);
        let d_ent = (&s.entropy - &ent).abs().max().double_value(&[]);
        assert!(d_lp < 1e-5 && d_ent < 1e-5, "tied {tied}: {d_lp} {d_ent}");
        // The teacher pass's shared-prompt path, whole and split by a token budget.
        let prompts: Vec<Vec<i64>> = vec![vec![3, 4, 5]; 4];
        let responses: Vec<Vec<i64>> = batch().into_iter().map(|p| p.response).collect();
        let want = token_logprobs(&m.lm, &prompts, &responses, T).unwrap();
        for budget in [0, 1, 12, 20] {
            let got =
                token_logprobs_by_prompt_within(&m.lm, &prompts, &responses, T, budget).unwrap();
            for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                assert!((g - w).abs() < 1e-5, "budget {budget}: {g} vs {w}");
            }
            assert_eq!(got.iter().map(Vec::len).sum::<usize>(), 15);
        }
    }
}

#[test]
fn chunked_and_checkpointed_gradients_equal_the_full_path() {
    for tied in [true, false] {
        let m = model(tied);
        let (lp, ent) = full_scores(&m, &batch());
        let reference = ResponseScores {
            logprobs: lp,
            entropy: ent,
            mask: Tensor::zeros([1], (Kind::Float, Device::Cpu)),
        };
        test_loss(&reference).backward();
        let want = take_grads(&m);
        for (chunk, ckpt) in [(0, false), (1, false), (4, false), (6, true), (0, true)] {
            let opts = ScoreOptions {
                chunk_tokens: chunk,
                activation_checkpointing: ckpt,
                ..ScoreOptions::default()
            };
            let ran = m
                .backward_scores(&batch(), T, &opts, &mut |s| Ok(Some(test_loss(s))), None)
                .unwrap();
            assert!(ran);
            assert_grads_close(
                &want,
                &take_grads(&m),
                &format!("tied {tied} chunk {chunk} ckpt {ckpt}"),
            );
        }
        // A loss of `None` stops before any backward.
        let ran = m
            .backward_scores(
                &batch(),
                T,
                &ScoreOptions::default(),
                &mut |_| Ok(None),
                None,
            )
            .unwrap();
        assert!(!ran);
        assert!(take_grads(&m)
            .values()
            .all(|g| !g.defined() || g.abs().max().double_value(&[]) == 0.0));
    }
}

#[test]
fn vocab_loss_hook_adds_its_gradient_chunk_by_chunk() {
    let m = model(false);
    // Reference: the full log-softmax of the response positions with the hook's term.
    let mut rows = Vec::new();
    for pr in batch() {
        let ids: Vec<i64> = [pr.prompt.as_slice(), &pr.response].concat();
        let n = ids.len() as i64;
        let logits =
            m.lm.forward_all(&Tensor::from_slice(&ids).view([1, n]), None)
                .unwrap();
        let logp = (logits.squeeze_dim(0) / T).log_softmax(-1, Kind::Float);
        rows.push(logp.narrow(0, pr.prompt.len() as i64 - 1, pr.response.len() as i64));
    }
    let all = Tensor::cat(&rows, 0);
    let (lp, ent) = full_scores(&m, &batch());
    let reference = ResponseScores {
        logprobs: lp,
        entropy: ent,
        mask: Tensor::zeros([1], (Kind::Float, Device::Cpu)),
    };
    let hook_term = (&all * hook_weights(96)).sum(Kind::Float) * 0.05;
    (test_loss(&reference) + hook_term).backward();
    let want = take_grads(&m);
    for (chunk, ckpt) in [(0, false), (4, true)] {
        let mut hook = Hook { seen: Vec::new() };
        let opts = ScoreOptions {
            chunk_tokens: chunk,
            activation_checkpointing: ckpt,
            ..ScoreOptions::default()
        };
        m.backward_scores(
            &batch(),
            T,
            &opts,
            &mut |s| Ok(Some(test_loss(s))),
            Some(&mut hook),
        )
        .unwrap();
        assert_grads_close(&want, &take_grads(&m), &format!("hook chunk {chunk}"));
        // The chunks cover the 15 response tokens once, in order.
        let covered: Vec<usize> = hook.seen.iter().flat_map(|r| r.clone()).collect();
        assert_eq!(covered, (0..15).collect::<Vec<_>>());
        if chunk == 4 {
            assert_eq!(hook.seen.len(), 4);
        }
    }
}

#[test]
fn micro_batch_plan_sorts_and_packs_under_the_budget() {
    let s = |p: usize, r: usize| PromptResponse {
        image_key: 0,
        prompt: vec![1; p],
        response: vec![2; r],
    };
    // Lengths (prompt + response): 12, 3, 30, 7, 10.
    let samples = vec![s(2, 10), s(1, 2), s(5, 25), s(3, 4), s(4, 6)];
    // No budget: the order is kept; micro_batch_size 2 cuts it.
    let (order, ranges) = micro_batches(&samples, 2, 0);
    assert_eq!(order, vec![0, 1, 2, 3, 4]);
    assert_eq!(ranges, vec![0..2, 2..4, 4..5]);
    // Everything fits (5 x 30 = 150): one micro-batch, order kept.
    let (order, ranges) = micro_batches(&samples, 0, 150);
    assert_eq!(order, vec![0, 1, 2, 3, 4]);
    assert_eq!(ranges, vec![0..5]);
    // Budget 30: sorted 30 | 12, 10 (2 x 12 = 24; a third would be 36) | 7, 3.
    let (order, ranges) = micro_batches(&samples, 0, 30);
    assert_eq!(order, vec![2, 0, 4, 3, 1]);
    assert_eq!(ranges, vec![0..1, 1..3, 3..5]);
    // Budget below the longest sample: it runs alone; the rows cap applies too.
    let (order, ranges) = micro_batches(&samples, 1, 20);
    assert_eq!(order, vec![2, 0, 4, 3, 1]);
    assert_eq!(ranges, vec![0..1, 1..2, 2..3, 3..4, 4..5]);
}
