//! Checkpoints, rank failure and `--resume` in data-parallel runs, through
//! the real binary (`rlsd train --nproc 2`) on the built-in task. Failures
//! are injected with `RLSD_DIST_FAIL` (src/distributed/fault.rs) at a given step,
//! so no assertion depends on timing:
//!
//! - a rank that aborts mid-run stops the job (non-zero, naming the rank),
//!   the last committed checkpoint verifies, and `--resume latest` ends with
//!   exactly the weights and metrics of an uninterrupted run;
//! - a rank that stalls makes its peer's collective time out
//!   (`runtime.collective_timeout_s`): the job fails instead of hanging;
//! - a rank that dies inside a checkpoint commit leaves the newest complete
//!   checkpoint consistent (the step being committed, or the one before);
//! - `--resume` with no checkpoint, or into another model than the
//!   checkpoint's, is refused by name.

mod dist_common;
#[path = "common/old_checkpoint.rs"]
mod old_checkpoint;

use dist_common::process::{failed_naming, metrics, ok, report, run};
use rlsd::checkpoint::{latest_checkpoint, list_checkpoints, verify_checkpoint};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `rlsd train --nproc 2` for `steps` steps, 3 prompt groups (2 + 1 per
/// rank), a checkpoint every `every` steps.
fn train(out: &Path, steps: u64, every: u64) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlsd"));
    cmd.arg("train").arg("--nproc").arg("2");
    for s in [
        "algo.algo=\"rlsd\"".to_string(),
        format!("runtime.steps={steps}"),
        "runtime.optimizer_device=\"cpu\"".into(),
        format!("runtime.out_dir=\"{}\"", out.display()),
        "rollout.batch_prompts=3".into(),
        "rollout.group_size=4".into(),
        "rollout.max_new_tokens=8".into(),
        "optim.lr=1e-3".into(),
        format!("checkpoint.every_steps={every}"),
        "checkpoint.keep_last=0".into(),
    ] {
        cmd.arg("--set").arg(s);
    }
    cmd.env("RLSD_LOG", "warn")
        .env("RLSD_DIST_TIMEOUT_S", "120")
        .env_remove("RLSD_DIST_FAIL");
    cmd
}

fn root(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

/// The newest complete checkpoint verifies; its step.
fn latest_verified(out: &Path) -> Option<u64> {
    let dir = latest_checkpoint(&root(out)).unwrap()?;
    Some(verify_checkpoint(&dir).unwrap().step)
}

#[test]
#[cfg_attr(
    rlsd_no_gloo,
    ignore = "built without gloo's headers: scripts/setup_gloo.sh could not fetch them"
)]
fn a_crashed_rank_stops_the_job_and_resume_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let (full, cut) = (dir.path().join("full"), dir.path().join("cut"));
    ok(
        &run(train(&full, 4, 2), "uninterrupted run"),
        "uninterrupted run",
    );
    let steps: Vec<u64> = list_checkpoints(&root(&full))
        .unwrap()
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(
        steps,
        vec![2, 4],
        "a checkpoint every 2 steps and at the end"
    );
    assert_eq!(
        report(&full, 0)["checkpoint_s"].as_array().unwrap().len(),
        2
    );

    // Rank 1 aborts as step 4 starts: step 2 is the last committed checkpoint,
    // step 3 was trained and logged but not checkpointed.
    let mut crash = train(&cut, 4, 2);
    crash.env("RLSD_DIST_FAIL", "1:4");
    failed_naming(
        &run(crash, "crash"),
        "crash",
        "rank 1 of 2 failed (signal 6)",
    );
    assert_eq!(latest_verified(&cut), Some(2));
    assert_eq!(metrics(&cut).len(), 3);

    let mut resume = train(&cut, 4, 2);
    resume.arg("--resume").arg("latest");
    ok(&run(resume, "resume"), "resume");
    let (a, b) = (report(&full, 0), report(&cut, 0));
    assert_eq!(b["resumed_from"], 2);
    assert_eq!(
        a["weights_sha256"], b["weights_sha256"],
        "resumed weights differ from the uninterrupted run's"
    );
    assert_eq!(b["weights_sha256"], report(&cut, 1)["weights_sha256"]);
    let (ma, mb) = (metrics(&full), metrics(&cut));
    assert_eq!(mb.len(), 4, "one line per step after the resume");
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!(x, y, "metrics line of step {} differs", x["step"]);
    }
    assert_eq!(latest_verified(&cut), Some(4));
}

#[test]
#[cfg_attr(
    rlsd_no_gloo,
    ignore = "built without gloo's headers: scripts/setup_gloo.sh could not fetch them"
)]
fn a_stalled_rank_times_out_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // Rank 1 stops answering as step 2 starts; rank 0's first collective of
    // step 2 must give up after runtime.collective_timeout_s (the value is
    // large enough that ranks doing the same work never come near it).
    let mut stall = train(&out, 2, 1);
    stall
        .env_remove("RLSD_DIST_TIMEOUT_S")
        .env("RLSD_DIST_FAIL", "1:2:stall")
        .arg("--set")
        .arg("runtime.collective_timeout_s=20");
    let o = run(stall, "stall");
    failed_naming(&o, "stall", "rank 0 of 2 failed (exit code");
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(
        err.contains("timed out"),
        "rank 0 should report a timeout:\n{err}"
    );
    // The step-1 checkpoint was committed before the stall and verifies
    // (resuming from it is the first test's subject).
    assert_eq!(latest_verified(&out), Some(1));
}

