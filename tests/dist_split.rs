//! Split placement through the real binary (`rlsd train --nproc N` with
//! `runtime.placement = "split"`): sampler ranks generate and verify, learner
//! ranks score, train and broadcast the weights back. A split job of S
//! samplers and L = S learners computes exactly what a colocated job of L
//! ranks does (same responses, same gradients): the final weights' SHA-256
//! and every metrics line but the timings (held-out validation on rank 0
//! included) are equal, and the samplers end with the learners' weights.
//! Samplers one step ahead generate with the weights before last. A
//! sampler that dies stops the job, and `--resume` from the learners'
//! checkpoint ends where an uninterrupted run does. Bad placements are
//! refused by key.

mod dist_common;

use dist_common::process::{metrics, ok, report, run};
use std::path::Path;
use std::process::Command;

const STEPS: u64 = 3;

fn train(out: &Path, nproc: usize, algo: &str, split: Option<usize>) -> Command {
    train_with(out, nproc, algo, split, 0)
}

/// `staleness`: `runtime.max_staleness` (split samplers run one step ahead
/// when it is 1; colocated ranks ignore it).
fn train_with(
    out: &Path,
    nproc: usize,
    algo: &str,
    split: Option<usize>,
    staleness: u64,
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlsd"));
    cmd.arg("train").arg("--nproc").arg(nproc.to_string());
    let mut sets = vec![
        format!("algo.algo=\"{algo}\""),
        format!("runtime.steps={STEPS}"),
        "runtime.optimizer_device=\"cpu\"".into(),
        format!("runtime.out_dir=\"{}\"", out.display()),
        // 3 groups: uneven over 2 ranks (2 + 1).
        "rollout.batch_prompts=3".into(),
        "rollout.group_size=4".into(),
        "rollout.max_new_tokens=24".into(),
        "optim.lr=1e-3".into(),
        "checkpoint.every_steps=2".into(),
        format!("runtime.max_staleness={staleness}"),
        // Rank 0 validates before step 1 and after step 2.
        "validation.every=2".into(),
        "validation.num_prompts=4".into(),
        "validation.samples=2".into(),
    ];
    if let Some(s) = split {
        sets.push("runtime.placement=\"split\"".into());
        sets.push(format!("runtime.sampler_ranks={s}"));
    }
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    cmd.env("RLSD_LOG", "warn")
        .env("RLSD_DIST_TIMEOUT_S", "120");
    cmd
}

/// A split job of `2 * ranks` processes against a colocated one of `ranks`.
fn split_equals_colocated(algo: &str, ranks: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (co, sp) = (dir.path().join("co"), dir.path().join("split"));
    ok(
        &run(train(&co, ranks, algo, None), "colocated"),
        "colocated",
    );
    ok(
        &run(train(&sp, 2 * ranks, algo, Some(ranks)), "split"),
        "split",
    );
    let want = report(&co, 0)["weights_sha256"].clone();
    let rows = metrics(&co);
    assert_eq!(rows.len(), STEPS as usize);
    assert!(
        rows.iter().any(|r| r["grad_norm"].as_f64().unwrap() > 0.0),
        "no step had a gradient, so equal weights would prove nothing: {rows:?}"
    );
    let after = |r: &serde_json::Value| -> Vec<u64> {
        r["validation"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["after_step"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(after(&rows[0]), vec![0]);
    assert_eq!(after(&rows[1]), vec![2]);
    assert_eq!(metrics(&sp), rows, "{algo}: metrics differ");
    for r in 0..2 * ranks {
        let rep = report(&sp, r);
        assert_eq!(
            rep["weights_sha256"], want,
            "{algo}: rank {r} ends elsewhere"
        );
        let learner = r < ranks;
        assert_eq!(rep["role"], if learner { "learner" } else { "sampler" });
        let (made, trained) = (
            rep["generated_tokens"].as_u64().unwrap(),
            rep["trained_tokens"].as_u64().unwrap(),
        );
        if learner {
            assert_eq!(made, 0, "rank {r}");
            assert!(trained > 0 && rep["stage_s"]["train_s"].as_f64().unwrap() > 0.0);
        } else {
            assert_eq!(trained, 0, "rank {r}");
            assert!(made > 0 && rep["generate_tokens_per_s"].as_f64().unwrap() > 0.0);
            assert!(rep["weights_broadcast_s"].as_f64().unwrap() > 0.0);
        }
        assert!(rep["peak_rss_bytes"].as_u64().unwrap() > 0);
    }
    // The learners checkpointed (steps 2 and 3); the samplers did not write.
    assert!(sp.join("checkpoints/step-000002").is_dir());
    assert!(sp.join("final/config.json").exists());
}

#[test]
#[cfg_attr(
    rlsd_no_gloo,
    ignore = "built without gloo's headers: scripts/setup_gloo.sh could not fetch them"
)]
fn one_sampler_and_one_learner_equal_one_colocated_rank() {
    split_equals_colocated("rlsd", 1);
}

#[test]
#[cfg_attr(
    rlsd_no_gloo,
    ignore = "built without gloo's headers: scripts/setup_gloo.sh could not fetch them"
)]
fn two_samplers_and_two_learners_equal_two_colocated_ranks() {
    split_equals_colocated("grpo+opsd", 2);
}

