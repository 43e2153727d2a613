//! Loading errors, saving in the Hugging Face format, snapshots, random init
//! and the `Policy` implementation of `LoadedModel`.
//!
//! `RLSD_SAVE_DIR=DIR cargo test --test model_io saved_model_round_trips` also
//! leaves a saved model and its logits in DIR for
//! `scripts/make_model_goldens.py check-saved DIR` (transformers' side).

use anyhow::Result;
use rlsd::model::{token_logprobs, Config, LoadedModel};
use rlsd::policy::{Policy, PromptResponse};
use rlsd::Error;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

/// Copy a fixture folder into a temp dir so a test can damage it.
fn copy_fixture(name: &str) -> Result<tempfile::TempDir> {
    let tmp = tempfile::tempdir()?;
    for e in std::fs::read_dir(fixture(name))? {
        let e = e?;
        std::fs::copy(e.path(), tmp.path().join(e.file_name()))?;
    }
    Ok(tmp)
}

fn rewrite_weights(dir: &Path, edit: impl Fn(&mut Vec<(String, Tensor)>)) -> Result<()> {
    let path = dir.join("model.safetensors");
    let mut t = Tensor::read_safetensors(&path)?;
    edit(&mut t);
    Tensor::write_safetensors(&t, &path)?;
    Ok(())
}

#[test]
fn missing_and_misshaped_tensors_are_named() -> Result<()> {
    let tmp = copy_fixture("llama")?;
    rewrite_weights(tmp.path(), |t| {
        t.retain(|(n, _)| n != "model.layers.1.mlp.up_proj.weight")
    })?;
    let err = LoadedModel::load(tmp.path(), Device::Cpu, Kind::Float).unwrap_err();
    match &err {
        Error::MissingTensor { name, expected, .. } => {
            assert_eq!(name, "model.layers.1.mlp.up_proj.weight");
            assert_eq!(expected, &vec![96, 48]);
        }
        other => panic!("wrong error {other}"),
    }
    assert!(err.to_string().contains("up_proj") && err.to_string().contains("[96, 48]"));

    let tmp = copy_fixture("llama")?;
    rewrite_weights(tmp.path(), |t| {
        for (n, x) in t.iter_mut() {
            if n == "model.layers.0.self_attn.k_proj.weight" {
                *x = Tensor::zeros([20, 48], (Kind::Float, Device::Cpu));
            }
        }
    })?;
    let err = LoadedModel::load(tmp.path(), Device::Cpu, Kind::Float).unwrap_err();
    let msg = err.to_string();
    // Names the weights file, the tensor, both shapes and the config.json
    // the expected shape comes from.
    assert!(
        matches!(&err, Error::Model { path, .. } if path.ends_with("model.safetensors")),
        "{msg}"
    );
    let config = tmp.path().join("config.json");
    assert!(
        msg.contains("model.layers.0.self_attn.k_proj.weight")
            && msg.contains("[24, 48]")
            && msg.contains("[20, 48]")
            && msg.contains(&config.display().to_string()),
        "{msg}"
    );
    Ok(())
}

#[test]
fn bad_folders_and_configs_give_clear_errors() -> Result<()> {
    let tmp = copy_fixture("qwen2")?;
    let cfg = std::fs::read_to_string(tmp.path().join("config.json"))?
        .replace("Qwen2ForCausalLM", "MambaForCausalLM");
    std::fs::write(tmp.path().join("config.json"), cfg)?;
    let msg = LoadedModel::load(tmp.path(), Device::Cpu, Kind::Float)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("MambaForCausalLM") && msg.contains("config.json"),
        "{msg}"
    );

    let tmp = copy_fixture("qwen2")?;
    std::fs::remove_file(tmp.path().join("model.safetensors"))?;
    let msg = LoadedModel::load(tmp.path(), Device::Cpu, Kind::Float)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("model.safetensors"), "{msg}");

    let tmp = copy_fixture("qwen2")?;
    std::fs::write(
        tmp.path().join("model.safetensors"),
        b"not a safetensors file",
    )?;
    let msg = LoadedModel::load(tmp.path(), Device::Cpu, Kind::Float)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("safetensors"),
        "{msg}"
    );

    let tmp = copy_fixture("qwen3")?;
    std::fs::remove_file(tmp.path().join("model-00002-of-00002.safetensors"))?;
    let msg = LoadedModel::load(tmp.path(), Device::Cpu, Kind::Float)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("model-00002-of-00002.safetensors"), "{msg}");

    let msg = LoadedModel::load(Path::new("/nonexistent/model"), Device::Cpu, Kind::Float)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("/nonexistent/model/config.json"), "{msg}");
    Ok(())
}

