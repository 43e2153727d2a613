//! `train_step` on the real transformer (`model::LoadedModel`, tiny config):
//! sampling log-probs from generation agree with the training forward (ratio 1
//! on-policy), micro-batches equal one batch, and a few RLSD steps on a fixed
//! batch raise the rewarded responses.

use rand::rngs::StdRng;
use rand::SeedableRng;
use rlsd::model::{generate, token_logprobs, Config, GenerateOptions, LoadedModel};
use rlsd::optim::OptimConfig;
use rlsd::policy::PromptResponse;
use rlsd::rlsd::{group_advantages, AlgoConfig};
use rlsd::train::{train_step, TrainBatch, Trainer};
use tch::{Device, Kind};

const G: usize = 4;

fn model(seed: u64) -> LoadedModel {
    LoadedModel::random(Config::tiny(), Device::Cpu, seed).unwrap()
}

/// Generate G responses for each of two prompts, reward the one with the
/// largest first token in each group, score the teacher with two privileged
/// tokens appended to the prompt.
fn rollout(m: &LoadedModel, temperature: f64) -> (TrainBatch, Vec<usize>) {
    let prompts: Vec<Vec<i64>> = [vec![5, 9, 11], vec![20, 21]]
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.clone(), G))
        .collect();
    let opts = GenerateOptions {
        max_new_tokens: 7,
        temperature,
        eos_ids: vec![1, 2, 3, 4, 5],
        ..GenerateOptions::default()
    };
    let gens = generate(&m.lm, &prompts, &opts, &mut StdRng::seed_from_u64(17)).unwrap();
    let samples: Vec<PromptResponse> = prompts
        .iter()
        .zip(&gens)
        .map(|(p, g)| PromptResponse {
            image_key: 0,
            prompt: p.clone(),
            response: g.tokens.clone(),
        })
        .collect();
    let mut rewards = vec![0.0f32; samples.len()];
    let mut winners = Vec::new();
    for start in (0..samples.len()).step_by(G) {
        let best = (start..start + G)
            .max_by_key(|&i| (samples[i].response[0], std::cmp::Reverse(i)))
            .unwrap();
        rewards[best] = 1.0;
        winners.push(best);
    }
    let teacher_prompts: Vec<Vec<i64>> = prompts
        .iter()
        .map(|p| [p.as_slice(), &[60, 61]].concat())
        .collect();
    let responses: Vec<Vec<i64>> = samples.iter().map(|s| s.response.clone()).collect();
    let teacher = token_logprobs(&m.lm, &teacher_prompts, &responses, temperature).unwrap();
    let batch = TrainBatch {
        sampling_logprobs: gens.iter().map(|g| g.logprobs.clone()).collect(),
        teacher_logprobs: Some(teacher),
        teacher_neg_logprobs: None,
        ref_logprobs: None,
        teacher_support: None,
        correct: None,
        advantages: group_advantages(&rewards, G, true).unwrap(),
        samples,
        step: 1,
        lambda: 0.5,
        lr: 3e-3,
        temperature,
        response_mask: None,
    };
    (batch, winners)
}

fn optim(micro: usize, lr: f64) -> OptimConfig {
    OptimConfig {
        lr,
        micro_batch_size: micro,
        ..OptimConfig::default()
    }
}

fn seq_logprob(m: &LoadedModel, s: &PromptResponse, temperature: f64) -> f32 {
    token_logprobs(
        &m.lm,
        std::slice::from_ref(&s.prompt),
        std::slice::from_ref(&s.response),
        temperature,
    )
    .unwrap()[0]
        .iter()
        .sum()
}