#[test]
#[cfg_attr(
    rlsd_no_gloo,
    ignore = "built without gloo's headers: scripts/setup_gloo.sh could not fetch them"
)]
fn a_rank_lost_inside_a_commit_leaves_a_consistent_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut crash = train(&out, 3, 1);
    crash.env("RLSD_DIST_FAIL", "1:2:commit");
    failed_naming(&run(crash, "commit crash"), "commit crash", "rank");
    // Rank 0 may finish the rename of step 2 (the weights were agreed) or
    // be stopped first; either way the newest checkpoint is complete.
    let step = latest_verified(&out).expect("step 1's checkpoint at least");
    assert!(step == 1 || step == 2, "latest checkpoint {step}");

    // Resuming into another model than the checkpoint's is refused, naming
    // both config.json files.
    let ck = latest_checkpoint(&root(&out)).unwrap().unwrap();
    let other = dir.path().join("other-model");
    std::fs::create_dir_all(&other).unwrap();
    let text = std::fs::read_to_string(ck.join("model/config.json")).unwrap();
    let mut config: Value = serde_json::from_str(&text).unwrap();
    let h = config["hidden_size"].as_u64().unwrap();
    config["hidden_size"] = Value::from(h * 2);
    std::fs::write(other.join("config.json"), config.to_string()).unwrap();
    let mut wrong = train(&out, 3, 1);
    wrong
        .arg("--resume")
        .arg("latest")
        .arg("--set")
        .arg(format!("model.path=\"{}\"", other.display()));
    let o = run(wrong, "resume into another model");
    failed_naming(&o, "resume into another model", "hidden_size");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&other.join("config.json").display().to_string()),
        "{err}"
    );

    let mut resume = train(&out, 3, 1);
    resume.arg("--resume").arg("latest");
    ok(&run(resume, "resume"), "resume");
    assert_eq!(report(&out, 0)["resumed_from"], step);
    assert_eq!(metrics(&out).len(), 3);
}

#[test]
#[cfg_attr(
    rlsd_no_gloo,
    ignore = "built without gloo's headers: scripts/setup_gloo.sh could not fetch them"
)]
fn resume_without_a_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("empty");
    let mut cmd = train(&out, 2, 1);
    cmd.arg("--resume").arg("latest");
    failed_naming(&run(cmd, "resume"), "resume", "no complete checkpoint");
}

#[test]
#[cfg_attr(
    rlsd_no_gloo,
    ignore = "built without gloo's headers: scripts/setup_gloo.sh could not fetch them"
)]
fn an_adaptive_run_resumes_exactly() {
    // The adaptive lambda halves after every step with a teacher pass (the
    // weight-clip rate is always below 1.0, patience 1), so a resume that
    // restarted the schedule at lambda0 would train steps 3 and 4 with
    // another lambda than the uninterrupted run.
    let adaptive = |mut cmd: Command| {
        for s in [
            "algo.lambda_schedule=\"adaptive\"",
            "algo.adaptive_signal=\"weight-clip\"",
            "algo.adaptive_threshold=1.0",
            "algo.adaptive_patience=1",
            "algo.adaptive_min_lambda=0.0",
        ] {
            cmd.arg("--set").arg(s);
        }
        cmd
    };
    let dir = tempfile::tempdir().unwrap();
    let (full, cut) = (dir.path().join("full"), dir.path().join("cut"));
    ok(
        &run(adaptive(train(&full, 4, 2)), "uninterrupted"),
        "uninterrupted",
    );
    let lambdas: Vec<f64> = metrics(&full)
        .iter()
        .map(|m| m["lambda"].as_f64().unwrap())
        .collect();
    assert!(
        lambdas[2] < lambdas[0] && lambdas[2] > 0.0,
        "the schedule did not move: {lambdas:?}"
    );

    let mut crash = adaptive(train(&cut, 4, 2));
    crash.env("RLSD_DIST_FAIL", "1:4");
    failed_naming(
        &run(crash, "crash"),
        "crash",
        "rank 1 of 2 failed (signal 6)",
    );
    assert_eq!(latest_verified(&cut), Some(2));
    // The same checkpoint without its adaptive state (as a build before
    // data-parallel checkpoints stored it wrote it) cannot resume the schedule.
    let old = dir.path().join("old");
    let copied = Command::new("cp").arg("-a").arg(&cut).arg(&old).status();
    assert!(copied.unwrap().success());
    old_checkpoint::strip_state_key(
        &latest_checkpoint(&root(&old)).unwrap().unwrap(),
        "adaptive_lambda",
    );
    let mut refused = adaptive(train(&old, 4, 2));
    refused.arg("--resume").arg("latest");
    let o = run(refused, "resume without the adaptive state");
    failed_naming(
        &o,
        "resume without the adaptive state",
        "algo.lambda_schedule",
    );
    failed_naming(
        &o,
        "resume without the adaptive state",
        "no `adaptive_lambda`",
    );
    let mut resume = adaptive(train(&cut, 4, 2));
    resume.arg("--resume").arg("latest");
    ok(&run(resume, "resume"), "resume");
    assert_eq!(report(&cut, 0)["resumed_from"], 2);
    assert_eq!(
        report(&full, 0)["weights_sha256"],
        report(&cut, 0)["weights_sha256"],
        "resumed weights differ from the uninterrupted run's"
    );
    let (ma, mb) = (metrics(&full), metrics(&cut));
    assert_eq!(mb.len(), 4);
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!(x, y, "metrics line of step {} differs", x["step"]);
    }
}
