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
use rlsd::model::lora_config::TARGET_MODULES;
use rlsd::model::{token_logprobs, Config, LoadedModel, LoraConfig};
use rlsd::optim::OptimConfig;
use rlsd::policy::PromptResponse;
use rlsd::rlsd::{group_advantages, Algo, AlgoConfig};
use rlsd::train::GradSync;
use rlsd::train::{train_step, TrainBatch, Trainer};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tch::{Device, Tensor};

const G: usize = 4;
const STEPS: u64 = 5;

/// The tiny model in float64: the comparison then sees the data-parallel
/// arithmetic, not float32 summation order amplified by Adam's first steps.
/// With `lora`, rank-4 adapters on all seven projections (cast to float64
/// with the base, for the same reason) are the only trainable tensors.
fn model(lora: bool) -> LoadedModel {
    let mut m = LoadedModel::random(Config::tiny(), Device::Cpu, 7).unwrap();
    if lora {
        m.attach_lora(&LoraConfig {
            rank: 4,
            target_modules: TARGET_MODULES.map(String::from).to_vec(),
            ..LoraConfig::default()
        })
        .unwrap();
        // A started adapter (B != 0, as after loading a trained one), so
        // that no gradient sits at the float32 head's rounding level.
        let mut rng = StdRng::seed_from_u64(5);
        tch::no_grad(|| {
            let mut vars: Vec<(String, Tensor)> = m.vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            for (n, v) in vars {
                if n.contains(".lora_B.") {
                    let x: Vec<f32> = (0..v.numel())
                        .map(|_| rng.random_range(-0.02..0.02))
                        .collect();
                    let t = Tensor::from_slice(&x).view(v.size().as_slice());
                    v.shallow_clone().copy_(&t);
                }
            }
        });
    }
    m.vs.set_kind(tch::Kind::Double);
    m
}

/// A [`DataParallel`] that records the bytes of the gradients each step
/// hands it to all-reduce.
#[derive(Debug)]
struct Counted {
    inner: DataParallel,
    reduced: Arc<Mutex<Vec<usize>>>,
}

impl GradSync for Counted {
    fn world(&self) -> usize {
        self.inner.world()
    }
    fn sum_values(&mut self, values: &mut [f64]) -> rlsd::Result<()> {
        self.inner.sum_values(values)
    }
    fn sum_grads(&mut self, params: &[Tensor]) -> rlsd::Result<()> {
        self.inner.sum_grads(params)?;
        self.reduced.lock().unwrap().push(self.inner.last.bytes);
        Ok(())
    }
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
                image_key: 0,
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

fn trainer(algo: Algo, lora: bool) -> Trainer<LoadedModel> {
    let optim = OptimConfig {
        lr: 1e-2,
        micro_batch_size: 3,
        max_grad_norm: 0.5,
        ..OptimConfig::default()
    };
    Trainer::new(model(lora), AlgoConfig::with_algo(algo), optim).unwrap()
}

fn params(t: &Trainer<LoadedModel>) -> Vec<Tensor> {
    t.optimizer
        .parameters()
        .iter()
        .map(|p| p.detach().copy())
        .collect()
}

/// One rank training on the whole batch.
fn single(algo: Algo, lora: bool, b: &TrainBatch) -> (Vec<Tensor>, Vec<f64>) {
    let mut t = trainer(algo, lora);
    let mut losses = Vec::new();
    for step in 1..=STEPS {
        let s = train_step(&mut t, &TrainBatch { step, ..b.clone() }).unwrap();
        assert!(!s.skipped, "{algo:?}: {:?}", s.skip_reason);
        losses.push(s.loss);
    }
    (params(&t), losses)
}

/// `world` ranks as threads; returns each rank's final parameters, rank 0's
/// logged losses and the gradient bytes rank 0 all-reduced at each step.
fn parallel(
    algo: Algo,
    lora: bool,
    b: &TrainBatch,
    groups: usize,
    world: usize,
) -> (Vec<Vec<Tensor>>, Vec<f64>, Vec<usize>) {
    let timeout = Duration::from_secs(60);
    let store = Store::server("127.0.0.1", 0, timeout).unwrap();
    let port = store.port();
    let prefix = format!("{algo:?}/{world}/{groups}/{lora}/");
    let reduced = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            let mine = shard(b, group_range(groups, world, rank));
            let prefix = prefix.clone();
            let reduced = reduced.clone();
            std::thread::spawn(move || {
                let client = Store::client("127.0.0.1", port, timeout).unwrap();
                let pg =
                    GlooGroup::new(&client, &prefix, "127.0.0.1", rank, world, timeout).unwrap();
                let mut t = trainer(algo, lora);
                let dp = DataParallel::new(Box::new(pg), Device::Cpu).with_bucket_bytes(16 << 10);
                t.grad_sync = Some(if rank == 0 {
                    Box::new(Counted { inner: dp, reduced })
                } else {
                    Box::new(dp)
                });
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
    let reduced = reduced.lock().unwrap().clone();
    (out.drain(..).map(|o| o.0).collect(), losses, reduced)
}

fn max_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

/// R ranks equal one on the whole batch: full fine-tuning.
pub fn check(algo: Algo, groups: usize, world: usize) {
    check_with(algo, false, groups, world);
}

/// R ranks equal one on the whole batch, training LoRA adapters: only the
/// adapters' gradients are all-reduced.
pub fn check_lora(algo: Algo, groups: usize, world: usize) {
    let reduced = check_with(algo, true, groups, world);
    let m = model(true);
    let adapters: usize = m.adapter_tensors().iter().map(|(_, t)| t.numel() * 8).sum();
    let all: usize = m.vs.variables().values().map(|t| t.numel() * 8).sum();
    assert_eq!(reduced.len() as u64, STEPS);
    for bytes in reduced {
        assert_eq!(
            bytes, adapters,
            "all-reduced {bytes} bytes; the adapters are {adapters} (the whole model {all})"
        );
    }
}

fn check_with(algo: Algo, lora: bool, groups: usize, world: usize) -> Vec<usize> {
    let t0 = std::time::Instant::now();
    let b = global_batch(&model(lora), groups);
    let (one, one_losses) = single(algo, lora, &b);
    let moved = max_diff(&one, &params(&trainer(algo, lora)));
    assert!(
        moved > 1e-4,
        "{algo:?}: training must move the weights ({moved})"
    );
    let (ranks, losses, reduced) = parallel(algo, lora, &b, groups, world);
    if lora {
        assert_eq!(one.len(), model(true).adapter_tensors().len());
    }
    let d = max_diff(&one, &ranks[0]);
    eprintln!(
        "{algo:?} lora={lora} {world} ranks {groups} groups: max diff {d:e} ({:.1}s)",
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
    reduced
}
