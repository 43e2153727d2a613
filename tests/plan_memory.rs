//! The memory model: parameter counts against the published ones and the
//! var store, one actor's items by hand, the shipped Qwen configs, and the
//! refusal message.

use rlsd::config::RunConfig;
use rlsd::memory::overlap::is_transient;
use rlsd::memory::{
    check_fits, known_shape, optimizer_items, param_count, plan, render, total, GIB,
};
use rlsd::model::{Config, LoadedModel};
use rlsd::optim::OptimConfig;
use rlsd::Error;
use tch::{Device, Kind};

#[test]
fn parameter_counts_match_published_and_built_models() {
    // Hugging Face model cards / safetensors totals.
    assert_eq!(
        param_count(&known_shape("Qwen2.5-0.5B").unwrap()),
        494_032_768
    );
    assert_eq!(
        param_count(&known_shape("qwen2.5-1.5b-instruct").unwrap()),
        1_543_714_304
    );
    assert_eq!(
        param_count(&known_shape("/m/Qwen2.5-7B").unwrap()),
        7_615_616_512
    );
    for cfg in [
        Config::tiny(),
        Config {
            tie_word_embeddings: false,
            qk_norm: true,
            o_bias: true,
            mlp_bias: true,
            ..Config::tiny()
        },
    ] {
        let m = LoadedModel::empty(cfg.clone(), Device::Cpu).unwrap();
        let n: usize = m.vs.variables().values().map(|t| t.numel()).sum();
        assert_eq!(param_count(&cfg), n as u64);
    }
}

#[test]
fn optimizer_items_follow_the_formula_by_hand() {
    // tiny: V 64, H 64, I 128, L 2, 4 heads x 16, 2 kv heads x 16 (tied).
    let c = Config::tiny();
    let p = param_count(&c) as f64;
    let optim = OptimConfig {
        max_tokens_per_micro_batch: 40, // rows of 10 positions: 4 per micro-batch
        logit_chunk_tokens: 8,
        ..OptimConfig::default()
    };
    let items = optimizer_items(&c, Kind::BFloat16, &optim, 16, 4, 6);
    let get = |w: &str| items.iter().find(|i| i.what == w).unwrap().bytes;
    assert_eq!(get("weights"), 2.0 * p);
    assert_eq!(get("gradients"), 2.0 * p);
    assert_eq!(get("AdamW moments"), 8.0 * p);
    assert_eq!(get("f32 master copy"), 4.0 * p);
    // A = 4*64 + 3*64 + 2*32 + 4*128 = 1024 per token and layer; T = 40; (L + 1) A w.
    assert_eq!(get("activations"), 40.0 * 3.0 * 1024.0 * 2.0);
    // C = min(N = 24, 8) = 8: 6 * 8 * 64 * 4, plus 3 N H w = 3 * 24 * 64 * 2.
    assert_eq!(
        get("output head"),
        6.0 * 8.0 * 64.0 * 4.0 + 3.0 * 24.0 * 64.0 * 2.0
    );
    // Checkpointed: T (L H + 2 A) w.
    let ck = OptimConfig {
        activation_checkpointing: true,
        ..optim
    };
    let items = optimizer_items(&c, Kind::BFloat16, &ck, 16, 4, 6);
    let act = items
        .iter()
        .find(|i| i.what == "activations")
        .unwrap()
        .bytes;
    assert_eq!(act, 40.0 * (2.0 * 64.0 + 2.0 * 1024.0) * 2.0);
}

/// A shipped config; loaded with CPU devices (validation checks that a
/// device exists), then put back on `cuda:0` as the file says.
fn shipped(name: &str) -> RunConfig {
    let path = format!("{}/configs/{name}", env!("CARGO_MANIFEST_DIR"));
    let on_cpu: Vec<String> = ["sampler", "teacher", "optimizer"]
        .iter()
        .map(|a| format!("runtime.{a}_device=cpu"))
        .collect();
    let mut cfg = RunConfig::load(Some(std::path::Path::new(&path)), &on_cpu).unwrap();
    cfg.runtime.sampler_device = "cuda:0".into();
    cfg.runtime.teacher_device = "cuda:0".into();
    cfg.runtime.optimizer_device = "cuda:0".into();
    cfg
}

