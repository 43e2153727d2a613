//! Shared by tests/dist_equal*.rs: a fixed global batch on the tiny model
//! (float64), one rank on all of it vs R Gloo ranks (threads) on their shares;
//! [`process`]: running whole jobs of the binary (tests/dist_launch.rs,
//! tests/dist_failure.rs, tests/dist_split.rs).

#![allow(dead_code)]

pub mod process;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rlsd::distributed::shard::group_range;
use rlsd::distributed::train_loop::weights_digest;
use rlsd::distributed::{DataParallel, GlooGroup, Store};
use rlsd::model::{token_logprobs, Config, LoadedModel};
use rlsd::optim::OptimConfig;
use rlsd::policy::PromptResponse;
use rlsd::rlsd::{group_advantages, Algo, AlgoConfig};
use rlsd::train::{train_step, TrainBatch, Trainer};
use std::time::Duration;
use tch::{Device, Tensor};

const G: usize = 4;
const STEPS: u64 = 5;

/// The tiny model in float64: the comparison then sees the data-parallel
/// arithmetic, not float32 summation order amplified by Adam's first steps.
fn model() -> LoadedModel {
    let mut m = LoadedModel::random(Config::tiny(), Device::Cpu, 7).unwrap();
    m.vs.set_kind(tch::Kind::Double);
    m
}

/// `groups` prompt groups of G responses with varied lengths, the model's
/// own sampling log-probs, a teacher with two privileged prompt tokens, a
/// contrastive teacher for CEPO on groups with a wrong answer, and rewards
/// that differ within every group.
fn global_batch(m: &LoadedModel, groups: usize) -> TrainBatch {
    let mut rng = StdRng::seed_from_u64(11);
    let mut samples = Vec::new();
    for _ in 0..groups {
        let prompt: Vec<i64> = (0..rng.random_range(2..5))
            .map(|_| rng.random_range(6..60))
            .collect();
        for _ in 0..G {
            let response: Vec<i64> = (0..rng.random_range(2..7))
                .map(|_| rng.random_range(6..60))
                .collect();
            samples.push(PromptResponse {
                prompt: prompt.clone(),
                response,
            });
        }
    }
    let prompts: Vec<Vec<i64>> = samples.iter().map(|s| s.prompt.clone()).collect();
    let responses: Vec<Vec<i64>> = samples.iter().map(|s| s.response.clone()).collect();
    let with = |extra: &[i64]| -> Vec<Vec<i64>> {
        prompts
            .iter()
            .map(|p| [p.as_slice(), extra].concat())
            .collect()
    };
    let sampling = token_logprobs(&m.lm, &prompts, &responses, 1.0).unwrap();
    let teacher = token_logprobs(&m.lm, &with(&[60, 61]), &responses, 1.0).unwrap();
    let negative = token_logprobs(&m.lm, &with(&[62]), &responses, 1.0).unwrap();
    let rewards: Vec<f32> = (0..samples.len())
        .map(|i| if (i * 7 + i / G) % 3 == 0 { 1.0 } else { 0.0 })
        .collect();
    let advantages = group_advantages(&rewards, G, true).unwrap();
    TrainBatch {
        sampling_logprobs: sampling,
        teacher_logprobs: Some(teacher),
        teacher_neg_logprobs: Some(negative.into_iter().map(Some).collect()),
        ref_logprobs: None,
        teacher_support: None,
        correct: Some(rewards.iter().map(|&r| r > 0.0).collect()),
        advantages,
        samples,
        step: 1,
        lambda: 0.5,
        lr: 1e-2,
        temperature: 1.0,
        response_mask: None,
    }
}

/// Samples of groups `range` of `b`.
fn shard(b: &TrainBatch, range: std::ops::Range<usize>) -> TrainBatch {
    let r = range.start * G..range.end * G;
    TrainBatch {
        samples: b.samples[r.clone()].to_vec(),
        sampling_logprobs: b.sampling_logprobs[r.clone()].to_vec(),
        teacher_logprobs: b.teacher_logprobs.as_ref().map(|v| v[r.clone()].to_vec()),
        teacher_neg_logprobs: b
            .teacher_neg_logprobs
            .as_ref()
            .map(|v| v[r.clone()].to_vec()),
        ref_logprobs: None,
        teacher_support: None,
        correct: b.correct.as_ref().map(|v| v[r.clone()].to_vec()),
        response_mask: b.response_mask.as_ref().map(|v| v[r.clone()].to_vec()),
        advantages: b.advantages[r].to_vec(),
        ..b.clone()
    }
}

