//! Checks that need a CUDA device: `cargo test --features gpu --test gpu`.
//! Off by default (CI has no GPU). Every test fails, rather than skips, when
//! no GPU is visible: running this file means a GPU is expected.

#![cfg(feature = "gpu")]

use rand::rngs::StdRng;
use rand::SeedableRng;
use rlsd::actors::Runtime;
use rlsd::config::RunConfig;
use rlsd::model::{generate, token_logprobs, GenerateOptions, LoadedModel};
use serde_json::Value;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn gpu() -> Device {
    assert!(
        tch::Cuda::is_available(),
        "no CUDA device visible to libtorch (is libtorch_cuda.so linked? `ldd` the test binary)"
    );
    Device::Cuda(0)
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

fn prompt_ids(name: &str) -> Vec<Vec<i64>> {
    let text = std::fs::read_to_string(fixture(name).join("golden.json")).unwrap();
    let g: Value = serde_json::from_str(&text).unwrap();
    g["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn cuda_logits_match_cpu_for_every_architecture() {
    let dev = gpu();
    for name in ["llama", "qwen2", "qwen3"] {
        let cpu = LoadedModel::load(&fixture(name), Device::Cpu, Kind::Float).unwrap();
        let cuda = LoadedModel::load(&fixture(name), dev, Kind::Float).unwrap();
        for ids in prompt_ids(name) {
            let x = Tensor::from_slice(&ids).view([1, -1]);
            let a = cpu.lm.forward_all(&x, None).unwrap();
            let b = cuda
                .lm
                .forward_all(&x.to_device(dev), None)
                .unwrap()
                .to_device(Device::Cpu);
            let d = (a - b).abs().max().double_value(&[]);
            assert!(d < 1e-3, "{name}: CUDA logits differ from CPU by {d}");
        }
    }
}

#[test]
fn cuda_generation_log_probs_equal_scoring_in_bf16() {
    let dev = gpu();
    let m = LoadedModel::load(&fixture("qwen2"), dev, Kind::BFloat16).unwrap();
    let prompts = prompt_ids("qwen2");
    let opts = GenerateOptions {
        max_new_tokens: 16,
        eos_ids: m.eos_ids(),
        ..Default::default()
    };
    let mut rng = StdRng::seed_from_u64(3);
    let gens = tch::no_grad(|| generate(&m.lm, &prompts, &opts, &mut rng)).unwrap();
    let responses: Vec<Vec<i64>> = gens.iter().map(|g| g.tokens.clone()).collect();
    let scored = tch::no_grad(|| token_logprobs(&m.lm, &prompts, &responses, 1.0)).unwrap();
    for (g, s) in gens.iter().zip(&scored) {
        assert_eq!(g.logprobs.len(), s.len());
        for (a, b) in g.logprobs.iter().zip(s) {
            // bf16 logits: a few hundredths of a nat between the cached and full paths.
            assert!((a - b).abs() < 0.1, "generation {a} vs scoring {b}");
        }
    }
}

#[test]
fn the_runtime_trains_on_cuda() {
    gpu();
    let dir = tempfile::tempdir().unwrap();
    let set: Vec<String> = vec![
        "runtime.steps=3".into(),
        "runtime.sampler_device=\"cuda:0\"".into(),
        "runtime.teacher_device=\"cuda:0\"".into(),
        "runtime.optimizer_device=\"cuda:0\"".into(),
        format!("runtime.out_dir=\"{}\"", dir.path().display()),
        "rollout.batch_prompts=4".into(),
        "rollout.group_size=4".into(),
    ];
    let cfg = RunConfig::load(None, &set).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(Runtime::builder(cfg).run()).unwrap();
    assert!(!report.failed, "{}", report.reason);
    assert_eq!(report.steps.len(), 3);
    for s in &report.steps {
        assert!(s.grad_norm.is_finite());
    }
    assert!(report.last_checkpoint.is_some());
}