#[test]
fn shipped_qwen_configs_fit_an_80_gb_gpu() {
    for name in ["qwen2.5-0.5b-math.toml", "qwen2.5-1.5b-math.toml"] {
        let cfg = shipped(name);
        let shape = known_shape(&cfg.model.path).unwrap();
        let p = plan(&cfg, &shape, 512).unwrap();
        eprintln!("{name}\n{}", render(&p));
        check_fits(&p, |_| Some(80e9)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn a_config_that_cannot_fit_is_refused_with_the_numbers() {
    let mut cfg = shipped("qwen2.5-1.5b-math.toml");
    cfg.model.path = "/models/Qwen2.5-7B-Instruct".into();
    cfg.model.dtype = "f32".into();
    cfg.optim.max_tokens_per_micro_batch = 0;
    cfg.optim.activation_checkpointing = false;
    let shape = known_shape(&cfg.model.path).unwrap();
    let p = plan(&cfg, &shape, 512).unwrap();
    let need = p.devices[0].1;
    assert!(need > 80e9);
    let err = check_fits(&p, |_| Some(80e9)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::DoesNotFit { .. }));
    assert!(
        msg.starts_with("run does not fit device cuda:0: predicted peak"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("{:.2} GiB > 74.51 GiB", need / GIB)),
        "{msg}"
    );
    for part in [
        "optimizer",
        "AdamW moments",
        "activations",
        "sampler",
        "KV cache",
        "teacher",
    ] {
        assert!(msg.contains(part), "{part} missing: {msg}");
    }
    assert!(msg.contains("optim.activation_checkpointing"), "{msg}");
    // The device total is the 1 GiB overhead, every held item, and (at
    // staleness 1) the optimizer's transient work beside the larger of the
    // sampler's and the teacher's (memory::overlap).
    assert_eq!(cfg.runtime.max_staleness, 1);
    let part = |actor: &str, transient: bool| -> f64 {
        let a = p.actors.iter().find(|a| a.actor == actor).unwrap();
        a.items
            .iter()
            .filter(|i| is_transient(i.what) == transient)
            .map(|i| i.bytes)
            .sum()
    };
    let held: f64 = ["optimizer", "sampler", "teacher"]
        .iter()
        .map(|a| part(a, false))
        .sum();
    let (o, g, t) = (
        part("optimizer", true),
        part("sampler", true),
        part("teacher", true),
    );
    assert!(o > 0.0 && g > 0.0 && t > 0.0);
    let by_hand = GIB + held + (o + g.max(t)).max(g + t);
    assert!((by_hand - need).abs() < 1.0, "{by_hand} vs {need}");
    // Every item counted as if all peaked together is more.
    let sum: f64 = p.actors.iter().map(|a| total(&a.items)).sum();
    assert!(sum + GIB > need);
}

#[test]
fn a_kv_cache_budget_bounds_the_samplers_cache() {
    let kv = |cfg: &RunConfig| -> f64 {
        let shape = known_shape(&cfg.model.path).unwrap();
        let p = plan(cfg, &shape, 512).unwrap();
        let sampler = p.actors.iter().find(|a| a.actor == "sampler").unwrap();
        sampler
            .items
            .iter()
            .find(|i| i.what == "KV cache")
            .unwrap()
            .bytes
    };
    let mut cfg = shipped("qwen2.5-0.5b-math.toml");
    let all = kv(&cfg);
    // Qwen2.5-0.5B: 24 layers x 2 KV heads x 64 dims x 2 (k, v) = 6,144 values per
    // position; one row is 512 + max_new_tokens positions.
    let w = if cfg.model.dtype == "f32" { 4.0 } else { 2.0 };
    let row = (512 + cfg.rollout.max_new_tokens) as f64 * 6144.0 * w;
    let rows = (cfg.rollout.batch_prompts * cfg.rollout.group_size) as f64;
    assert!((all - rows * row).abs() < 1.0, "{all} vs {}", rows * row);
    cfg.rollout.kv_cache_bytes = (5.5 * row) as u64;
    assert!((kv(&cfg) - 5.0 * row).abs() < 1.0);
}
