//! `rlsd inspect`, `eval`, `generate` and `plot` through the built binary, on
//! a tiny model pretrained for a few steps, plus their errors on bad input.

mod common;
#[path = "common/timed.rs"]
mod timed;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// A tiny base model (a few pretraining steps) shared by the tests of this file.
fn tiny_model() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("tiny");
        common::pretrain_tiny(&out);
        (tmp, out)
    })
    .1
}

/// The binary under test: Cargo's build of it, or `RLSD_BIN` when set (an
/// installed binary, or a private copy when the target folder is shared).
fn rlsd(args: &[&str]) -> Output {
    let bin = std::env::var_os("RLSD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rlsd")));
    timed::output_within(
        Command::new(bin).args(args).env("NO_COLOR", "1"),
        std::time::Duration::from_secs(600),
    )
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let o = rlsd(args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "rlsd {args:?} failed:\n{out}\n{err}");
    out
}

/// Runs, fails with a non-zero exit, and stderr mentions every `needles` item.
fn fails_naming(args: &[&str], needles: &[&str]) {
    let o = rlsd(args);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "rlsd {args:?} should fail:\n{out}");
    for n in needles {
        assert!(err.contains(n), "rlsd {args:?}: stderr lacks {n:?}:\n{err}");
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[test]
fn inspect_writes_a_page_of_escaped_tokens_and_the_train_step_credit() {
    let model = tiny_model().to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let html = tmp.path().join("page/credit.html");
    let json = tmp.path().join("credit.json");
    let out = ok(&[
        "inspect",
        "--model",
        model,
        "--prompts",
        "2",
        "--set",
        "rollout.group_size=4",
        "--set",
        "rollout.max_new_tokens=16",
        "--set",
        "verifier.kind=regex",
        // Reward responses with one of the digits 0-4: on a barely trained model
        // some do and some don't, so advantages are non-zero.
        "--set",
        "verifier.regex.pattern='[0-4]'",
        "--out",
        html.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.contains("8 responses to 2 prompts"), "{out}");
    // Piped (and under NO_COLOR): the credit view is plain text.
    assert!(
        !out.contains('\x1b'),
        "colour codes on piped stdout: {out:?}"
    );

    let page = std::fs::read_to_string(&html).unwrap();
    let ins: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("inspect JSON");
    let responses = ins["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 8);
    let lambda = ins["lambda"].as_f64().unwrap();
    let eps_w = ins["eps_w"].as_f64().unwrap();
    assert_eq!(ins["algo"], "rlsd");
    assert!((lambda - 0.49).abs() < 1e-12, "lambda at step 1: {lambda}");

    let total_tokens: usize = responses
        .iter()
        .map(|r| r["tokens"].as_array().unwrap().len())
        .sum();
    assert_eq!(page.matches("class=\"tok\"").count(), total_tokens);
    assert_eq!(page.matches("<section class=\"prompt\">").count(), 2);
    assert!(!page.contains("<|"), "raw special token in the page");
    for r in responses {
        let a = r["advantage"].as_f64().unwrap();
        for (j, t) in r["tokens"].as_array().unwrap().iter().enumerate() {
            let t = t.as_str().unwrap();
            if t.chars().all(|c| c.is_ascii_graphic()) {
                assert!(
                    page.contains(&format!(">{}</span>", escape(t))),
                    "token {t:?} not shown escaped"
                );
            }
            // Ahat_t = A ((1 - lambda) + lambda clamp(exp(sign(A) delta_t), 1 - eps_w, 1 + eps_w)).
            let delta = r["delta"][j].as_f64().unwrap();
            let w = r["weights"][j].as_f64().unwrap();
            let ahat = r["ahat"][j].as_f64().unwrap();
            let want_w = (a.signum() * delta).exp();
            let want = a * ((1.0 - lambda) + lambda * want_w.clamp(1.0 - eps_w, 1.0 + eps_w));
            if a != 0.0 {
                assert!(
                    (w - want_w).abs() < 1e-4 * want_w.max(1.0),
                    "w {w} vs {want_w}"
                );
            }
            assert!((ahat - want).abs() < 1e-5, "Ahat {ahat} vs {want}");
        }
    }
    assert!(
        responses
            .iter()
            .any(|r| r["advantage"].as_f64().unwrap() != 0.0),
        "every advantage is 0; the test would not see the credit"
    );
}

#[test]
fn eval_prints_an_accuracy_and_writes_its_report() {
    let model = tiny_model().to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("eval.json");
    let out = ok(&[
        "eval",
        "--model",
        model,
        "--n",
        "6",
        "--batch-size",
        "4",
        "--max-new-tokens",
        "12",
        "--out",
        json.to_str().unwrap(),
    ]);
    let acc: f64 = out
        .split("accuracy ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in {out:?}"));
    assert!((0.0..=1.0).contains(&acc), "{acc}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["n"], 6);
    let records = report["records"].as_array().unwrap();
    assert_eq!(records.len(), 6);
    let correct = records.iter().filter(|r| r["correct"] == true).count();
    assert!((report["accuracy"].as_f64().unwrap() - correct as f64 / 6.0).abs() < 1e-12);
    assert!((report["accuracy"].as_f64().unwrap() - acc).abs() < 1e-4);
    for r in records {
        assert!(r["tokens"].as_u64().unwrap() <= 12);
    }
}

#[test]
fn generate_samples_n_responses_and_greedy_repeats() {
    let model = tiny_model().to_str().unwrap();
    let out = ok(&[
        "generate",
        "--model",
        model,
        "--prompt",
        "What is 2+3?",
        "--n",
        "3",
        "--max-new-tokens",
        "8",
        "--seed",
        "4",
    ]);
    assert_eq!(out.matches("--- response").count(), 3, "{out}");
    let greedy = [
        "generate",
        "--model",
        model,
        "--prompt",
        "What is 2+3?",
        "--n",
        "2",
        "--max-new-tokens",
        "8",
        "--temperature",
        "0",
    ];
    let a = ok(&greedy);
    let blocks: Vec<&str> = a.split("--- response").skip(1).collect();
    assert_eq!(blocks.len(), 2);
    // Greedy decoding: both responses are the same, and so is a second run.
    assert_eq!(
        blocks[0].split_once('\n').unwrap().1,
        blocks[1].split_once('\n').unwrap().1
    );
    assert_eq!(a, ok(&greedy));
}

#[test]
fn plot_redraws_the_run_charts() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let lines: Vec<String> = (1..=5)
        .map(|s| {
            format!(
                r#"{{"step":{s},"reward_mean":{},"accuracy":{},"lambda":0.5,"loss":0.1,"timings":{{"generate_s":1.5,"train_s":0.5}}}}"#,
                0.1 * s as f64,
                0.05 * s as f64
            )
        })
        .collect();
    std::fs::write(run.join("metrics.jsonl"), lines.join("\n") + "\n").unwrap();
    let out = ok(&["plot", run.to_str().unwrap()]);
    assert!(
        out.contains("reward.svg") && out.contains("panels.svg"),
        "{out}"
    );
    let reward = std::fs::read_to_string(run.join("reward.svg")).unwrap();
    assert!(reward.contains("<svg") && reward.contains("reward_mean"));
    let panels = std::fs::read_to_string(run.join("panels.svg")).unwrap();
    assert!(panels.contains("timings.generate_s") && panels.contains("stage seconds"));
    assert!(
        !panels.contains("timings.verify_s"),
        "absent keys are left out"
    );

    let missing = tmp.path().join("no-such-run");
    fails_naming(
        &["plot", missing.to_str().unwrap()],
        &["no-such-run", "does not exist"],
    );
    fails_naming(&["plot", tmp.path().to_str().unwrap()], &["metrics.jsonl"]);
}

#[test]
fn plot_compares_runs_on_one_chart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    for (name, base) in [("rlsd-a", 0.0), ("grpo-b", 1.0)] {
        let run = tmp.path().join(name);
        std::fs::create_dir_all(&run).unwrap();
        let lines: Vec<String> = (1..=6)
            .map(|s| format!(r#"{{"step":{s},"reward_mean":{}}}"#, base + s as f64))
            .collect();
        std::fs::write(run.join("metrics.jsonl"), lines.join("\n") + "\n").unwrap();
        dirs.push(run.to_str().unwrap().to_string());
    }
    let svg = tmp.path().join("cmp.svg");
    let mut args = vec!["plot"];
    args.extend(dirs.iter().map(String::as_str));
    args.extend(["--smooth", "3", "--out", svg.to_str().unwrap()]);
    let out = ok(&args);
    assert!(out.contains("cmp.svg"), "{out}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg"), "an SVG");
    assert!(
        text.contains("rlsd-a") && text.contains("grpo-b"),
        "one legend entry per run"
    );
    assert!(
        text.contains("mean of the last 3 steps"),
        "the smoothing is named"
    );

    fails_naming(
        &[
            "plot",
            &dirs[0],
            "--key",
            "no_such_key",
            "--out",
            svg.to_str().unwrap(),
        ],
        &["no_such_key", "metrics.jsonl"],
    );
}

#[test]
fn bad_input_gives_a_clear_error_and_a_non_zero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing-model");
    let m = missing.to_str().unwrap();
    fails_naming(
        &["eval", "--model", m],
        &["missing-model", "does not exist"],
    );
    fails_naming(
        &["generate", "--model", m, "--prompt", "hi"],
        &["missing-model"],
    );
    fails_naming(&["inspect", "--model", m], &["missing-model"]);
    std::fs::create_dir_all(&missing).unwrap();
    fails_naming(&["eval", "--model", m], &["missing-model", "config.json"]);
    let ck = tmp.path().join("no-checkpoint");
    fails_naming(
        &["eval", "--checkpoint", ck.to_str().unwrap()],
        &["no-checkpoint"],
    );

    fails_naming(
        &["eval", "--set", "algo.lamda0=0.3"],
        &["algo.lamda0", "unknown field"],
    );
    fails_naming(
        &["inspect", "--set", "rollout.group_size=0"],
        &["rollout.group_size"],
    );
    let cfg = tmp.path().join("nope.toml");
    fails_naming(&["eval", "--config", cfg.to_str().unwrap()], &["nope.toml"]);
    fails_naming(&["eval", "--n", "0"], &["--n"]);
    fails_naming(&["generate"], &["--prompt"]);
    fails_naming(
        &["eval", "--model", "a", "--checkpoint", "b"],
        &["--checkpoint"],
    );
    fails_naming(&["inspect", "--prompts", "many"], &["--prompts"]);
    let model = tiny_model().to_str().unwrap();
    fails_naming(
        &[
            "generate", "--model", model, "--prompt", "x", "--top-p", "0",
        ],
        &["--top-p"],
    );
}

#[test]
fn eval_reads_a_checkpoint_like_its_model_folder() {
    let model_dir = tiny_model();
    let model =
        rlsd::model::LoadedModel::load(model_dir, tch::Device::Cpu, tch::Kind::Float).unwrap();
    let root = tempfile::tempdir().unwrap();
    let write_model = |dir: &Path| model.save(dir);
    let ck = rlsd::checkpoint::save_checkpoint(
        root.path(),
        7,
        &write_model,
        &[],
        &serde_json::json!({}),
        "",
        1,
    )
    .unwrap();
    let args = |flag: &'static str, dir: &Path| -> String {
        ok(&[
            "eval",
            flag,
            dir.to_str().unwrap(),
            "--n",
            "3",
            "--max-new-tokens",
            "8",
        ])
    };
    // Same numbers either way; only the model path and the timing differ.
    let strip = |s: String| -> String {
        let from = s.find("accuracy ").expect("an accuracy");
        let to = s.find(" stopped on EOS").expect("the EOS share");
        s[from..to].to_string()
    };
    assert_eq!(
        strip(args("--checkpoint", &ck)),
        strip(args("--model", model_dir))
    );
    let from_ck = args("--checkpoint", &ck);
    assert!(
        from_ck.contains(&ck.join("model").display().to_string()),
        "{from_ck}"
    );
}

