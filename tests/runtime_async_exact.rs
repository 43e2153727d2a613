//! An asynchronous run (`runtime.max_staleness = 1`) is a pure function of
//! its config: every step is sampled with policy version `max(0, s - 2)`,
//! scored with that commit's teacher (`teacher_sync_interval = 2`), and its
//! adaptive lambda planned from the schedule's state after that commit,
//! whatever the timing: actors respawned mid-run, or a resume from a
//! checkpoint (which carries the versions in flight), end bit-identical to
//! the uninterrupted run. Built-in tiny model on the CPU.

#[path = "common/old_checkpoint.rs"]
mod old_checkpoint;
#[path = "common/tiny_run.rs"]
mod tiny_run;
use rlsd::actors::{RunReport, Runtime};
use rlsd::config::RunConfig;
use rlsd::pipeline::required_teacher_version;
use rlsd::stats::StepStats;
use std::path::Path;

const STEPS: u64 = 8;

/// Staleness 1, teacher sync every 2 steps, and an adaptive lambda (weight-
/// clip signal over a threshold every step with a teacher pass exceeds,
/// patience 2, factor 0.5, 0 below 0.2).
fn config(out: &Path, faults: &str, extra: &[&str]) -> RunConfig {
    let mut set = tiny_run::tiny_run(out, STEPS, 16);
    set.extend([
        "algo.algo=\"rlsd\"".into(),
        "runtime.max_staleness=1".into(),
        "runtime.teacher_sync_interval=2".into(),
        "algo.lambda_schedule=\"adaptive\"".into(),
        "algo.adaptive_signal=\"weight-clip\"".into(),
        "algo.adaptive_threshold=1.5".into(),
        "algo.adaptive_patience=2".into(),
        "algo.adaptive_factor=0.5".into(),
        "algo.adaptive_min_lambda=0.2".into(),
        "checkpoint.every_steps=3".into(),
        "checkpoint.keep_last=0".into(),
        tiny_run::FAST_LR.into(),
        format!("runtime.faults=[{faults}]"),
    ]);
    set.extend(extra.iter().map(|s| s.to_string()));
    RunConfig::load(None, &set).unwrap()
}

fn run(cfg: RunConfig, resume: Option<&Path>) -> RunReport {
    let mut b = Runtime::builder(cfg).verifier(tiny_run::ByteSumMod3);
    if let Some(dir) = resume {
        b = b.resume(dir);
    }
    let report = tiny_run::rt().block_on(b.run()).unwrap();
    assert!(!report.failed, "{}", report.reason);
    report
}

/// A step's metrics line without its timings (wall-clock, not results).
fn numbers(s: &StepStats) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|k, _| k != "timings" && k != "wall_s");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(s).unwrap();
    strip(&mut v);
    v
}

fn assert_same_steps(a: &[StepStats], b: &[StepStats]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(numbers(x), numbers(y), "step {}", x.step);
    }
}

fn assert_same_weights(a: &RunReport, b: &RunReport) {
    assert_eq!(a.final_weights.tensors.len(), b.final_weights.tensors.len());
    for ((n, x), (_, y)) in a.final_weights.tensors.iter().zip(&b.final_weights.tensors) {
        assert!(x.equal(y), "tensor {n} differs");
    }
}

/// The versions and lambdas a staleness-1 run must use, worked by hand:
/// step `s` is sampled with version `max(0, s - 2)`, scored with teacher
/// `required_teacher_version(max(0, s - 2), 2)`, and planned from the
/// adaptive state after step `max(0, s - 2)`. That state: 0.5 before any
/// step; after steps 1, 2 (both measured) the patience of 2 is reached:
/// 0.25; after 3, 4: 0.125 < 0.2, so 0. Hence steps 1-3 at 0.5 (states
/// after 0, 0, 1), 4-5 at 0.25 (after 2, 3), 6-8 at 0 (after 4, 5, 6).
fn assert_pinned_schedule(steps: &[StepStats]) {
    let lambdas: Vec<f64> = steps.iter().map(|s| s.lambda).collect();
    assert_eq!(lambdas, vec![0.5, 0.5, 0.5, 0.25, 0.25, 0.0, 0.0, 0.0]);
    for s in steps {
        let v = s.step.saturating_sub(2);
        assert_eq!(s.policy_version, v, "step {}", s.step);
        assert_eq!(s.version_lag, s.step - 1 - v, "step {}", s.step);
        assert_eq!(
            s.teacher_version,
            required_teacher_version(v, 2),
            "step {}",
            s.step
        );
    }
}