/// Save `m` plus the float32 logits of the saved weights on `seqs`
/// (`rlsd_logits.json`) for transformers' check, which also computes in float32.
fn save_with_logits(m: &LoadedModel, seqs: &[Vec<i64>], out: &Path) -> Result<()> {
    m.save(out)?;
    let f32_model = LoadedModel::load(out, Device::Cpu, Kind::Float)?;
    let logits: Vec<Vec<Vec<f32>>> = logits_of(&f32_model, seqs)?
        .iter()
        .map(|t| Vec::<Vec<f32>>::try_from(t.to_kind(Kind::Float)).unwrap())
        .collect();
    let json = serde_json::json!({ "ids": seqs, "logits": logits });
    std::fs::write(out.join("rlsd_logits.json"), json.to_string())?;
    Ok(())
}

fn logits_of(m: &LoadedModel, seqs: &[Vec<i64>]) -> Result<Vec<Tensor>> {
    seqs.iter()
        .map(|s| {
            Ok(m.lm
                .forward_all(&Tensor::from_slice(s).view([1, -1]), None)?
                .squeeze_dim(0))
        })
        .collect()
}

#[test]
fn saved_model_round_trips() -> Result<()> {
    let seqs = vec![vec![1, 5, 9, 17, 3], vec![1, 40, 41, 2, 0, 63, 12, 8]];
    for (name, kind) in [
        ("qwen3", Kind::Float),
        ("llama", Kind::Float),
        ("qwen2", Kind::BFloat16),
    ] {
        let m = LoadedModel::load(&fixture(name), Device::Cpu, kind)?;
        let tmp = tempfile::tempdir()?;
        m.save(tmp.path())?;
        if let Some(out) = std::env::var_os("RLSD_SAVE_DIR") {
            save_with_logits(&m, &seqs, &PathBuf::from(out).join(name))?;
        }
        let back = LoadedModel::load(tmp.path(), Device::Cpu, kind)?;
        assert_eq!(back.config, m.config);
        assert_eq!(back.eos_ids(), m.eos_ids());
        assert_eq!(back.pad_id(), m.pad_id());
        let (t1, t2) = (
            m.tokenizer.as_ref().unwrap(),
            back.tokenizer.as_ref().unwrap(),
        );
        assert_eq!(
            t1.encode("The answer is 42.", true)?,
            t2.encode("The answer is 42.", true)?
        );
        assert_eq!(t1.has_chat_template(), t2.has_chat_template());
        for (a, b) in logits_of(&m, &seqs)?.iter().zip(logits_of(&back, &seqs)?) {
            assert!(
                a.equal(&b),
                "{name}: logits changed by a save/load round trip"
            );
        }
    }
    // A random model saved for transformers' check (scripts/make_model_goldens.py check-saved).
    let cfg = Config {
        eos_token_id: vec![2],
        ..Config::tiny()
    };
    let m = LoadedModel::random(cfg, Device::Cpu, 5)?;
    let tmp = tempfile::tempdir()?;
    let out = match std::env::var_os("RLSD_SAVE_DIR") {
        Some(d) => PathBuf::from(d).join("random"),
        None => tmp.path().to_path_buf(),
    };
    save_with_logits(&m, &seqs, &out)?;
    let back = LoadedModel::load(&out, Device::Cpu, Kind::Float)?;
    assert!(back.tokenizer.is_none());
    for (a, b) in logits_of(&m, &seqs)?.iter().zip(logits_of(&back, &seqs)?) {
        assert!(a.equal(&b));
    }
    Ok(())
}

#[test]
fn random_init_is_seeded() -> Result<()> {
    let a = LoadedModel::random(Config::tiny(), Device::Cpu, 1)?;
    let b = LoadedModel::random(Config::tiny(), Device::Cpu, 1)?;
    let c = LoadedModel::random(Config::tiny(), Device::Cpu, 2)?;
    let (sa, sb, sc) = (a.snapshot(0)?, b.snapshot(0)?, c.snapshot(0)?);
    assert_eq!(sa.tensors.len(), sb.tensors.len());
    for ((n, x), (_, y)) in sa.tensors.iter().zip(&sb.tensors) {
        assert!(x.equal(y), "{n} differs for the same seed");
    }
    let name = "model.layers.0.self_attn.q_proj.weight";
    let get = |s: &rlsd::model::WeightSnapshot| {
        s.tensors
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .shallow_clone()
    };
    assert!(!get(&sa).equal(&get(&sc)));
    let std = get(&sa).std(true).double_value(&[]);
    assert!((std - 0.02).abs() < 0.002, "init std {std}");
    Ok(())
}

