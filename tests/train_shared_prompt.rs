//! A group's prompt run once in the train step (`optim.share_prompt`,
//! `model::shared`) gives the plain per-row computation's scores, loss and
//! gradients: on the golden fixtures (Llama, Qwen2, Qwen3) and a random
//! Qwen2, in float32 and float64, with chunked heads, checkpointed layers,
//! the vocabulary hook and the token budget; and the planner's cost and
//! packing, by hand.

#[path = "common/grads.rs"]
mod grads;

use grads::take_grads;
use rlsd::model::{shares_prompt, trunk_positions, Config, LoadedModel};
use rlsd::optim::OptimConfig;
use rlsd::policy::{Policy, PromptResponse, ResponseScores, ScoreOptions, VocabLoss};
use rlsd::rlsd::AlgoConfig;
use rlsd::train::{plan_micro_batches, train_step, TrainBatch, Trainer};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const T: f64 = 0.9;

/// [`take_grads`] in float64, for comparisons across float32 and float64 runs.
fn take_grads_f64(m: &LoadedModel) -> BTreeMap<String, Tensor> {
    take_grads(m)
        .into_iter()
        .map(|(n, g)| (n, g.to_kind(Kind::Double)))
        .collect()
}

fn fixture(name: &str, kind: Kind) -> LoadedModel {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name);
    LoadedModel::load(&dir, Device::Cpu, kind).unwrap()
}

fn random(kind: Kind) -> LoadedModel {
    let mut m = LoadedModel::random(Config::tiny(), Device::Cpu, 3).unwrap();
    m.vs.set_kind(kind);
    m
}

fn pr(prompt: &[i64], response: &[i64]) -> PromptResponse {
    PromptResponse {
        image_key: 0,
        prompt: prompt.to_vec(),
        response: response.to_vec(),
    }
}

/// Two groups (prompts of 4 and 2 tokens) and a lone prompt, uneven
/// responses: one empty, one of a single token (predicted by the prompt's
/// last position only), the rest 2-7 tokens. Not in group order.
fn batch() -> Vec<PromptResponse> {
    let (a, b, c) = (&[5i64, 9, 11, 13][..], &[20i64, 21][..], &[7i64, 8, 9][..]);
    vec![
        pr(a, &[30, 31, 32, 33, 34, 35, 36]),
        pr(b, &[40, 41, 42]),
        pr(a, &[50]),
        pr(a, &[51, 52, 53, 54]),
        pr(c, &[60, 61]),
        pr(b, &[]),
        pr(b, &[44, 45, 46, 47, 48, 49]),
        pr(a, &[55, 56]),
    ]
}

/// Fixed per-token weights `[B, L]` of the test loss.
fn weights(b: i64, l: i64, seed: f64) -> Tensor {
    Tensor::arange(b * l, (Kind::Double, Device::Cpu))
        .view([b, l])
        .f_mul_scalar(0.37 * seed)
        .unwrap()
        .sin()
}

fn test_loss(s: &ResponseScores) -> Tensor {
    let (b, l) = (s.logprobs.size()[0], s.logprobs.size()[1]);
    (s.logprobs.to_kind(Kind::Double) * weights(b, l, 1.0)
        + s.entropy.to_kind(Kind::Double) * weights(b, l, 2.0))
    .sum(Kind::Double)
}

/// A full-vocabulary term over the tokens numbered row-major.
struct Hook;

impl VocabLoss for Hook {
    fn chunk_loss(&mut self, tokens: Range<usize>, logp: &Tensor) -> rlsd::Result<Option<Tensor>> {
        let v = logp.size()[1];
        let w = Tensor::arange(v, (Kind::Float, Device::Cpu))
            .f_mul_scalar(0.11)
            .unwrap()
            .cos();
        // Depends on which tokens the chunk holds, so a renumbering would show.
        let pos = Tensor::arange_start(
            tokens.start as i64,
            tokens.end as i64,
            (Kind::Float, Device::Cpu),
        )
        .f_mul_scalar(0.3)
        .unwrap()
        .sin()
        .unsqueeze(1);
        Ok(Some((logp * w * pos).sum(Kind::Float) * 0.05))
    }
}

