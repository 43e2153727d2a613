//! Commands and algorithms that had no test through the binary (issue 24,
//! item 16): SDPO and GRPO+OPSD through `rlsd train`, `rlsd compare`, and
//! `rlsd plan` against the library's memory plan. All on the built-in model
//! and task, on the CPU, a couple of steps each.

#[path = "common/timed.rs"]
mod timed;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use rlsd::config::RunConfig;

/// Settings every run here starts from: the three actors on the CPU, one
/// step's batch of 2 prompts x 4 responses of at most 8 tokens, validation
/// off unless a test turns it on.
fn tiny(out: &Path, steps: u64) -> Vec<String> {
    vec![
        format!("runtime.steps={steps}"),
        "runtime.sampler_device=\"cpu\"".into(),
        "runtime.teacher_device=\"cpu\"".into(),
        "runtime.optimizer_device=\"cpu\"".into(),
        format!("runtime.out_dir=\"{}\"", out.display()),
        "rollout.batch_prompts=2".into(),
        "rollout.group_size=4".into(),
        "rollout.max_new_tokens=8".into(),
        "validation.every=0".into(),
        "observe.report=false".into(),
    ]
}

/// Run the binary with `--set` for each of `sets`, within a time limit.
fn rlsd(args: &[&str], sets: &[String]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlsd"));
    cmd.args(args).env("NO_COLOR", "1");
    for s in sets {
        cmd.args(["--set", s]);
    }
    timed::output_within(&mut cmd, Duration::from_secs(300))
}

fn ok(args: &[&str], sets: &[String]) -> String {
    let o = rlsd(args, sets);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "rlsd {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    rlsd::metrics::read_metrics(&dir.join("metrics.jsonl")).unwrap()
}

fn finite(r: &serde_json::Value, key: &str) -> f64 {
    let v =
        rlsd::metrics::lookup_number(r, key).unwrap_or_else(|| panic!("no numeric `{key}` in {r}"));
    assert!(v.is_finite(), "`{key}` = {v} in {r}");
    v
}

/// The distillation baselines train through the binary: every step is
/// logged under the algorithm's name with finite losses, a distillation
/// term and a gradient.
#[test]
fn sdpo_and_grpo_plus_opsd_train_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    for algo in ["sdpo", "grpo+opsd"] {
        let out = tmp.path().join(algo.replace('+', "_"));
        let mut sets = tiny(&out, 2);
        sets.push(format!("algo.algo=\"{algo}\""));
        if algo == "sdpo" {
            // The feedback rollout: fewer candidates keep it fast.
            sets.push("algo.sdpo_num_candidates=2".into());
        }
        ok(&["train"], &sets);
        let recs = metrics(&out);
        assert_eq!(
            recs.iter()
                .map(|r| r["step"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            vec![1, 2],
            "{algo}"
        );
        for r in &recs {
            assert_eq!(r["algo"], algo, "{r}");
            for key in [
                "loss",
                "distill_loss",
                "grad_norm",
                "reward_mean",
                "accuracy",
            ] {
                finite(r, key);
            }
            assert!(finite(r, "grad_norm") > 0.0, "{algo}: no gradient: {r}");
            assert_eq!(r["num_responses"], 8, "{r}");
        }
    }
}

/// `rlsd compare` on two algorithms and one seed: a run folder per
/// algorithm, the summary with a validation curve per run, the table and the
/// chart.
#[test]
fn compare_writes_runs_summary_table_and_chart() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cmp");
    let mut sets = tiny(&tmp.path().join("unused"), 2);
    sets.push("validation.num_prompts=2".into());
    sets.push("validation.samples=1".into());
    let out_s = out.to_str().unwrap();
    let args = [
        "compare",
        "--algos",
        "grpo,rlsd",
        "--seeds",
        "0",
        "--steps",
        "2",
        "--val-every",
        "1",
        "--jobs",
        "1",
        "--out",
        out_s,
    ];
    ok(&args, &sets);
    for run in ["grpo-seed0", "rlsd-seed0"] {
        let recs = metrics(&out.join(run));
        assert_eq!(recs.len(), 2, "{run}: two steps logged");
        assert_eq!(recs[0]["algo"], run.split('-').next().unwrap());
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let runs = summary["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{summary}");
    for r in runs {
        assert!(r["error"].is_null(), "{r}");
        // Validation before step 1 and after steps 1 and 2.
        let steps: Vec<u64> = r["validation"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v[0].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![0, 1, 2], "{r}");
    }
    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(table.contains("grpo") && table.contains("rlsd"), "{table}");
    let svg = std::fs::read_to_string(out.join("accuracy.svg")).unwrap();
    assert!(svg.contains("grpo (mean of 1)") && svg.contains("rlsd (mean of 1)"));
    // A second comparison into the same folder is refused without --overwrite.
    let again = rlsd(&args, &sets);
    assert!(!again.status.success(), "a second comparison is refused");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("--overwrite"), "{err}");
}

/// `rlsd plan` prints exactly the library's plan of the same config, and
/// its figures follow the batch: more responses, a larger predicted peak.
#[test]
fn plan_prints_the_librarys_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let sets = tiny(tmp.path(), 1);
    let printed = ok(&["plan", "--prompt-tokens", "64"], &sets);
    let cfg = RunConfig::load(None, &sets).unwrap();
    let shape = rlsd::memory::model_shape(&cfg).unwrap();
    let plan = rlsd::memory::plan(&cfg, &shape, 64).unwrap();
    assert_eq!(printed, format!("{}fits\n", rlsd::memory::render(&plan)));

    let peak = |text: &str| -> f64 {
        text.lines()
            .find(|l| l.contains("predicted peak"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no predicted peak in\n{text}"))
    };
    let mut bigger = sets.clone();
    bigger.push("rollout.batch_prompts=64".into());
    bigger.push("rollout.group_size=16".into());
    bigger.push("rollout.max_new_tokens=1024".into());
    let big = ok(&["plan", "--prompt-tokens", "64"], &bigger);
    assert!(
        peak(&big) > peak(&printed),
        "a bigger batch must need more memory:\n{printed}\n{big}"
    );
}
