//! What the binary prints when its output is piped: no ANSI escape codes,
//! one line per checkpoint, user-facing names, lambda only where it means
//! something; `config show`, `train --model`, and pretrain's summary.

mod common;
#[path = "common/timed.rs"]
mod timed;

use std::path::Path;
use std::process::{Command, Output};

/// Run the binary with stdout and stderr piped, colours not turned off by
/// the environment (the binary must see the pipe by itself).
fn rlsd(args: &[&str]) -> (Output, String, String) {
    let out = timed::output_within(
        Command::new(env!("CARGO_BIN_EXE_rlsd"))
            .args(args)
            .env_remove("NO_COLOR")
            .env_remove("RLSD_LOG")
            .env_remove("RUST_LOG"),
        std::time::Duration::from_secs(600),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "rlsd {args:?} failed:\n{stdout}\n{stderr}"
    );
    (out, stdout, stderr)
}

fn no_escapes(what: &str, text: &str) {
    assert!(!text.contains('\x1b'), "{what} has escape codes:\n{text:?}");
}

fn train(algo: &str, model: &Path, out_dir: &Path) -> (String, String) {
    let (_, stdout, stderr) = rlsd(&[
        "train",
        "--model",
        model.to_str().unwrap(),
        "--set",
        &format!("algo.algo={algo}"),
        "--set",
        "runtime.steps=3",
        "--set",
        "checkpoint.every_steps=2",
        "--set",
        "rollout.batch_prompts=2",
        "--set",
        "rollout.group_size=2",
        "--set",
        "rollout.max_new_tokens=6",
        "--set",
        &format!("runtime.out_dir={}", out_dir.display()),
    ]);
    no_escapes("stdout", &stdout);
    no_escapes("stderr", &stderr);
    (stdout, stderr)
}

#[test]
fn piped_train_output_is_plain_with_one_line_per_event() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    common::pretrain_tiny(&model);

    let (stdout, stderr) = train("rlsd", &model, &tmp.path().join("rlsd"));
    assert!(stdout.contains("rlsd train: algo=rlsd"), "{stdout}");
    assert!(
        stdout.contains(&format!("model={}", model.display())),
        "{stdout}"
    );
    assert!(!stdout.contains("Rlsd"), "{stdout}");
    let header = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("step"))
        .unwrap();
    assert!(header.contains("lambda") && header.contains("tok/s") && header.contains("eta"));
    // One table line per step.
    for step in 1..=3 {
        let n = stdout
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(&step.to_string()))
            .count();
        assert_eq!(n, 1, "step {step}:\n{stdout}");
    }
    // Checkpoints at steps 2 and 3 (the last), each logged once.
    let all = format!("{stdout}\n{stderr}");
    let saved: Vec<&str> = all
        .lines()
        .filter(|l| l.to_lowercase().contains("checkpoint") && l.contains("step-"))
        .filter(|l| !l.starts_with("last checkpoint"))
        .collect();
    assert_eq!(saved.len(), 2, "{saved:#?}");
    assert_ne!(saved[0], saved[1]);

    // GRPO has no lambda and no token weights to show.
    let (stdout, _) = train("grpo", &model, &tmp.path().join("grpo"));
    assert!(stdout.contains("algo=grpo"), "{stdout}");
    let header = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("step"))
        .unwrap();
    assert!(
        !header.contains("lambda") && !header.contains("w_clip"),
        "{header}"
    );
}

#[test]
fn config_show_prints_the_resolved_config_as_toml() {
    let (_, stdout, _) = rlsd(&[
        "config",
        "show",
        "--set",
        "algo.lambda0=0.25",
        "--set",
        "data.system_prompt=Be brief.",
    ]);
    no_escapes("stdout", &stdout);
    let table: toml::Table = stdout.parse().expect("config show prints TOML");
    assert_eq!(table["algo"]["lambda0"].as_float(), Some(0.25));
    assert_eq!(table["algo"]["algo"].as_str(), Some("rlsd"));
    assert_eq!(table["data"]["system_prompt"].as_str(), Some("Be brief."));
    // Keys the built-in config leaves out are shown with their defaults.
    assert_eq!(table["data"]["format"].as_str(), Some("auto"));
    // Optional keys left unset are listed as comments; set ones are not.
    assert!(stdout.contains("# data.path: unset"), "{stdout}");
    assert!(stdout.contains("# model.revision: unset"), "{stdout}");
    assert!(!stdout.contains("# data.system_prompt: unset"), "{stdout}");
    // What it prints loads back as the same run.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("shown.toml");
    std::fs::write(&file, &stdout).unwrap();
    let (_, again, _) = rlsd(&["config", "show", "--config", file.to_str().unwrap()]);
    assert_eq!(again, stdout);
}

#[test]
fn pretrain_prints_a_summary_not_a_debug_struct() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("base");
    let (_, stdout, stderr) = rlsd(&[
        "pretrain",
        "--set",
        &format!("out_dir={}", out.display()),
        "--set",
        "max_steps=2",
        "--set",
        "model.hidden_size=32",
        "--set",
        "model.intermediate_size=64",
        "--set",
        "model.num_hidden_layers=1",
        "--set",
        "model.num_attention_heads=2",
        "--set",
        "model.num_key_value_heads=1",
        "--set",
        "eval_problems=1",
        "--set",
        "eval_max_new_tokens=4",
    ]);
    no_escapes("stdout", &stdout);
    no_escapes("stderr", &stderr);
    assert!(stdout.contains("pretrained"), "{stdout}");
    assert!(!stdout.contains("PretrainReport") && !stderr.contains("PretrainReport"));
}
