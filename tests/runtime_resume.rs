//! Checkpoint and resume through the actor runtime: on CPU a resumed run
//! reproduces the uninterrupted run's weights exactly.

use rlsd::actors::Runtime;
#[path = "common/tiny_run.rs"]
mod tiny_run;
use rlsd::config::RunConfig;

fn config(out: &std::path::Path, steps: u64) -> RunConfig {
    let base = tiny_run::tiny_run(out, steps, 24);
    let mut set = tiny_run::with(
        base,
        &[
            "algo.algo=\"rlsd\"",
            "runtime.max_staleness=0",
            "runtime.teacher_sync_interval=2",
            "checkpoint.every_steps=2",
            "checkpoint.keep_last=0",
            tiny_run::FAST_LR,
        ],
    );
    // Rewards that vary on a barely-trained model: keep the update non-trivial.
    set = tiny_run::with(set, &tiny_run::EVEN_ANSWER);
    RunConfig::load(None, &set).unwrap()
}

#[test]
fn resumed_run_reproduces_the_uninterrupted_weights() {
    let a = tempfile::tempdir().unwrap();
    let full = tiny_run::rt()
        .block_on(Runtime::builder(config(a.path(), 4)).run())
        .unwrap();
    assert!(!full.failed, "{}", full.reason);
    assert!(full.steps.iter().any(|s| s.grad_norm > 0.0));
    let mid = a.path().join("checkpoints/step-000002");
    assert!(mid.join("manifest.json").exists(), "checkpoint at step 2");

    let b = tempfile::tempdir().unwrap();
    let resumed = tiny_run::rt()
        .block_on(Runtime::builder(config(b.path(), 4)).resume(&mid).run())
        .unwrap();
    assert!(!resumed.failed, "{}", resumed.reason);
    let steps: Vec<u64> = resumed.steps.iter().map(|s| s.step).collect();
    assert_eq!(steps, vec![3, 4], "resumed run continues at step 3");
    for (x, y) in full.steps[2..].iter().zip(&resumed.steps) {
        assert_eq!(
            x.reward_mean, y.reward_mean,
            "step {}: same rollouts",
            x.step
        );
        assert_eq!(x.lambda, y.lambda, "schedule continues exactly");
    }
    // Same prompts after the cursor.
    assert_eq!(full.trained[2..].to_vec(), resumed.trained);
    for ((n, x), (_, y)) in full
        .final_weights
        .tensors
        .iter()
        .zip(&resumed.final_weights.tensors)
    {
        assert!(x.equal(y), "tensor {n} differs after resume");
    }
}

#[test]
fn resume_from_a_damaged_checkpoint_is_a_clear_error() {
    let a = tempfile::tempdir().unwrap();
    let report = tiny_run::rt()
        .block_on(Runtime::builder(config(a.path(), 2)).run())
        .unwrap();
    let ck = report.last_checkpoint.expect("final checkpoint");
    std::fs::write(ck.join("state.json"), b"{ broken").unwrap();
    let b = tempfile::tempdir().unwrap();
    let err = tiny_run::rt()
        .block_on(Runtime::builder(config(b.path(), 4)).resume(&ck).run())
        .unwrap_err()
        .to_string();
    assert!(err.contains("state.json"), "{err}");
}
