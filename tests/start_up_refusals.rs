//! Inputs that used to panic, hang or run silently wrong are refused at the
//! start of `rlsd train`, through the real binary, with one line naming the
//! key, file or row, and nothing written (issue 24, items 3-5).

#[path = "common/timed.rs"]
mod timed;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// `rlsd train` into `out`, one tiny CPU step, with extra `--set`s.
fn train(out: &Path, sets: &[String]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlsd"));
    cmd.args(["train", "--set"])
        .arg(format!("runtime.out_dir={}", out.display()));
    for kv in [
        "runtime.steps=1",
        "rollout.batch_prompts=2",
        "rollout.group_size=2",
        "rollout.max_new_tokens=4",
        "runtime.sampler_device=cpu",
        "runtime.teacher_device=cpu",
        "runtime.optimizer_device=cpu",
    ] {
        cmd.args(["--set", kv]);
    }
    for kv in sets {
        cmd.arg("--set").arg(kv);
    }
    cmd.env("RLSD_LOG", "error").env("NO_COLOR", "1");
    timed::output_within(&mut cmd, Duration::from_secs(120))
}

/// The run was refused with status `code` and one stderr line holding every
/// one of `needles`, and wrote nothing.
fn assert_refused(o: &Output, out: &Path, code: i32, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(o.status.code(), Some(code), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
    assert!(!out.exists(), "{} was written", out.display());
}

/// A copy of the built-in model whose `config.json` has `edit` applied.
fn model_copy(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tiny-arith");
    let dst = dir.join("model");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    let path = dst.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    dst
}

#[test]
fn a_command_verifier_whose_program_does_not_exist_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let o = train(
        &out,
        &[
            "verifier.kind=command".into(),
            "verifier.command.program=rlsd-no-such-verifier".into(),
        ],
    );
    assert_refused(
        &o,
        &out,
        2,
        &["verifier.command.program", "rlsd-no-such-verifier"],
    );
}

#[test]
fn a_prompt_longer_than_the_context_is_refused_naming_its_row() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("long.jsonl");
    let long = "1+".repeat(50_000) + "1";
    std::fs::write(
        &data,
        format!(
            "{{\"prompt\": \"2+2\", \"answer\": \"4\"}}\n{{\"prompt\": \"{long}\", \"answer\": \"1\"}}\n"
        ),
    )
    .unwrap();
    let out = d.path().join("run");
    let o = train(&out, &[format!("data.path={}", data.display())]);
    assert_refused(
        &o,
        &out,
        2,
        &[
            "long.jsonl:2",
            "max_position_embeddings",
            "rollout.max_new_tokens",
        ],
    );
}

#[test]
fn num_hidden_layers_below_one_in_config_json_names_the_file_and_key() {
    let d = tempfile::tempdir().unwrap();
    let model = model_copy(d.path(), |v| v["num_hidden_layers"] = (-1).into());
    let out = d.path().join("run");
    let o = train(&out, &[format!("model.path={}", model.display())]);
    let file = model.join("config.json");
    assert_refused(
        &o,
        &out,
        1,
        &[&file.display().to_string(), "num_hidden_layers"],
    );
}

#[test]
fn a_kv_cache_budget_below_one_row_is_refused_at_start() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let o = train(&out, &["rollout.kv_cache_bytes=16".into()]);
    assert_refused(&o, &out, 2, &["rollout.kv_cache_bytes"]);
}

#[test]
fn data_that_runs_out_before_the_last_step_is_refused_at_start() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let o = train(
        &out,
        &[
            "data.epochs=1".into(),
            "data.task.num_examples=3".into(),
            "runtime.steps=2".into(),
        ],
    );
    assert_refused(&o, &out, 2, &["runtime.steps", "data.epochs"]);
}

#[test]
fn a_toml_syntax_error_names_the_file_and_line_not_a_config_key() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("bad.toml");
    std::fs::write(&file, "[runtime]\nsteps = = 3\n").unwrap();
    let out = d.path().join("run");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlsd"));
    cmd.args(["train", "--config"])
        .arg(&file)
        .env("RLSD_LOG", "error");
    let o = timed::output_within(&mut cmd, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("config key"), "{err}");
    assert_refused(
        &o,
        &out,
        2,
        &[&file.display().to_string(), "not valid TOML", "line 2"],
    );
}

#[test]
fn a_cuda_config_is_shown_and_planned_without_a_gpu_and_refused_only_by_train() {
    let sets = [
        "--set",
        "runtime.sampler_device=cuda:0",
        "--set",
        "runtime.teacher_device=cuda:0",
        "--set",
        "runtime.optimizer_device=cuda:0",
    ];
    for cmd in [
        vec!["config", "show"],
        vec!["plan", "--device-memory-gib", "80"],
    ] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rlsd"));
        c.args(&cmd).args(sets).env("RLSD_LOG", "error");
        let o = timed::output_within(&mut c, Duration::from_secs(60));
        assert!(
            o.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    if tch::Cuda::device_count() == 0 {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("run");
        let o = train(&out, &["runtime.sampler_device=cuda:0".into()]);
        assert_refused(&o, &out, 2, &["runtime.sampler_device", "cuda:0"]);
    }
}
