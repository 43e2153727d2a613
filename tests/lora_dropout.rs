//! LoRA dropout (peft's `lora_dropout`) in training: the masks are a function
//! of the train step's key, so the checkpointed backward (which recomputes
//! each layer) gives the same gradients as the plain one; dropout changes
//! the update; and it is off wherever the train step has not set the key
//! (generation, evaluation, the teacher's replica).

use anyhow::Result;
use rlsd::model::lora::is_adapter_name;
use rlsd::model::lora_config::TARGET_MODULES;
use rlsd::model::lora_dropout::train_key;
use rlsd::model::transformer::TrunkInput;
use rlsd::model::{token_logprobs, Config, LoadedModel, LoraConfig};
use rlsd::optim::OptimConfig;
use rlsd::policy::PromptResponse;
use rlsd::rlsd::{Algo, AlgoConfig};
use rlsd::train::{train_step, TrainBatch, Trainer};
use tch::{Device, Kind, Tensor};

/// The tiny model (float64) with rank-4 adapters of dropout `p` on all seven
/// projections, `B` started non-zero so every adapter shapes the output.
fn model(p: f64) -> LoadedModel {
    let mut m = LoadedModel::random(Config::tiny(), Device::Cpu, 7).unwrap();
    m.attach_lora(&LoraConfig {
        rank: 4,
        dropout: p,
        target_modules: TARGET_MODULES.map(String::from).to_vec(),
        ..LoraConfig::default()
    })
    .unwrap();
    let mut vars: Vec<(String, Tensor)> = m.vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (i, (n, v)) in vars.iter().enumerate() {
            if n.contains(".lora_B.") {
                let t = Tensor::arange(v.numel() as i64, (Kind::Float, Device::Cpu))
                    .g_add_scalar(i as f64)
                    .sin()
                    .g_mul_scalar(0.05)
                    .view(v.size().as_slice());
                v.shallow_clone().copy_(&t);
            }
        }
    });
    m.vs.set_kind(Kind::Double);
    m
}

fn ids() -> Tensor {
    Tensor::from_slice(&[5i64, 9, 14, 3, 22, 7, 11, 2, 5, 9, 30, 4]).view([2, 6])
}