#[test]
fn sampled_eval_is_seeded() {
    let responses = |seed: &str| -> Vec<String> {
        let tmp = tempfile::tempdir().unwrap();
        let json = tmp.path().join("eval.json");
        let out = ok(&[
            "eval",
            "--n",
            "8",
            "--temperature",
            "1.0",
            "--seed",
            seed,
            "--out",
            json.to_str().unwrap(),
        ]);
        assert!(out.contains("sampled at T=1"), "{out}");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(report["temperature"], 1.0);
        report["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["response"].as_str().unwrap().to_string())
            .collect()
    };
    let a = responses("1");
    assert_eq!(a, responses("1"), "same seed, same samples");
    assert_ne!(a, responses("2"), "another seed samples anew");
    fails_naming(&["eval", "--temperature=-1"], &["temperature"]);
}

/// `eval --samples 4` gives the same report at any batch size: each
/// response's seed comes from its (prompt, sample) index, not its place in
/// a batch.
#[test]
fn sampled_eval_does_not_depend_on_the_batch_size() {
    let model = tiny_model().to_str().unwrap();
    let report = |batch: &str| -> serde_json::Value {
        let tmp = tempfile::tempdir().unwrap();
        let json = tmp.path().join("eval.json");
        ok(&[
            "eval",
            "--model",
            model,
            "--n",
            "6",
            "--samples",
            "4",
            "--temperature",
            "1.0",
            "--seed",
            "3",
            "--max-new-tokens",
            "8",
            "--batch-size",
            batch,
            "--out",
            json.to_str().unwrap(),
        ]);
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
    };
    let (a, b) = (report("3"), report("24"));
    let responses = |r: &serde_json::Value| -> Vec<String> {
        r["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["response"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(responses(&a).len(), 24);
    assert_eq!(responses(&a), responses(&b), "batch 3 vs 24");
    assert_eq!(a["pass_at_k"], b["pass_at_k"]);
    assert_eq!(a["accuracy"], b["accuracy"]);
}
