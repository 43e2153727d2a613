//! LoRA against peft (goldens from scripts/make_lora_goldens.py): logits within
//! 1e-5 and equal greedy ids with a peft adapter applied, the merged weights
//! equal to `merge_and_unload`'s, a fresh adapter starting exactly at the base
//! model, training that moves the adapters alone, and adapters saved here
//! that load back with the same logits.

use anyhow::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rlsd::model::lora::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use rlsd::model::transformer::TrunkInput;
use rlsd::model::{generate, GenerateOptions, LoadedModel, LoraConfig};
use rlsd::optim::{AdamW, OptimConfig};
use serde_json::Value;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const CASES: [&str; 2] = ["llama", "qwen2"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn base(name: &str) -> LoadedModel {
    LoadedModel::load(
        &fixtures().join("models").join(name),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap()
}

fn adapter_dir(name: &str) -> PathBuf {
    fixtures().join("lora").join(name)
}

fn golden(name: &str) -> Value {
    let text = std::fs::read_to_string(adapter_dir(name).join("golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids_of(v: &Value) -> Vec<i64> {
    serde_json::from_value(v.clone()).unwrap()
}

fn logits(m: &LoadedModel, ids: &[i64]) -> Tensor {
    let x = Tensor::from_slice(ids).view([1, -1]);
    m.lm.forward_all(&x, None).unwrap().squeeze_dim(0)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Every base (non-adapter) parameter, deep-copied, by name.
fn base_weights(m: &LoadedModel) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> =
        m.vs.variables()
            .into_iter()
            .filter(|(n, _)| !rlsd::model::lora::is_adapter_name(n))
            .map(|(n, t)| (n, t.detach().copy()))
            .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn peft_adapter_gives_peft_logits_and_greedy_ids() -> Result<()> {
    for name in CASES {
        let g = golden(name);
        let mut m = base(name);
        m.load_adapter(&adapter_dir(name))?;
        let scale = m.lora.as_ref().unwrap().scale();
        assert!(
            (scale - g["scale"].as_f64().unwrap()).abs() < 1e-12,
            "{name}: scale"
        );
        let eos = m.eos_ids();
        for p in g["prompts"].as_array().unwrap() {
            let ids = ids_of(&p["ids"]);
            let want: Vec<Vec<f32>> = serde_json::from_value(p["logits"].clone())?;
            let d = max_abs_diff(&logits(&m, &ids), &Tensor::from_slice2(&want));
            eprintln!("{name}: max |logit - peft| = {d:.3e}");
            assert!(d < 1e-5, "{name}: logits differ from peft's by {d}");
            let opts = GenerateOptions {
                max_new_tokens: 12,
                greedy: true,
                eos_ids: eos.clone(),
                ..Default::default()
            };
            let got = generate(&m.lm, &[ids], &opts, &mut StdRng::seed_from_u64(0))?;
            assert_eq!(got[0].tokens, ids_of(&p["greedy"]), "{name}: greedy ids");
        }
        // The adapter really changes the model (B is not zero).
        let ids = ids_of(&g["prompts"][0]["ids"]);
        assert!(max_abs_diff(&logits(&m, &ids), &logits(&base(name), &ids)) > 1e-2);
    }
    Ok(())
}

#[test]
fn merged_weights_equal_peft_merge_and_unload() -> Result<()> {
    for name in CASES {
        let mut m = base(name);
        m.load_adapter(&adapter_dir(name))?;
        let ids = ids_of(&golden(name)["prompts"][1]["ids"]);
        let unmerged = logits(&m, &ids);
        m.merge_lora()?;
        assert!(m.lora.is_none());
        let want: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(adapter_dir(name).join("merged.safetensors"))?
                .into_iter()
                .collect();
        let mine = base_weights(&m);
        assert_eq!(mine.len(), want.len(), "{name}: number of tensors");
        for (n, t) in &mine {
            let w = want
                .get(n)
                .unwrap_or_else(|| panic!("{name}: peft has no {n}"));
            let d = max_abs_diff(t, w);
            assert!(d < 1e-6, "{name}: merged {n} differs from peft's by {d}");
        }
        let d = max_abs_diff(&logits(&m, &ids), &unmerged);
        assert!(d < 1e-4, "{name}: merged logits moved by {d}");
    }
    Ok(())
}

#[test]
fn fresh_adapter_starts_exactly_at_the_base_model() -> Result<()> {
    for name in CASES {
        let before = base(name);
        let mut m = base(name);
        let cfg = LoraConfig {
            rank: 4,
            target_modules: rlsd::model::lora_config::TARGET_MODULES
                .map(String::from)
                .to_vec(),
            ..LoraConfig::default()
        };
        m.attach_lora(&cfg)?;
        // 7 projections x 2 layers x (A, B).
        assert_eq!(m.adapter_tensors().len(), 28);
        let ids = ids_of(&golden(name)["prompts"][2]["ids"]);
        let same = logits(&m, &ids).equal(&logits(&before, &ids));
        assert!(same, "{name}: B = 0 must give the base logits bit for bit");
    }
    Ok(())
}

/// A next-token loss through the trunk (checkpointed or not) and the head.
fn train_steps(m: &LoadedModel, opt: &mut AdamW, checkpoint: bool, steps: usize) -> Result<()> {
    let ids = Tensor::from_slice(&[5i64, 9, 14, 3, 22, 7, 11, 2, 5, 9, 30, 4]).view([2, 6]);
    for _ in 0..steps {
        opt.zero_grad();
        let pass =
            m.lm.trunk_forward(&TrunkInput::Rows(ids.shallow_clone()), checkpoint)?;
        let logits = m.lm.head(&pass.hidden.narrow(1, 0, 5))?;
        let target = ids.narrow(1, 1, 5).reshape([-1]);
        let loss = logits
            .reshape([-1, logits.size()[2]])
            .log_softmax(-1, Kind::Float)
            .nll_loss(&target);
        m.lm.trunk_backward(pass, &loss)?;
        opt.step(1e-2)?;
    }
    Ok(())
}

#[test]
fn training_moves_only_the_adapters_with_and_without_checkpointing() -> Result<()> {
    let cfg = LoraConfig {
        rank: 2,
        alpha: 4.0,
        target_modules: vec!["q_proj".into(), "v_proj".into(), "up_proj".into()],
        ..LoraConfig::default()
    };
    let mut adapters = Vec::new();
    for checkpoint in [false, true] {
        let mut m = base("llama");
        m.attach_lora(&cfg)?;
        let before = base_weights(&m);
        let a_before: Vec<Tensor> = m
            .adapter_tensors()
            .iter()
            .map(|(_, t)| t.detach().copy())
            .collect();
        let mut opt = AdamW::new(&m.vs, &OptimConfig::default());
        let names: Vec<&str> = opt.param_names().collect();
        assert_eq!(names.len(), 12, "AdamW holds the adapters alone: {names:?}");
        assert!(names.iter().all(|n| n.contains(".lora_")));
        train_steps(&m, &mut opt, checkpoint, 3)?;
        for ((n, b), (_, a)) in before.iter().zip(base_weights(&m)) {
            assert!(b.equal(&a), "base tensor {n} changed");
        }
        let after = m.adapter_tensors();
        for ((n, a), b) in after.iter().zip(&a_before) {
            assert!(!a.equal(b), "adapter {n} did not move");
        }
        adapters.push(after);
    }
    // Checkpointing recomputes the same graph: the same adapters come out.
    for ((n, a), (_, b)) in adapters[0].iter().zip(&adapters[1]) {
        let d = max_abs_diff(a, b);
        assert!(d < 1e-6, "{n}: checkpointed training differs by {d}");
    }
    Ok(())
}

#[test]
fn trained_adapter_saves_in_peft_format_and_loads_back() -> Result<()> {
    let mut m = base("qwen2");
    m.attach_lora(&LoraConfig {
        rank: 3,
        alpha: 5.0,
        rslora: true,
        target_modules: vec!["k_proj".into(), "o_proj".into(), "gate_proj".into()],
        init_seed: 4,
        ..LoraConfig::default()
    })?;
    let mut opt = AdamW::new(&m.vs, &OptimConfig::default());
    train_steps(&m, &mut opt, false, 2)?;
    let dir = tempfile::tempdir()?;
    m.save(dir.path())?;
    for f in [ADAPTER_CONFIG, ADAPTER_WEIGHTS, "model.safetensors"] {
        assert!(dir.path().join(f).exists(), "{f} written");
    }
    let base_file = Tensor::read_safetensors(dir.path().join("model.safetensors"))?;
    assert!(base_file.iter().all(|(n, _)| !n.contains("lora_")));
    let adapter = Tensor::read_safetensors(dir.path().join(ADAPTER_WEIGHTS))?;
    assert!(adapter
        .iter()
        .any(|(n, _)| n == "base_model.model.model.layers.1.mlp.gate_proj.lora_B.weight"));

    // The folder loads back with its adapter (a LoRA checkpoint resumes so).
    let back = LoadedModel::load(dir.path(), Device::Cpu, Kind::Float)?;
    // The seed of the initial draw is not part of peft's file.
    let want = m.lora.clone().map(|c| LoraConfig { init_seed: 0, ..c });
    assert_eq!(back.lora, want);
    let prompts: Vec<Vec<i64>> = golden("qwen2")["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| ids_of(&p["ids"]))
        .collect();
    for ids in &prompts {
        assert!(logits(&back, ids).equal(&logits(&m, ids)));
    }
    // For scripts/make_lora_goldens.py check-saved: the adapter and its logits.
    if let Ok(out) = std::env::var("RLSD_SAVE_DIR") {
        let out = PathBuf::from(out);
        m.save_adapter(&out, Some("tests/fixtures/models/qwen2"))?;
        let logits_json = prompts
            .iter()
            .map(|ids| Ok(Vec::<Vec<f32>>::try_from(&logits(&m, ids))?))
            .collect::<Result<Vec<_>>>()?;
        let text = serde_json::json!({"ids": prompts, "logits": logits_json});
        std::fs::write(out.join("rlsd_logits.json"), text.to_string())?;
    }
    Ok(())
}

#[test]
fn bad_adapters_are_refused_naming_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let src = adapter_dir("llama");
    std::fs::copy(src.join(ADAPTER_WEIGHTS), dir.path().join(ADAPTER_WEIGHTS))?;
    // The llama adapter on qwen2: same names, but qwen2's targets are fewer.
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(src.join(ADAPTER_CONFIG))?)?;
    cfg["target_modules"] = serde_json::json!(["q_proj"]);
    std::fs::write(dir.path().join(ADAPTER_CONFIG), cfg.to_string())?;
    let err = base("llama")
        .load_adapter(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(ADAPTER_WEIGHTS) && err.contains("matches no adapter"),
        "{err}"
    );
    cfg["use_dora"] = serde_json::json!(true);
    std::fs::write(dir.path().join(ADAPTER_CONFIG), cfg.to_string())?;
    let err = base("llama")
        .load_adapter(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(ADAPTER_CONFIG) && err.contains("use_dora"),
        "{err}"
    );
    Ok(())
}

#[test]
fn run_config_refuses_bad_lora_keys_by_name() {
    let load = |set: &[&str]| {
        let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
        rlsd::config::RunConfig::load(None, &set)
    };
    let adapter = format!("model.adapter={}", adapter_dir("llama").display());
    let cfg = load(&[&adapter]).unwrap();
    assert_eq!(cfg.model.adapter, Some(adapter_dir("llama")));
    let err = load(&[&adapter, "model.lora.rank=4"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.adapter") && err.contains("not both"),
        "{err}"
    );
    // Dropout trains (tests/lora_dropout.rs); 1 or more is refused.
    assert!(load(&["model.lora.dropout=0.1"]).is_ok());
    let err = load(&["model.lora.dropout=1.0"]).unwrap_err().to_string();
    assert!(err.contains("model.lora.dropout"), "{err}");
    let err = load(&["model.lora.target_modules=[\"lm_head\"]"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.lora.target_modules"), "{err}");
    let err = load(&["model.lora.ranks=4"]).unwrap_err().to_string();
    assert!(err.contains("ranks"), "{err}");
    let err = load(&["model.adapter=/nonexistent/adapter"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.adapter") && err.contains("adapter_config.json"),
        "{err}"
    );
}

#[test]
fn bf16_base_keeps_f32_adapters_and_stays_frozen() -> Result<()> {
    let dir = fixtures().join("models/llama");
    let mut m = LoadedModel::load(&dir, Device::Cpu, Kind::BFloat16)?;
    m.load_adapter(&adapter_dir("llama"))?;
    assert!(m
        .adapter_tensors()
        .iter()
        .all(|(_, t)| t.kind() == Kind::Float));
    let g = golden("llama");
    let ids = ids_of(&g["prompts"][0]["ids"]);
    let want: Vec<Vec<f32>> = serde_json::from_value(g["prompts"][0]["logits"].clone())?;
    let got = logits(&m, &ids).to_kind(Kind::Float);
    let d = max_abs_diff(&got, &Tensor::from_slice2(&want));
    assert!(d < 0.25, "bf16 base with the adapter: logits off by {d}");
    let before = base_weights(&m);
    let mut opt = AdamW::new(&m.vs, &OptimConfig::default());
    train_steps(&m, &mut opt, true, 2)?;
    for ((n, b), (_, a)) in before.iter().zip(base_weights(&m)) {
        assert!(b.equal(&a), "bf16 base tensor {n} changed");
    }
    Ok(())
}

#[test]
fn replicas_and_snapshots_carry_the_adapter() -> Result<()> {
    let mut m = base("qwen2");
    m.load_adapter(&adapter_dir("qwen2"))?;
    let ids = ids_of(&golden("qwen2")["prompts"][0]["ids"]);
    let replica = m.replicate(Device::Cpu)?;
    assert_eq!(replica.lora, m.lora);
    assert!(logits(&replica, &ids).equal(&logits(&m, &ids)));
    // A snapshot (what a teacher sync sends) holds base and adapters by name.
    let snap = m.snapshot(1)?;
    assert!(snap
        .tensors
        .iter()
        .any(|(n, _)| n.ends_with("lora_B.weight")));
    let mut other = base("qwen2");
    other.attach_lora(m.lora.as_ref().unwrap())?;
    other.load_snapshot(&snap)?;
    assert!(logits(&other, &ids).equal(&logits(&m, &ids)));
    Ok(())
}