/// Adapter gradients of a next-token loss on [`ids`], with or without
/// activation checkpointing, under the model's current key.
fn adapter_grads(m: &LoadedModel, checkpoint: bool) -> Result<Vec<(String, Tensor)>> {
    for (_, v) in m.vs.variables() {
        let mut g = v.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    let ids = ids();
    let pass =
        m.lm.trunk_forward(&TrunkInput::Rows(ids.shallow_clone()), checkpoint)?;
    let logits = m.lm.head(&pass.hidden.narrow(1, 0, 5))?;
    let target = ids.narrow(1, 1, 5).reshape([-1]);
    let loss = logits
        .reshape([-1, logits.size()[2]])
        .log_softmax(-1, Kind::Double)
        .nll_loss(&target);
    m.lm.trunk_backward(pass, &loss)?;
    let mut out: Vec<(String, Tensor)> =
        m.vs.variables()
            .into_iter()
            .filter(|(n, _)| is_adapter_name(n))
            .map(|(n, v)| (n, v.grad().copy()))
            .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn max_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    a.iter()
        .zip(b)
        .map(|((_, x), (_, y))| (x - y).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

fn logits(m: &LoadedModel) -> Tensor {
    tch::no_grad(|| m.lm.forward_all(&ids(), None).unwrap())
}

#[test]
fn checkpointed_and_plain_gradients_agree_with_dropout() -> Result<()> {
    let m = model(0.3);
    m.dropout_key.set(Some(train_key(4, 0)));
    let plain = adapter_grads(&m, false)?;
    let checkpointed = adapter_grads(&m, true)?;
    let d = max_diff(&plain, &checkpointed);
    assert!(d < 1e-12, "checkpointed vs plain adapter gradients: {d}");
    // Dropout is on: without it (no key) the gradients differ...
    m.dropout_key.set(None);
    let off = adapter_grads(&m, true)?;
    assert!(max_diff(&plain, &off) > 1e-6);
    // ... and so do they under another micro-batch's key.
    m.dropout_key.set(Some(train_key(4, 8)));
    let other = adapter_grads(&m, false)?;
    assert!(max_diff(&plain, &other) > 1e-6);
    Ok(())
}

#[test]
fn dropout_is_off_in_generation_evaluation_and_the_teacher() -> Result<()> {
    let (with, without) = (model(0.5), model(0.0));
    // No key: the identity, equal to the same weights without dropout.
    assert!(logits(&with).equal(&logits(&without)));
    // A replica (the teacher's, the sampler's) has its own, unset key even
    // while the policy trains a micro-batch.
    // (Replicas hold float32 adapters, as a policy normally does; compare
    // with a replica of the dropout-free model.)
    let replica = with.replicate(Device::Cpu)?;
    let plain_replica = without.replicate(Device::Cpu)?;
    with.dropout_key.set(Some(train_key(1, 0)));
    assert!(!logits(&with).equal(&logits(&without)));
    assert!(logits(&replica).equal(&logits(&plain_replica)));
    with.dropout_key.set(None);
    Ok(())
}

/// A fixed GRPO batch of 2 groups of 4 responses on the tiny vocabulary.
fn batch(m: &LoadedModel, step: u64) -> TrainBatch {
    let mut samples = Vec::new();
    for g in 0..2i64 {
        for r in 0..4i64 {
            samples.push(PromptResponse {
                image_key: 0,
                prompt: vec![6 + g, 7, 8 + g],
                response: (0..(3 + r))
                    .map(|t| 10 + (t * 7 + r * 3 + g) % 40)
                    .collect(),
            });
        }
    }
    let prompts: Vec<Vec<i64>> = samples.iter().map(|s| s.prompt.clone()).collect();
    let responses: Vec<Vec<i64>> = samples.iter().map(|s| s.response.clone()).collect();
    let sampling = token_logprobs(&m.lm, &prompts, &responses, 1.0).unwrap();
    TrainBatch {
        sampling_logprobs: sampling,
        teacher_logprobs: None,
        teacher_neg_logprobs: None,
        ref_logprobs: None,
        teacher_support: None,
        correct: None,
        advantages: vec![1.0, -1.0, 0.5, -0.5, -1.0, 1.0, -0.5, 0.5],
        samples,
        step,
        lambda: 0.0,
        lr: 1e-2,
        temperature: 1.0,
        response_mask: None,
    }
}

/// The adapters after two GRPO steps with dropout `p`.
fn trained(p: f64, checkpointing: bool) -> Result<Vec<(String, Tensor)>> {
    let optim = OptimConfig {
        lr: 1e-2,
        micro_batch_size: 3,
        activation_checkpointing: checkpointing,
        ..OptimConfig::default()
    };
    let mut t = Trainer::new(model(p), AlgoConfig::with_algo(Algo::Grpo), optim)?;
    for step in 1..=2 {
        let b = batch(&t.policy, step);
        let s = train_step(&mut t, &b)?;
        assert!(!s.skipped, "{:?}", s.skip_reason);
        // The key is cleared once the step is done.
        assert_eq!(t.policy.dropout_key.get(), None);
    }
    let mut out: Vec<(String, Tensor)> = t
        .policy
        .adapter_tensors()
        .into_iter()
        .map(|(n, v)| (n, v.detach().copy()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[test]
fn train_steps_with_dropout_are_equal_with_and_without_checkpointing() -> Result<()> {
    let plain = trained(0.2, false)?;
    let checkpointed = trained(0.2, true)?;
    let d = max_diff(&plain, &checkpointed);
    assert!(
        d < 1e-9,
        "adapters after 2 steps, checkpointed vs plain: {d}"
    );
    let no_dropout = trained(0.0, false)?;
    assert!(
        max_diff(&plain, &no_dropout) > 1e-6,
        "dropout had no effect"
    );
    Ok(())
}