#[test]
fn snapshots_are_deep_copies_that_load_back() -> Result<()> {
    let mut m = LoadedModel::random(Config::tiny(), Device::Cpu, 3)?;
    let x = Tensor::from_slice(&[1i64, 2, 3, 4]).view([1, -1]);
    let before = m.lm.forward_all(&x, None)?;
    let snap = m.snapshot(7)?;
    assert_eq!(snap.version, 7);
    // Changing the model does not change the snapshot...
    tch::no_grad(|| {
        for v in m.vs.trainable_variables() {
            let _ = v.shallow_clone().g_add_scalar_(0.5);
        }
    });
    assert!(!m.lm.forward_all(&x, None)?.equal(&before));
    // ...and loading it restores the outputs exactly.
    m.load_snapshot(&snap)?;
    assert!(m.lm.forward_all(&x, None)?.equal(&before));
    // An empty model (no init) becomes the same model by loading the snapshot.
    let mut replica = LoadedModel::empty(Config::tiny(), Device::Cpu)?;
    replica.load_snapshot(&snap)?;
    assert!(replica.lm.forward_all(&x, None)?.equal(&before));
    // A snapshot of another shape is refused with the tensor's name.
    let other = LoadedModel::random(
        Config {
            hidden_size: 32,
            ..Config::tiny()
        },
        Device::Cpu,
        3,
    )?;
    let msg = m
        .load_snapshot(&other.snapshot(1)?)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("expected shape"), "{msg}");
    Ok(())
}

#[test]
fn policy_scores_match_token_logprobs_and_carry_gradients() -> Result<()> {
    let m = LoadedModel::load(&fixture("qwen2"), Device::Cpu, Kind::Float)?;
    let batch = vec![
        PromptResponse {
            image_key: 0,
            prompt: vec![5, 9, 17],
            response: vec![3, 44, 8, 2],
        },
        PromptResponse {
            image_key: 0,
            prompt: vec![12],
            response: vec![7],
        },
        PromptResponse {
            image_key: 0,
            prompt: vec![60, 61, 62, 63, 64],
            response: vec![1, 2],
        },
    ];
    let s = m.response_scores(&batch, 0.9)?;
    assert_eq!(s.logprobs.size(), vec![3, 4]);
    let mask: Vec<Vec<f32>> = Vec::try_from(&s.mask)?;
    assert_eq!(
        mask,
        vec![
            vec![1.0, 1.0, 1.0, 1.0],
            vec![1.0, 0.0, 0.0, 0.0],
            vec![1.0, 1.0, 0.0, 0.0]
        ]
    );
    let prompts: Vec<Vec<i64>> = batch.iter().map(|b| b.prompt.clone()).collect();
    let responses: Vec<Vec<i64>> = batch.iter().map(|b| b.response.clone()).collect();
    let want = token_logprobs(&m.lm, &prompts, &responses, 0.9)?;
    let got: Vec<Vec<f32>> = Vec::try_from(&s.logprobs.detach())?;
    let ent: Vec<Vec<f32>> = Vec::try_from(&s.entropy.detach())?;
    for i in 0..3 {
        for j in 0..4 {
            if j < want[i].len() {
                assert!((got[i][j] - want[i][j]).abs() < 1e-5);
                // Entropy of a 100-token distribution lies in (0, ln 100].
                assert!(ent[i][j] > 0.0 && ent[i][j] <= (100f32).ln() + 1e-4);
            } else {
                assert_eq!((got[i][j], ent[i][j]), (0.0, 0.0), "padding must be 0");
            }
        }
    }
    // Hand check of one entropy: -sum p log p at the first response position of row 1.
    let logits =
        m.lm.forward_all(&Tensor::from_slice(&[12i64]).view([1, 1]), None)?;
    let lp = (logits.get(0).get(0) / 0.9).log_softmax(-1, Kind::Float);
    let h = -(lp.exp() * &lp).sum(Kind::Float).double_value(&[]);
    assert!((h - ent[1][0] as f64).abs() < 1e-5);
    // Gradients reach the weights, and not in no-grad mode.
    (s.logprobs.sum(Kind::Float)).backward();
    let g = m.vs.variables()["model.layers.0.mlp.up_proj.weight"].grad();
    assert!(g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    let s2 = tch::no_grad(|| m.response_scores(&batch, 0.9))?;
    assert!(!s2.logprobs.requires_grad());
    Ok(())
}

#[test]
fn saving_over_a_folder_replaces_the_model_files_and_keeps_the_rest() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let a = LoadedModel::random(Config::tiny(), Device::Cpu, 1)?;
    let b = LoadedModel::random(Config::tiny(), Device::Cpu, 2)?;
    a.save(dir.path())?;
    std::fs::write(dir.path().join("notes.txt"), "mine")?;
    b.save(dir.path())?;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes.txt"))?,
        "mine"
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "no scratch folder left: {names:?}"
    );
    let back = LoadedModel::load(dir.path(), Device::Cpu, Kind::Float)?;
    let x = Tensor::from_slice(&[1i64, 2, 3]).view([1, 3]);
    let d = (back.lm.forward_all(&x, None)? - b.lm.forward_all(&x, None)?)
        .abs()
        .max()
        .double_value(&[]);
    assert!(
        d == 0.0,
        "the second save's weights are the ones on disk ({d})"
    );
    Ok(())
}
