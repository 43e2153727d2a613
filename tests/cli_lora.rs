//! LoRA through the built binary: `rlsd export --merge` gives peft's merged
//! weights, `generate --adapter` equals generating from the merged export,
//! and a bad adapter fails naming the file and the option.

use std::path::PathBuf;
use std::process::{Command, Output};
use tch::Tensor;

fn rlsd(args: &[&str]) -> Output {
    let bin = std::env::var_os("RLSD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rlsd")));
    Command::new(bin)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("running rlsd")
}

fn ok(args: &[&str]) -> String {
    let o = rlsd(args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "rlsd {args:?} failed:\n{out}\n{err}");
    out
}

fn fixture(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    p.to_str().unwrap().to_string()
}

#[test]
fn export_merge_equals_peft_and_generate_with_adapter_equals_the_merged_model() {
    let (base, adapter) = (fixture("models/qwen2"), fixture("lora/qwen2"));
    let tmp = tempfile::tempdir().unwrap();
    let merged = tmp.path().join("merged");
    let merged_s = merged.to_str().unwrap();
    let out = ok(&[
        "export",
        "--model",
        &base,
        "--adapter",
        &adapter,
        "--merge",
        "--out",
        merged_s,
    ]);
    assert!(out.contains("adapter merged"), "{out}");
    assert!(!merged.join("adapter_config.json").exists());
    let want: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(PathBuf::from(&adapter).join("merged.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let got = Tensor::read_safetensors(merged.join("model.safetensors")).unwrap();
    assert_eq!(got.len(), want.len());
    for (n, t) in got {
        let d = (&t - &want[&n]).abs().max().double_value(&[]);
        assert!(d < 1e-6, "{n}: merged export differs from peft's by {d}");
    }

    let unmerged = tmp.path().join("unmerged");
    ok(&[
        "export",
        "--model",
        &base,
        "--adapter",
        &adapter,
        "--out",
        unmerged.to_str().unwrap(),
    ]);
    assert!(unmerged.join("adapter_model.safetensors").exists());

    let greedy = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--prompt",
            "What is 12 plus 30?",
            "--max-new-tokens",
            "10",
            "--temperature",
            "0",
        ];
        args.extend_from_slice(extra);
        ok(&args)
    };
    let with_adapter = greedy(&["--model", &base, "--adapter", &adapter]);
    assert_eq!(with_adapter, greedy(&["--model", merged_s]));
    assert_eq!(
        with_adapter,
        greedy(&["--model", unmerged.to_str().unwrap()])
    );
    assert_ne!(
        with_adapter,
        greedy(&["--model", &base]),
        "the adapter changes nothing"
    );
}

#[test]
fn unsupported_adapter_option_fails_naming_file_and_option() {
    let tmp = tempfile::tempdir().unwrap();
    let src = PathBuf::from(fixture("lora/qwen2"));
    let text = std::fs::read_to_string(src.join("adapter_config.json")).unwrap();
    let text = text.replace("\"use_dora\": false", "\"use_dora\": true");
    std::fs::write(tmp.path().join("adapter_config.json"), text).unwrap();
    let o = rlsd(&[
        "generate",
        "--model",
        &fixture("models/qwen2"),
        "--adapter",
        tmp.path().to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("adapter_config.json") && err.contains("use_dora"),
        "{err}"
    );
}
