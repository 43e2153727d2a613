//! A data-parallel job trains what the one-process run trains (issue 24,
//! item 14): every response's sampling seed comes from its global position
//! (step, prompt, sample), not from its index within a rank, so
//! `rlsd train --nproc 2` and `rlsd train` on the same config sample the
//! same responses and end with the same weights.
//!
//! Both runs go through the real binary, lockstep (`max_staleness = 0`), with
//! micro-batches of one group: the one-process run's two micro-batches are
//! then exactly the two ranks' shares, and the summed gradient is the same
//! sum of the same two parts. Every step's sampled batch is equal (tokens,
//! rewards, lengths). The runs are in float64 (`model.dtype = "f64"`, AdamW
//! moments included), so the weights agree within 1e-6 (see below).

mod dist_common;

use dist_common::process::{metrics, ok, run};
use std::path::Path;
use std::process::Command;

const STEPS: u64 = 3;
const G: usize = 4;

fn train(out: &Path, nproc: Option<usize>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlsd"));
    cmd.arg("train");
    if let Some(n) = nproc {
        cmd.arg("--nproc").arg(n.to_string());
    }
    for s in [
        "algo.algo=\"rlsd\"".to_string(),
        format!("runtime.steps={STEPS}"),
        "runtime.sampler_device=\"cpu\"".into(),
        "runtime.teacher_device=\"cpu\"".into(),
        "runtime.optimizer_device=\"cpu\"".into(),
        "runtime.max_staleness=0".into(),
        format!("runtime.out_dir=\"{}\"", out.display()),
        // 2 groups: one per rank.
        "rollout.batch_prompts=2".into(),
        format!("rollout.group_size={G}"),
        "rollout.max_new_tokens=24".into(),
        format!("optim.micro_batch_size={G}"),
        "optim.max_tokens_per_micro_batch=0".into(),
        "optim.lr=1e-3".into(),
        "model.dtype=\"f64\"".into(),
    ] {
        cmd.arg("--set").arg(s);
    }
    cmd.env("RLSD_LOG", "warn")
        .env("RLSD_DIST_TIMEOUT_S", "120");
    cmd
}

/// The final checkpoint's policy weights, as f64, by name.
fn final_weights(out: &Path) -> Vec<(String, tch::Tensor)> {
    let dir = rlsd::checkpoint::latest_checkpoint(&out.join("checkpoints"))
        .unwrap()
        .expect("a final checkpoint");
    let c = rlsd::checkpoint::load_checkpoint(&dir).unwrap();
    assert_eq!(c.step, STEPS);
    let mut w = tch::Tensor::read_safetensors(c.model_dir.join("model.safetensors")).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w.into_iter()
        .map(|(n, t)| (n, t.to_kind(tch::Kind::Double)))
        .collect()
}

/// Each step's sampled batch as the metrics log shows it.
fn sampled(out: &Path) -> Vec<(u64, f64, f64)> {
    metrics(out)
        .iter()
        .map(|r| {
            (
                r["num_tokens"].as_u64().unwrap(),
                r["reward_mean"].as_f64().unwrap(),
                r["response_len_mean"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
#[cfg_attr(
    rlsd_no_gloo,
    ignore = "built without gloo's headers: scripts/setup_gloo.sh could not fetch them"
)]
fn two_ranks_sample_and_train_what_one_process_does() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    ok(&run(train(&one, None), "one process"), "one process");
    ok(&run(train(&two, Some(2)), "nproc 2"), "nproc 2");

    let (a, b) = (sampled(&one), sampled(&two));
    assert_eq!(a.len(), STEPS as usize);
    assert_eq!(
        a, b,
        "the sampled batches differ (num_tokens, reward, length)"
    );

    let (wa, wb) = (final_weights(&one), final_weights(&two));
    assert_eq!(wa.len(), wb.len());
    let mut worst = 0.0f64;
    for ((na, ta), (nb, tb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        let d = (ta - tb).abs().max().double_value(&[]);
        worst = worst.max(d);
    }
    // The weights moved, so the comparison is not of two untouched copies.
    let base = rlsd::config::RunConfig::default().model.resolve().unwrap();
    let start = tch::Tensor::read_safetensors(base.join("model.safetensors")).unwrap();
    let moved = start.iter().any(|(n, t0)| {
        wa.iter().any(|(na, ta)| {
            na == n
                && (ta - t0.to_kind(tch::Kind::Double))
                    .abs()
                    .max()
                    .double_value(&[])
                    > 1e-5
        })
    });
    assert!(moved, "training did not move the weights");
    // The responses are the same; what remains is rounding: one process
    // generates and scores 8 rows in one padded batch, a rank 4, so the
    // sampling and teacher log-probs differ in the last bits (the train
    // step's micro-batches are the same rows). In float32 that left 3.2e-6
    // after 3 steps at lr 1e-3 (weights moved ~3e-3); in float64 it is far
    // below 1e-6. Per-rank seeds, as before, left them 3e-3 apart.
    assert!(worst <= 1e-6, "weights differ by {worst:e}");
    eprintln!("max |w_nproc2 - w_one| = {worst:e}");
}
