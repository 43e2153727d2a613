//! `rlsd generate --json` (prompt ids, generated ids, per-token log-probs)
//! and `--raw` (no chat template) through the built binary, with a peft
//! adapter (`--adapter`): the ids equal greedy decoding in-process with the
//! adapter applied, and each log-prob equals the teacher-forced one.

use rlsd::model::{generate, token_logprobs, GenerateOptions, LoadedModel};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use tch::{Device, Kind};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

const PROMPT: &str = "What is 12 plus 30?";

fn generate_json(extra: &[&str]) -> Value {
    let bin = std::env::var_os("RLSD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rlsd")));
    let (model, adapter) = (fixture("models/qwen2"), fixture("lora/qwen2"));
    let o = Command::new(bin)
        .args(["generate", "--json", "--temperature", "0"])
        .args(["--max-new-tokens", "6", "--prompt", PROMPT])
        .arg("--model")
        .arg(&model)
        .arg("--adapter")
        .arg(&adapter)
        .args(extra)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "rlsd generate failed:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{out}"))
}

fn ints(v: &Value) -> Vec<i64> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn generate_json_gives_ids_and_logprobs_raw_or_templated_with_an_adapter() {
    let mut m = LoadedModel::load(&fixture("models/qwen2"), Device::Cpu, Kind::Float).unwrap();
    m.load_adapter(&fixture("lora/qwen2")).unwrap();
    let tok = m.tokenizer.clone().unwrap();
    let raw = generate_json(&["--raw"]);
    let templated = generate_json(&[]);
    let raw_prompt = ints(&raw["prompt_ids"]);
    assert_eq!(raw_prompt, tok.encode(PROMPT, true).unwrap());
    let chat_prompt = ints(&templated["prompt_ids"]);
    assert!(
        chat_prompt.len() > raw_prompt.len(),
        "the chat template adds its turn markers"
    );
    for (out, prompt) in [(&raw, raw_prompt), (&templated, chat_prompt)] {
        let r = &out["responses"][0];
        let ids = ints(&r["ids"]);
        let logprobs: Vec<f32> = serde_json::from_value(r["logprobs"].clone()).unwrap();
        assert!(!ids.is_empty() && ids.len() <= 6);
        assert_eq!(logprobs.len(), ids.len());
        // Greedy in-process with the adapter gives the same ids ...
        let opts = GenerateOptions {
            max_new_tokens: 6,
            greedy: true,
            eos_ids: tok.eos_ids().to_vec(),
            pad_id: tok.pad_id(),
            ..GenerateOptions::default()
        };
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
        let want = tch::no_grad(|| generate(&m.lm, std::slice::from_ref(&prompt), &opts, &mut rng))
            .unwrap();
        assert_eq!(ids, want[0].tokens);
        // ... and each token's log-prob is the teacher-forced one.
        let forced = token_logprobs(&m.lm, &[prompt], &[ids], 1.0).unwrap();
        for (a, b) in logprobs.iter().zip(&forced[0]) {
            assert!((a - b).abs() < 1e-4, "log-prob {a} vs teacher-forced {b}");
        }
    }
}