fn flat_weights(m: &LoadedModel) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> =
        m.vs.variables()
            .into_iter()
            .map(|(n, t)| {
                let data = Vec::<f32>::try_from(t.detach().to_kind(Kind::Float).flatten(0, -1));
                (n, data.unwrap())
            })
            .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn on_policy_ratio_is_one_and_rlsd_raises_rewarded_responses() {
    let temperature = 0.8;
    let m = model(1);
    let (batch, winners) = rollout(&m, temperature);
    assert!(
        batch.samples.iter().any(|s| s.response.len() < 7),
        "some stop on EOS"
    );
    let before: Vec<f32> = batch
        .samples
        .iter()
        .map(|s| seq_logprob(&m, s, temperature))
        .collect();
    let mut tr = Trainer::new(m, AlgoConfig::default(), optim(3, 3e-3)).unwrap();
    let first = train_step(&mut tr, &batch).unwrap();
    assert!(!first.skipped);
    // Generation's log-probs are the training forward's: ratio 1, nothing clipped.
    assert!(
        (first.ratio_mean - 1.0).abs() < 1e-4,
        "{}",
        first.ratio_mean
    );
    assert_eq!(first.ratio_clip_frac, 0.0);
    assert!(first.delta_abs_mean > 0.0 && first.entropy > 0.0);
    for _ in 0..5 {
        assert!(!train_step(&mut tr, &batch).unwrap().skipped);
    }
    for &w in &winners {
        let after = seq_logprob(&tr.policy, &batch.samples[w], temperature);
        assert!(
            after > before[w] + 0.1,
            "response {w}: {} -> {after}",
            before[w]
        );
    }
}

#[test]
fn micro_batches_equal_one_batch_on_the_transformer() {
    let (mut batch, _) = rollout(&model(2), 1.0);
    batch.lr = 1e-5;
    // Adam's first step is close to lr * sign(g), so the weights can only show
    // differences of order lr; loss and gradient norm carry the real check.
    let mut whole = Trainer::new(model(2), AlgoConfig::default(), optim(0, 1e-5)).unwrap();
    let mut parts = Trainer::new(model(2), AlgoConfig::default(), optim(3, 1e-5)).unwrap();
    let a = train_step(&mut whole, &batch).unwrap();
    let b = train_step(&mut parts, &batch).unwrap();
    eprintln!(
        "loss {} vs {}, grad norm {} vs {}",
        a.loss, b.loss, a.grad_norm, b.grad_norm
    );
    assert!((a.loss - b.loss).abs() < 1e-6, "{} vs {}", a.loss, b.loss);
    assert!(
        (a.grad_norm - b.grad_norm).abs() < 1e-5 * a.grad_norm,
        "{} vs {}",
        a.grad_norm,
        b.grad_norm
    );
    let mut worst = 0f32;
    for ((name, x), (_, y)) in flat_weights(&whole.policy)
        .iter()
        .zip(flat_weights(&parts.policy))
    {
        let d = x
            .iter()
            .zip(&y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max);
        assert!(d < 1e-6, "{name}: {d}");
        worst = worst.max(d);
    }
    eprintln!("max weight difference, micro 3 vs whole: {worst:e}");
}

#[test]
fn budgeted_chunked_checkpointed_step_equals_the_plain_step() {
    let (mut batch, _) = rollout(&model(2), 1.0);
    batch.lr = 1e-5;
    let plain = OptimConfig {
        max_tokens_per_micro_batch: 0,
        ..optim(0, 1e-5)
    };
    // A budget of 12 positions forces the sorted, length-bucketed micro-batches
    // (responses of up to 7 tokens after 2-3 prompt tokens); chunks of 2 tokens
    // force the two-stage head backward; layers are recomputed.
    let lean = OptimConfig {
        max_tokens_per_micro_batch: 12,
        activation_checkpointing: true,
        logit_chunk_tokens: 2,
        ..optim(0, 1e-5)
    };
    let mut a_tr = Trainer::new(model(2), AlgoConfig::default(), plain).unwrap();
    let mut b_tr = Trainer::new(model(2), AlgoConfig::default(), lean).unwrap();
    let a = train_step(&mut a_tr, &batch).unwrap();
    let b = train_step(&mut b_tr, &batch).unwrap();
    assert!((a.loss - b.loss).abs() < 1e-6, "{} vs {}", a.loss, b.loss);
    assert!((a.entropy - b.entropy).abs() < 1e-6 * a.entropy.abs().max(1.0));
    assert!(
        (a.grad_norm - b.grad_norm).abs() < 1e-5 * a.grad_norm,
        "{} vs {}",
        a.grad_norm,
        b.grad_norm
    );
    for ((name, x), (_, y)) in flat_weights(&a_tr.policy)
        .iter()
        .zip(flat_weights(&b_tr.policy))
    {
        let d = x
            .iter()
            .zip(&y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max);
        assert!(d < 1e-6, "{name}: {d}");
    }
}
