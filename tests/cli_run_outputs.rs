//! Where `rlsd train` leaves a run, through the real binary: a config
//! without `runtime.out_dir` runs in `runs/<model name>`, so `train --model
//! X` after the default run is not refused; and every run ends with
//! `<run>/final/`, the last checkpoint's model as a Hugging Face folder
//! (peft adapter files beside it for LoRA) that `keep_last` does not prune.

mod common;
#[path = "common/timed.rs"]
mod timed;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// Run the binary in `cwd`; panics (with what it printed) when it fails.
fn rlsd_ok(cwd: &Path, args: &[&str]) -> String {
    let out: Output = timed::output_within(
        Command::new(env!("CARGO_BIN_EXE_rlsd"))
            .current_dir(cwd)
            .args(args)
            .env("NO_COLOR", "1"),
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "rlsd {args:?}:\n{stdout}\n{stderr}");
    stdout
}

/// `--set` arguments of a short run.
fn small(extra: &[&str]) -> Vec<String> {
    let mut sets = vec![
        "runtime.steps=3",
        "rollout.batch_prompts=2",
        "rollout.group_size=2",
        "rollout.max_new_tokens=6",
        "checkpoint.every_steps=1",
        "checkpoint.keep_last=1",
    ];
    sets.extend_from_slice(extra);
    sets.iter()
        .flat_map(|s| ["--set".to_string(), s.to_string()])
        .collect()
}

fn train(cwd: &Path, model: Option<&Path>, extra: &[&str]) -> String {
    let mut args = vec!["train".to_string()];
    if let Some(m) = model {
        args.extend(["--model".to_string(), m.display().to_string()]);
    }
    args.extend(small(extra));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    rlsd_ok(cwd, &args)
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

#[test]
fn each_model_gets_its_own_run_folder_and_a_final_model() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let model = cwd.join("models").join("tiny");
    common::pretrain_tiny(&model);

    // The README's default command, then another model: no refusal.
    let out = train(cwd, None, &[]);
    assert!(out.contains("-> runs/builtin"), "{out}");
    let out = train(cwd, Some(&model), &[]);
    assert!(out.contains("-> runs/tiny"), "{out}");
    assert!(cwd.join("runs/builtin/metrics.jsonl").is_file());
    let run = cwd.join("runs/tiny");
    assert!(run.join("metrics.jsonl").is_file());
    // An explicit out_dir still wins.
    let shown = rlsd_ok(
        cwd,
        &[
            "config",
            "show",
            "--set",
            "model.path=/m/other",
            "--set",
            "runtime.out_dir=elsewhere",
        ],
    );
    assert!(shown.contains("out_dir = \"elsewhere\""), "{shown}");
    let shown = rlsd_ok(cwd, &["config", "show", "--set", "model.path=/m/other"]);
    assert!(shown.contains("out_dir = \"runs/other\""), "{shown}");

    // The final model: the last checkpoint's weights, beside a pruned root.
    assert!(out.contains("final model: runs/tiny/final"), "{out}");
    assert_eq!(names(&run.join("checkpoints")), ["step-000003"]);
    let final_dir = run.join("final");
    let files = names(&final_dir);
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(files.contains(&f.to_string()), "{f} not in {files:?}");
    }
    assert_eq!(
        std::fs::read(final_dir.join("model.safetensors")).unwrap(),
        std::fs::read(run.join("checkpoints/step-000003/model/model.safetensors")).unwrap()
    );
    assert!(!names(&run).iter().any(|n| n.starts_with(".final")));
    // It is a model folder the other commands load.
    let eval = rlsd_ok(
        cwd,
        &[
            "eval",
            "--model",
            final_dir.to_str().unwrap(),
            "--n",
            "2",
            "--max-new-tokens",
            "4",
        ],
    );
    assert!(eval.contains("accuracy"), "{eval}");
    // --overwrite removes it with the rest of the old run, and a new one
    // is written.
    std::fs::write(final_dir.join("stale"), "x").unwrap();
    let mut args = vec!["train", "--overwrite", "--model", model.to_str().unwrap()];
    let sets = small(&[]);
    args.extend(sets.iter().map(String::as_str));
    rlsd_ok(cwd, &args);
    assert!(!final_dir.join("stale").exists());
    assert!(final_dir.join("model.safetensors").is_file());

    // LoRA: the base weights with peft's adapter files.
    let out = train(
        cwd,
        Some(&model),
        &[
            "runtime.out_dir=runs/lora",
            "model.lora.rank=4",
            "model.lora.target_modules=[\"q_proj\",\"v_proj\"]",
        ],
    );
    assert!(out.contains("final model: runs/lora/final"), "{out}");
    let files = names(&cwd.join("runs/lora/final"));
    for f in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "config.json",
        "model.safetensors",
    ] {
        assert!(files.contains(&f.to_string()), "{f} not in {files:?}");
    }
}