/// Scores seen by the loss, then the gradients, of one `backward_scores`.
fn run(
    m: &LoadedModel,
    opts: &ScoreOptions,
    hook: bool,
) -> ((Tensor, Tensor), BTreeMap<String, Tensor>) {
    let mut seen = None;
    let mut h = Hook;
    let ran = m
        .backward_scores(
            &batch(),
            T,
            opts,
            &mut |s| {
                seen = Some((s.logprobs.detach().copy(), s.entropy.detach().copy()));
                Ok(Some(test_loss(s)))
            },
            if hook { Some(&mut h) } else { None },
        )
        .unwrap();
    assert!(ran);
    (seen.unwrap(), take_grads_f64(m))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

#[test]
fn shared_prompt_scores_and_gradients_equal_the_plain_path() {
    let models: Vec<(String, LoadedModel)> = [Kind::Float, Kind::Double]
        .into_iter()
        .flat_map(|kind| {
            let mut v: Vec<(String, LoadedModel)> = ["llama", "qwen2", "qwen3"]
                .into_iter()
                .map(|n| (format!("{n} {kind:?}"), fixture(n, kind)))
                .collect();
            v.push((format!("random qwen2 {kind:?}"), random(kind)));
            v
        })
        .collect();
    assert!(shares_prompt(&batch(), true) && !shares_prompt(&batch(), false));
    for (name, m) in &models {
        let kind = m.lm.kind();
        // The head and log-softmax run in float32 whatever the weights, so
        // float64 trunks agree to float32 rounding of the logits.
        let (tol_v, tol_g) = if kind == Kind::Double {
            (2e-6, 2e-6)
        } else {
            (2e-5, 1e-4)
        };
        let plain = ScoreOptions::default();
        let want = [run(m, &plain, false), run(m, &plain, true)];
        for (chunk, ckpt, hook) in [
            (0, false, false),
            (3, false, true),
            (0, true, false),
            (2, true, true),
        ] {
            let (want_s, want_g) = &want[usize::from(hook)];
            let opts = ScoreOptions {
                chunk_tokens: chunk,
                activation_checkpointing: ckpt,
                share_prompt: true,
            };
            let what = format!("{name} hook {hook} chunk {chunk} ckpt {ckpt}");
            let (got_s, got_g) = run(m, &opts, hook);
            assert_eq!(got_s.0.size(), want_s.0.size(), "{what}");
            let d_lp = max_diff(&got_s.0, &want_s.0);
            let d_ent = max_diff(&got_s.1, &want_s.1);
            assert!(d_lp < tol_v && d_ent < tol_v, "{what}: {d_lp} {d_ent}");
            assert_eq!(got_g.len(), want_g.len());
            for (n, gw) in want_g {
                let gg = &got_g[n];
                let scale = gw.abs().max().double_value(&[]).max(1e-6);
                let d = max_diff(gg, gw);
                assert!(
                    d <= tol_g * scale,
                    "{what}: {n} differs by {d} (scale {scale})"
                );
            }
        }
    }
}

#[test]
fn responses_of_at_most_one_token_still_share() {
    // R = max(1, L - 1) = 1: a padding column; every token is predicted by
    // a prompt's last position.
    let b = vec![pr(&[3, 4], &[10]), pr(&[3, 4], &[11]), pr(&[3, 4], &[])];
    let m = random(Kind::Double);
    let grads = |share: bool| {
        let opts = ScoreOptions {
            share_prompt: share,
            ..ScoreOptions::default()
        };
        m.backward_scores(&b, T, &opts, &mut |s| Ok(Some(test_loss(s))), None)
            .unwrap();
        take_grads_f64(&m)
    };
    let (want, got) = (grads(false), grads(true));
    for (n, g) in &want {
        let d = max_diff(g, &got[n]);
        assert!(
            d <= 2e-6 * g.abs().max().double_value(&[]).max(1e-6),
            "{n}: {d}"
        );
    }
    // 1 prompt x 2 + 3 rows x 1 = 5 positions vs 3 x 3 = 9.
    assert_eq!(trunk_positions(&b, true), 5);
    assert_eq!(trunk_positions(&b, false), 9);
}

fn train_batch(samples: Vec<PromptResponse>) -> TrainBatch {
    let n = samples.len();
    let lp = |s: f32| -> Vec<Vec<f32>> {
        samples
            .iter()
            .enumerate()
            .map(|(i, x)| {
                (0..x.response.len())
                    .map(|j| s - 0.1 * ((i + j) % 5) as f32)
                    .collect()
            })
            .collect()
    };
    TrainBatch {
        sampling_logprobs: lp(-4.0),
        teacher_logprobs: Some(lp(-3.8)),
        teacher_neg_logprobs: None,
        ref_logprobs: None,
        teacher_support: None,
        correct: None,
        advantages: (0..n).map(|i| [1.0, -0.5, 0.25, -0.75][i % 4]).collect(),
        samples,
        step: 1,
        lambda: 0.5,
        lr: 1e-5,
        temperature: T,
        response_mask: None,
    }
}

fn flat(m: &LoadedModel) -> Vec<(String, Vec<f64>)> {
    let mut v: Vec<(String, Vec<f64>)> =
        m.vs.variables()
            .into_iter()
            .map(|(n, t)| {
                let d = Vec::<f64>::try_from(t.detach().to_kind(Kind::Double).flatten(0, -1));
                (n, d.unwrap())
            })
            .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn train_step_with_a_shared_prompt_equals_the_plain_step() {
    let batch = train_batch(batch());
    for kind in [Kind::Float, Kind::Double] {
        let plain = OptimConfig {
            share_prompt: false,
            max_tokens_per_micro_batch: 0,
            lr: 1e-5,
            ..OptimConfig::default()
        };
        let mut want_tr = Trainer::new(random(kind), AlgoConfig::default(), plain).unwrap();
        let want = train_step(&mut want_tr, &batch).unwrap();
        assert!(!want.skipped);
        // Whole batch; a budget that splits the groups (each part re-runs its
        // prompt); the same with checkpointed layers and two-token head chunks.
        for (budget, ckpt, chunk) in [(0, false, 0), (14, false, 0), (14, true, 2), (9, true, 0)] {
            let shared = OptimConfig {
                share_prompt: true,
                max_tokens_per_micro_batch: budget,
                activation_checkpointing: ckpt,
                logit_chunk_tokens: chunk,
                lr: 1e-5,
                ..OptimConfig::default()
            };
            let what = format!("{kind:?} budget {budget} ckpt {ckpt} chunk {chunk}");
            let mut tr = Trainer::new(random(kind), AlgoConfig::default(), shared).unwrap();
            let got = train_step(&mut tr, &batch).unwrap();
            assert!(!got.skipped, "{what}");
            assert!(
                (got.loss - want.loss).abs() < 1e-6,
                "{what}: {} vs {}",
                got.loss,
                want.loss
            );
            assert!(
                (got.entropy - want.entropy).abs() < 1e-5 * want.entropy.abs().max(1.0),
                "{what}"
            );
            assert!(
                (got.grad_norm - want.grad_norm).abs() < 1e-5 * want.grad_norm,
                "{what}: {} vs {}",
                got.grad_norm,
                want.grad_norm
            );
            for ((n, x), (_, y)) in flat(&want_tr.policy).iter().zip(flat(&tr.policy)) {
                let d = x
                    .iter()
                    .zip(&y)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0.0, f64::max);
                // Adam's first step moves each weight by about lr * sign(g).
                assert!(d < 1e-6, "{what}: {n} differs by {d}");
            }
        }
    }
}

#[test]
fn planner_counts_shared_positions_and_keeps_groups_together() {
    let s = |p: &[i64], r: usize| pr(p, &vec![2; r]);
    let (a, b) = (&[1i64, 1, 1, 1][..], &[3i64, 3][..]);
    // Group a: responses 6, 6, 5; group b: 6, 2.
    let samples = vec![s(a, 6), s(b, 6), s(a, 6), s(a, 5), s(b, 2)];
    // Plain cost: 5 rows x 10 = 50; shared: 2 prompts x 4 + 5 x 5 = 33.
    assert_eq!(trunk_positions(&samples, false), 50);
    assert_eq!(trunk_positions(&samples, true), 33);
    // Budget 33: everything fits once shared, order kept; plain splits.
    let (order, ranges) = plan_micro_batches(&samples, 0, 33, true);
    assert_eq!(order, vec![0, 1, 2, 3, 4]);
    assert_eq!(ranges, vec![0..5]);
    let (_, ranges) = plan_micro_batches(&samples, 0, 33, false);
    assert_eq!(ranges.len(), 2);
    // Budget 20, shared: by response length (stable) 0a6, 1b6, 2a6, 3a5, 4b2.
    // {0, 1}: distinct prompts, plain layout, 2 x 10 = 20 fits;
    // {0, 1, 2}: 2 x 4 + 3 x 5 = 23 > 20 -> cut. {2, 3}: 1 x 4 + 2 x 5 = 14;
    // {2, 3, 4}: 2 x 4 + 3 x 5 = 23 -> cut. {4} alone.
    let (order, ranges) = plan_micro_batches(&samples, 0, 20, true);
    assert_eq!(order, vec![0, 1, 2, 3, 4]);
    assert_eq!(ranges, vec![0..2, 2..4, 4..5]);
    // The row cap applies as before.
    let (_, ranges) = plan_micro_batches(&samples, 2, 0, true);
    assert_eq!(ranges, vec![0..2, 2..4, 4..5]);
}