#[test]
#[cfg_attr(
    rlsd_no_gloo,
    ignore = "built without gloo's headers: scripts/setup_gloo.sh could not fetch them"
)]
fn samplers_one_step_ahead_generate_with_the_weights_before_last() {
    let dir = tempfile::tempdir().unwrap();
    let (lock, ahead) = (dir.path().join("lock"), dir.path().join("ahead"));
    ok(
        &run(train_with(&lock, 2, "rlsd", Some(1), 0), "lockstep"),
        "lockstep",
    );
    ok(
        &run(train_with(&ahead, 2, "rlsd", Some(1), 1), "one step ahead"),
        "one step ahead",
    );
    let (a, b) = (metrics(&lock), metrics(&ahead));
    assert_eq!(b.len(), STEPS as usize);
    // Step 1 is sampled with the initial weights either way.
    assert_eq!(a[0], b[0]);
    for (i, row) in b.iter().enumerate() {
        let step = i as u64 + 1;
        // Step k's responses come from the weights after step k - 2.
        let lag = u64::from(step > 1);
        assert_eq!(row["version_lag"], lag, "step {step}: {row}");
        assert_eq!(row["policy_version"], (step - 1 - lag), "step {step}");
    }
    assert_eq!(
        report(&ahead, 0)["weights_sha256"],
        report(&ahead, 1)["weights_sha256"],
        "the sampler ends with the learner's weights"
    );
}

#[test]
#[cfg_attr(
    rlsd_no_gloo,
    ignore = "built without gloo's headers: scripts/setup_gloo.sh could not fetch them"
)]
fn a_sampler_that_dies_stops_the_job_and_resume_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let (full, cut) = (dir.path().join("full"), dir.path().join("cut"));
    ok(
        &run(train(&full, 2, "rlsd", Some(1)), "uninterrupted"),
        "uninterrupted",
    );
    // The sampler (rank 1) aborts as step 3 starts; the learners' step-2
    // checkpoint is the newest.
    let mut crash = train(&cut, 2, "rlsd", Some(1));
    crash.env("RLSD_DIST_FAIL", "1:3");
    let o = run(crash, "crash");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the job must fail:\n{err}");
    assert!(err.contains("rank 1 of 2 failed (signal 6)"), "{err}");
    assert!(cut.join("checkpoints/step-000002").is_dir());
    assert!(!cut.join("checkpoints/step-000003").exists());
    let mut resume = train(&cut, 2, "rlsd", Some(1));
    resume.arg("--resume").arg("latest");
    ok(&run(resume, "resume"), "resume");
    assert_eq!(report(&cut, 0)["resumed_from"], 2);
    assert_eq!(report(&cut, 1)["resumed_from"], 2);
    let want = report(&full, 0)["weights_sha256"].clone();
    for r in 0..2 {
        assert_eq!(report(&cut, r)["weights_sha256"], want, "rank {r}");
    }
    assert_eq!(metrics(&cut), metrics(&full));
}

#[test]
fn split_placements_without_a_learner_or_ranks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // All ranks sampling: refused by key before any group forms.
    let o = run(
        train(&dir.path().join("a"), 2, "grpo", Some(2)),
        "no learner",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("runtime.sampler_ranks"), "{err}");
    // One process cannot split.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlsd"));
    cmd.arg("train")
        .arg("--set")
        .arg(format!(
            "runtime.out_dir=\"{}\"",
            dir.path().join("b").display()
        ))
        .arg("--set")
        .arg("runtime.placement=\"split\"");
    let o = run(cmd, "one process");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("runtime.placement"), "{err}");
}