#[test]
fn a_staleness_1_run_is_a_pure_function_of_its_config() {
    let a = tempfile::tempdir().unwrap();
    let clean = run(config(a.path(), "", &[]), None);
    assert_pinned_schedule(&clean.steps);
    assert!(clean.steps.iter().any(|s| s.grad_norm > 0.0));

    // The same run with the sampler, the teacher and the optimizer failing
    // mid-run: each is respawned from the commit board and its in-flight
    // steps re-issued, with exactly the versions the plans name.
    let b = tempfile::tempdir().unwrap();
    let faults = "\"sampler@3\", \"teacher@5\", \"optimizer@6\"";
    let respawned = run(config(b.path(), faults, &[]), None);
    assert_eq!(respawned.restarts.values().sum::<u32>(), 3);
    assert_same_steps(&clean.steps, &respawned.steps);
    assert_same_weights(&clean, &respawned);
}

#[test]
fn a_staleness_1_resume_equals_the_uninterrupted_run() {
    let a = tempfile::tempdir().unwrap();
    let full = run(config(a.path(), "", &[]), None);
    assert_pinned_schedule(&full.steps);
    for k in [3, 6] {
        let mid = a.path().join(format!("checkpoints/step-{k:06}"));
        let ck = rlsd::checkpoint::load_checkpoint(&mid).unwrap();
        let pinned = &ck.state["pinned_versions"];
        assert_eq!(pinned[0]["version"], k - 1, "{pinned}");
        assert_eq!(pinned.as_array().unwrap().len(), 1, "{pinned}");

        let b = tempfile::tempdir().unwrap();
        let resumed = run(config(b.path(), "", &[]), Some(&mid));
        assert_eq!(resumed.steps.first().map(|s| s.step), Some(k + 1));
        assert_same_steps(&full.steps[k as usize..], &resumed.steps);
        assert_same_weights(&full, &resumed);
    }
}

#[test]
fn a_staleness_2_resume_equals_the_uninterrupted_run() {
    let two = ["runtime.max_staleness=2"];
    let a = tempfile::tempdir().unwrap();
    let full = run(config(a.path(), "", &two), None);
    let versions: Vec<u64> = full.steps.iter().map(|s| s.policy_version).collect();
    assert_eq!(versions, vec![0, 0, 0, 1, 2, 3, 4, 5]);
    let mid = a.path().join("checkpoints/step-000003");
    let ck = rlsd::checkpoint::load_checkpoint(&mid).unwrap();
    let pinned: Vec<u64> = ck.state["pinned_versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["version"].as_u64().unwrap())
        .collect();
    assert_eq!(pinned, vec![1, 2]);

    let b = tempfile::tempdir().unwrap();
    let resumed = run(config(b.path(), "", &two), Some(&mid));
    assert_same_steps(&full.steps[3..], &resumed.steps);
    assert_same_weights(&full, &resumed);
}

/// A checkpoint without the pinned versions (as written before they
/// existed) still resumes, as before: every step trained once, the first
/// step after it sampled with the checkpoint's own version (lag 0).
#[test]
fn a_checkpoint_without_pinned_versions_resumes_inexactly() {
    let a = tempfile::tempdir().unwrap();
    run(config(a.path(), "", &["runtime.steps=3"]), None);
    let ck = a.path().join("checkpoints/step-000003");
    old_checkpoint::strip_pinned(&ck);

    let b = tempfile::tempdir().unwrap();
    let resumed = run(config(b.path(), "", &["runtime.steps=5"]), Some(&ck));
    let steps: Vec<(u64, u64)> = resumed
        .steps
        .iter()
        .map(|s| (s.step, s.policy_version))
        .collect();
    assert_eq!(steps, vec![(4, 3), (5, 3)]);
}
