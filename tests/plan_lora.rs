//! The memory plan with LoRA: a frozen base has no gradients, moments or
//! master copy, so Qwen2.5-7B and Qwen3-8B (bf16) fit on one 80 GB device
//! with adapters where full fine-tuning does not.

use rlsd::config::RunConfig;
use rlsd::memory::{check_fits, known_shape, plan, total, GIB};
use rlsd::model::LoraConfig;

fn one_device(lora: Option<LoraConfig>) -> RunConfig {
    let mut cfg = RunConfig::default();
    cfg.model.dtype = "bf16".into();
    cfg.model.lora = lora;
    for d in [
        &mut cfg.runtime.sampler_device,
        &mut cfg.runtime.teacher_device,
        &mut cfg.runtime.optimizer_device,
    ] {
        *d = "cuda:0".into();
    }
    cfg.rollout.batch_prompts = 8;
    cfg.rollout.group_size = 8;
    cfg.rollout.max_new_tokens = 512;
    cfg.optim.micro_batch_size = 4;
    cfg.optim.activation_checkpointing = true;
    cfg
}

#[test]
fn lora_counts_adapters_alone_in_the_optimizer_state() {
    let shape = known_shape("qwen2.5-0.5b").unwrap();
    let lora = LoraConfig {
        rank: 16,
        target_modules: rlsd::model::lora_config::TARGET_MODULES
            .map(String::from)
            .to_vec(),
        ..LoraConfig::default()
    };
    let pa = lora.param_count(&shape) as f64;
    let p = plan(&one_device(Some(lora)), &shape, 512).unwrap();
    let opt = &p.actors[0].items;
    let get = |w: &str| opt.iter().find(|i| i.what == w).map(|i| i.bytes);
    assert_eq!(get("gradients"), Some(4.0 * pa));
    assert_eq!(get("AdamW moments"), Some(8.0 * pa));
    assert_eq!(get("LoRA adapters"), Some(4.0 * pa));
    assert_eq!(get("f32 master copy"), None);
    // The frozen base is still held (bf16, 2 bytes a parameter).
    assert_eq!(get("weights"), Some(2.0 * p.params as f64));
}

#[test]
fn seven_and_eight_b_fit_one_80_gb_device_with_lora_only() {
    for name in ["qwen2.5-7b", "qwen3-8b"] {
        let shape = known_shape(name).unwrap();
        let memory = |_: &str| Some(80.0 * GIB);
        let full = plan(&one_device(None), &shape, 512).unwrap();
        let lora = plan(&one_device(Some(LoraConfig::default())), &shape, 512).unwrap();
        let gib = |p: &rlsd::memory::MemoryPlan| p.devices[0].1 / GIB;
        eprintln!(
            "{name} ({:.2}B) bf16 on one device: full {:.1} GiB, LoRA {:.1} GiB",
            full.params as f64 / 1e9,
            gib(&full),
            gib(&lora)
        );
        assert!(check_fits(&full, memory).is_err(), "{name}: full fits?");
        check_fits(&lora, memory).unwrap();
        let opt_full = total(&full.actors[0].items);
        let opt_lora = total(&lora.actors[0].items);
        assert!(opt_lora < opt_full / 3.0);
    }
}
