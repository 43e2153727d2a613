//! The memory plan with LoRA: a frozen base has no gradients, moments or
//! master copy, so Qwen2.5-7B and Qwen3-8B (bf16) fit on one 80 GB device
//! with adapters where full fine-tuning does not. The frozen base is held once
//! per device: replicas placed with the optimizer (or with each other) share it.

use rlsd::config::RunConfig;
use rlsd::memory::{check_fits, known_shape, plan, total, GIB, SHARED_BASE};
use rlsd::model::LoraConfig;
use std::path::PathBuf;
use std::process::Command;

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
    for name in ["qwen2.5-7b", "qwen3-8b", "qwen3-vl-8b"] {
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

/// The bytes of item `what` of actor `actor` in plan `p`.
fn bytes_of(p: &rlsd::memory::MemoryPlan, actor: &str, what: &str) -> Option<f64> {
    let a = p.actors.iter().find(|a| a.actor == actor)?;
    a.items.iter().find(|i| i.what == what).map(|i| i.bytes)
}

#[test]
fn the_base_is_counted_once_per_device() {
    let shape = known_shape("qwen2.5-7b").unwrap();
    let lora = LoraConfig::default();
    let pa = lora.param_count(&shape) as f64;
    let base = 2.0 * rlsd::memory::param_count(&shape) as f64;
    // All on one device: the replicas compute with the optimizer's base.
    let one = plan(&one_device(Some(lora.clone())), &shape, 512).unwrap();
    assert_eq!(bytes_of(&one, "optimizer", "weights"), Some(base));
    for actor in ["sampler", "teacher"] {
        assert_eq!(bytes_of(&one, actor, "weights"), None, "{actor}");
        assert_eq!(bytes_of(&one, actor, SHARED_BASE), Some(0.0), "{actor}");
        assert_eq!(bytes_of(&one, actor, "LoRA adapters"), Some(4.0 * pa));
    }
    // The published snapshot is the adapters alone.
    assert_eq!(
        bytes_of(&one, "optimizer", "weight snapshot"),
        Some(4.0 * pa)
    );
    // Sampler and teacher together on a second device: one copy there.
    let mut cfg = one_device(Some(lora.clone()));
    cfg.runtime.sampler_device = "cuda:1".into();
    cfg.runtime.teacher_device = "cuda:1".into();
    let two = plan(&cfg, &shape, 512).unwrap();
    assert_eq!(bytes_of(&two, "sampler", "weights"), Some(base));
    assert_eq!(bytes_of(&two, "teacher", SHARED_BASE), Some(0.0));
    // Without LoRA every replica holds its own copy.
    let full = plan(&one_device(None), &shape, 512).unwrap();
    for actor in ["sampler", "teacher"] {
        assert_eq!(bytes_of(&full, actor, "weights"), Some(base), "{actor}");
    }
    // One device with LoRA: the optimizer's base plus adapters, replicas'
    // working memory; 7B in bf16 is about 14 GiB of base.
    let gib = one.devices[0].1 / GIB;
    assert!(gib < 80.0 && gib > base / GIB, "{gib}");
}

#[test]
fn rlsd_plan_shows_seven_and_eight_b_fitting_80_gb_with_lora() {
    let bin = std::env::var_os("RLSD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rlsd")));
    for name in ["qwen2.5-7b", "qwen3-8b", "qwen3-vl-8b"] {
        let mut args: Vec<String> = ["plan", "--device-memory-gib", "80"]
            .map(String::from)
            .to_vec();
        for set in [
            format!("model.path={name}"),
            "model.dtype=bf16".into(),
            "runtime.sampler_device=cuda:0".into(),
            "runtime.teacher_device=cuda:0".into(),
            "runtime.optimizer_device=cuda:0".into(),
            "rollout.batch_prompts=8".into(),
            "rollout.group_size=8".into(),
            "rollout.max_new_tokens=512".into(),
            "optim.activation_checkpointing=true".into(),
        ] {
            args.push("--set".into());
            args.push(set);
        }
        let run = |extra: &[&str]| {
            let mut a = args.clone();
            a.extend(extra.iter().map(|s| s.to_string()));
            let o = Command::new(&bin)
                .args(&a)
                .env("NO_COLOR", "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            (o.status.success(), text)
        };
        let (fits, text) = run(&["--set", "model.lora.rank=16"]);
        assert!(fits, "{name} with LoRA:\n{text}");
        assert!(
            text.contains(SHARED_BASE) && text.contains("fits"),
            "{text}"
        );
        let (fits, text) = run(&[]);
        assert!(!fits, "{name} full fine-tuning fits 80 GB?\n{text}");
    }
}