fn trainer(algo: Algo) -> Trainer<LoadedModel> {
    let optim = OptimConfig {
        lr: 1e-2,
        micro_batch_size: 3,
        max_grad_norm: 0.5,
        ..OptimConfig::default()
    };
    Trainer::new(model(), AlgoConfig::with_algo(algo), optim).unwrap()
}

fn params(t: &Trainer<LoadedModel>) -> Vec<Tensor> {
    t.optimizer
        .parameters()
        .iter()
        .map(|p| p.detach().copy())
        .collect()
}

/// One rank training on the whole batch.
fn single(algo: Algo, b: &TrainBatch) -> (Vec<Tensor>, Vec<f64>) {
    let mut t = trainer(algo);
    let mut losses = Vec::new();
    for step in 1..=STEPS {
        let s = train_step(&mut t, &TrainBatch { step, ..b.clone() }).unwrap();
        assert!(!s.skipped, "{algo:?}: {:?}", s.skip_reason);
        losses.push(s.loss);
    }
    (params(&t), losses)
}

/// `world` ranks as threads; returns each rank's final parameters and rank
/// 0's logged losses.
fn parallel(
    algo: Algo,
    b: &TrainBatch,
    groups: usize,
    world: usize,
) -> (Vec<Vec<Tensor>>, Vec<f64>) {
    let timeout = Duration::from_secs(60);
    let store = Store::server("127.0.0.1", 0, timeout).unwrap();
    let port = store.port();
    let prefix = format!("{algo:?}/{world}/{groups}/");
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            let mine = shard(b, group_range(groups, world, rank));
            let prefix = prefix.clone();
            std::thread::spawn(move || {
                let client = Store::client("127.0.0.1", port, timeout).unwrap();
                let pg =
                    GlooGroup::new(&client, &prefix, "127.0.0.1", rank, world, timeout).unwrap();
                let mut t = trainer(algo);
                t.grad_sync = Some(Box::new(
                    DataParallel::new(Box::new(pg), Device::Cpu).with_bucket_bytes(16 << 10),
                ));
                let mut losses = Vec::new();
                for step in 1..=STEPS {
                    let s = train_step(
                        &mut t,
                        &TrainBatch {
                            step,
                            ..mine.clone()
                        },
                    )
                    .unwrap();
                    assert!(!s.skipped, "{algo:?} rank {rank}: {:?}", s.skip_reason);
                    assert!(s.timings.collective_s > 0.0);
                    losses.push(s.loss);
                }
                (params(&t), losses)
            })
        })
        .collect();
    let mut out: Vec<(Vec<Tensor>, Vec<f64>)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let losses = out[0].1.clone();
    (out.drain(..).map(|o| o.0).collect(), losses)
}

fn max_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

pub fn check(algo: Algo, groups: usize, world: usize) {
    let t0 = std::time::Instant::now();
    let b = global_batch(&model(), groups);
    let (one, one_losses) = single(algo, &b);
    let moved = max_diff(&one, &params(&trainer(algo)));
    assert!(
        moved > 1e-4,
        "{algo:?}: training must move the weights ({moved})"
    );
    let (ranks, losses) = parallel(algo, &b, groups, world);
    let d = max_diff(&one, &ranks[0]);
    eprintln!(
        "{algo:?} {world} ranks {groups} groups: max diff {d:e} ({:.1}s)",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        d < 1e-5,
        "{algo:?} {world} ranks, {groups} groups: max |w - w_1rank| = {d}"
    );
    // Logged (global) losses match the one-rank run.
    for (a, c) in one_losses.iter().zip(&losses) {
        assert!(
            (a - c).abs() < 1e-6 * a.abs().max(1.0),
            "{algo:?}: loss {c} vs one rank {a}"
        );
    }
    let d0 = weights_digest(&ranks[0]).unwrap();
    for (r, w) in ranks.iter().enumerate().skip(1) {
        assert_eq!(
            weights_digest(w).unwrap(),
            d0,
            "{algo:?}: rank {r} differs from rank 0"
        );
    }
}
