//! LoRA through the actor runtime on CPU: only the adapters train (the base
//! weights come out bit-identical to the built-in model's), the sampler and
//! teacher replicas carry the adapters, and a resumed run reproduces the
//! uninterrupted run's weights exactly.

#[path = "common/tiny_run.rs"]
mod tiny_run;
use rlsd::actors::Runtime;
use rlsd::config::RunConfig;
use rlsd::model::LoadedModel;

fn config(out: &std::path::Path, steps: u64) -> RunConfig {
    let base = tiny_run::tiny_run(out, steps, 24);
    let set = tiny_run::with(
        base,
        &[
            "algo.algo=\"rlsd\"",
            "runtime.max_staleness=0",
            "runtime.teacher_sync_interval=2",
            "checkpoint.every_steps=2",
            "checkpoint.keep_last=0",
            "optim.lr=1e-2",
            "model.lora.rank=4",
            "model.lora.target_modules=[\"q_proj\",\"v_proj\",\"up_proj\",\"down_proj\"]",
        ],
    );
    let set = tiny_run::with(set, &tiny_run::EVEN_ANSWER);
    RunConfig::load(None, &set).unwrap()
}

#[test]
fn lora_run_trains_adapters_only_and_resumes_exactly() {
    let a = tempfile::tempdir().unwrap();
    let full = tiny_run::rt()
        .block_on(Runtime::builder(config(a.path(), 4)).run())
        .unwrap();
    assert!(!full.failed, "{}", full.reason);
    assert!(full.steps.iter().any(|s| s.grad_norm > 0.0));

    let base = LoadedModel::load(
        &rlsd::config::builtin_model_dir(),
        tch::Device::Cpu,
        tch::Kind::Float,
    )
    .unwrap();
    let base_vars = base.vs.variables();
    let mut adapters = 0;
    for (n, t) in &full.final_weights.tensors {
        match base_vars.get(n) {
            Some(b) => assert!(b.equal(t), "base tensor {n} changed"),
            None => {
                assert!(n.contains(".lora_"), "unexpected tensor {n}");
                adapters += 1;
                if n.contains("lora_B") {
                    assert!(t.abs().sum(tch::Kind::Float).double_value(&[]) > 0.0);
                }
            }
        }
    }
    assert_eq!(adapters, 2 * 4 * 2, "A and B of 4 modules in 2 layers");

    let mid = a.path().join("checkpoints/step-000002");
    assert!(mid.join("model/adapter_model.safetensors").exists());
    let b = tempfile::tempdir().unwrap();
    let resumed = tiny_run::rt()
        .block_on(Runtime::builder(config(b.path(), 4)).resume(&mid).run())
        .unwrap();
    assert!(!resumed.failed, "{}", resumed.reason);
    for (x, y) in full.steps[2..].iter().zip(&resumed.steps) {
        assert_eq!(
            x.reward_mean, y.reward_mean,
            "step {}: same rollouts",
            x.step
        );
    }
    for ((n, x), (_, y)) in full
        .final_weights
        .tensors
        .iter()
        .zip(&resumed.final_weights.tensors)
    {
        assert!(x.equal(y), "tensor {n} differs after resume");
    }
}
