//! The real `rlsd` binary stopped the hard way: `kill -9` between steps and in
//! the middle of a checkpoint write, then `--resume latest`, at staleness 0
//! and 1; and SIGTERM mid-step / SIGINT mid-checkpoint. After every story
//! each prompt is trained exactly once (by id), metrics.jsonl holds steps
//! 1..N once, and the weights, AdamW and teacher state and every metrics
//! line's numbers equal an uninterrupted run's bit for bit: at staleness 1
//! too (teacher sync every 2 steps, adaptive lambda), since each checkpoint
//! carries the policy versions its next steps are sampled with.

#[path = "common/old_checkpoint.rs"]
mod old_checkpoint;
#[path = "common/timed.rs"]
mod timed;
#[path = "common/tiny_run.rs"]
mod tiny_run;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const B: usize = 2;
const STEPS: u64 = 8;

fn sets(out: &Path, staleness: u64, faults: &str) -> Vec<String> {
    let mut set = tiny_run::tiny_run(out, STEPS, 16);
    set.extend([
        "algo.algo=\"rlsd\"".into(),
        format!("runtime.max_staleness={staleness}"),
        "runtime.teacher_sync_interval=2".into(),
        "checkpoint.every_steps=3".into(),
        "checkpoint.keep_last=2".into(),
        format!("rollout.batch_prompts={B}"),
        tiny_run::FAST_LR.into(),
        format!("runtime.faults=[{faults}]"),
    ]);
    if staleness >= 1 {
        // Planned from the state after step `s - 1 - staleness`: its lambdas
        // are part of what a resume must reproduce. Every step with a
        // teacher pass counts (clip fraction < 1.5), patience 2.
        set.extend([
            "algo.lambda_schedule=\"adaptive\"".into(),
            "algo.adaptive_signal=\"weight-clip\"".into(),
            "algo.adaptive_threshold=1.5".into(),
            "algo.adaptive_patience=2".into(),
        ]);
    }
    tiny_run::with(set, &tiny_run::EVEN_ANSWER)
}

fn spawn(out: &Path, staleness: u64, faults: &str, extra: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlsd"));
    cmd.arg("train");
    for s in sets(out, staleness, faults) {
        cmd.arg("--set").arg(s);
    }
    cmd.args(extra)
        .env("RLSD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn metrics_steps(out: &Path) -> Vec<u64> {
    let p = out.join("metrics.jsonl");
    if !p.exists() {
        return Vec::new();
    }
    rlsd::metrics::read_metrics(&p)
        .unwrap()
        .iter()
        .filter_map(|r| r["step"].as_u64())
        .collect()
}

/// Poll until `cond` holds (the child must still be running), at most 120 s.
fn wait_for(child: &mut Child, what: &str, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("rlsd exited ({st}) before {what}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "waited too long for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

fn kill9(mut child: Child) {
    signal(&child, libc::SIGKILL);
    wait(&mut child);
}

/// Wait for the binary, failing the test (child killed) after 300 s.
fn wait(child: &mut Child) -> ExitStatus {
    timed::wait_within(child, Duration::from_secs(300), "rlsd train")
}

fn has_checkpoint(out: &Path) -> bool {
    rlsd::checkpoint::latest_checkpoint(&out.join("checkpoints"))
        .unwrap()
        .is_some()
}

fn writing(out: &Path, step: u64) -> bool {
    let prefix = format!(".tmp-step-{step:06}-");
    std::fs::read_dir(out.join("checkpoints")).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
    })
}

fn finish(out: &Path, staleness: u64) {
    let status = wait(&mut spawn(out, staleness, "", &["--resume", "latest"]));
    assert!(status.success(), "resumed run failed: {status}");
}

fn expected_ids(out: &Path) -> Vec<String> {
    let cfg = rlsd::config::RunConfig::load(None, &sets(out, 0, "")).unwrap();
    let mut src = rlsd::run::source::from_config(&cfg).unwrap();
    src.next_batch(STEPS as usize * B)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect()
}

/// The final checkpoint: every step 1..=`steps` once, with the expected prompts.
fn assert_exactly_once(out: &Path, steps: u64) -> PathBuf {
    let dir = rlsd::checkpoint::latest_checkpoint(&out.join("checkpoints"))
        .unwrap()
        .unwrap();
    let c = rlsd::checkpoint::load_checkpoint(&dir).unwrap();
    assert_eq!(c.step, steps);
    let ledger: Vec<(u64, Vec<String>)> =
        serde_json::from_value(c.state["trained"].clone()).unwrap();
    let order: Vec<u64> = ledger.iter().map(|(s, _)| *s).collect();
    assert_eq!(order, (1..=steps).collect::<Vec<_>>());
    let ids: Vec<String> = ledger.into_iter().flat_map(|(_, v)| v).collect();
    assert_eq!(
        ids,
        expected_ids(out)[..steps as usize * B].to_vec(),
        "prompt ids"
    );
    assert_eq!(
        metrics_steps(out),
        (1..=steps).collect::<Vec<_>>(),
        "metrics lines"
    );
    dir
}

fn same_file_tensors(a: &Path, b: &Path) {
    let mut x = tch::Tensor::read_safetensors(a).unwrap();
    let mut y = tch::Tensor::read_safetensors(b).unwrap();
    x.sort_by(|p, q| p.0.cmp(&q.0));
    y.sort_by(|p, q| p.0.cmp(&q.0));
    assert_eq!(x.len(), y.len());
    for ((n, s), (_, t)) in x.iter().zip(&y) {
        assert!(s.equal(t), "{n} differs in {}", a.display());
    }
}

/// Kill -9: before the first checkpoint, between steps, inside a checkpoint
/// write, and again after a resume; then finish.
fn kill_story(out: &Path, staleness: u64) {
    let mut c = spawn(out, staleness, "", &[]);
    wait_for(&mut c, "step 1", || !metrics_steps(out).is_empty());
    kill9(c);
    assert!(!has_checkpoint(out), "nothing to resume: start over");

    let mut c = spawn(out, staleness, "", &["--overwrite"]);
    wait_for(&mut c, "step 4", || metrics_steps(out).len() >= 4);
    kill9(c);

    let mut c = spawn(
        out,
        staleness,
        "\"optimizer@6:stall\"",
        &["--resume", "latest"],
    );
    wait_for(&mut c, "the step-6 checkpoint write", || writing(out, 6));
    kill9(c);

    let mut c = spawn(out, staleness, "", &["--resume", "latest"]);
    wait_for(&mut c, "step 7", || metrics_steps(out).contains(&7));
    kill9(c);

    finish(out, staleness);
}

/// Every metrics line without its timings (wall-clock, not results).
fn metrics_numbers(out: &Path) -> Vec<serde_json::Value> {
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
    let mut lines = rlsd::metrics::read_metrics(&out.join("metrics.jsonl")).unwrap();
    lines.iter_mut().for_each(strip);
    lines
}

/// An uninterrupted run's final checkpoint.
fn clean_run(out: &Path, staleness: u64) -> PathBuf {
    assert!(wait(&mut spawn(out, staleness, "", &[])).success());
    assert_exactly_once(out, STEPS)
}

/// The run in `b` ended exactly as the uninterrupted one in `a`: weights,
/// AdamW state, teacher (and at staleness >= 1 the pinned versions), and
/// every metrics line's numbers.
fn assert_same_run(a: &Path, b: &Path) {
    let (ca, cb) = (assert_exactly_once(a, STEPS), assert_exactly_once(b, STEPS));
    let mut files = vec![
        "model/model.safetensors".to_string(),
        "optimizer.safetensors".into(),
        "teacher.safetensors".into(),
    ];
    if let Ok(d) = std::fs::read_dir(ca.join("pinned")) {
        files.extend(
            d.flatten()
                .map(|e| format!("pinned/{}", e.file_name().to_string_lossy())),
        );
    }
    for f in files {
        same_file_tensors(&ca.join(&f), &cb.join(&f));
    }
    let (ma, mb) = (metrics_numbers(a), metrics_numbers(b));
    assert_eq!(ma.len(), mb.len());
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!(x, y, "metrics line of step {}", x["step"]);
    }
}

#[test]
fn kill_9_at_staleness_0_then_resume_equals_the_uninterrupted_run() {
    let clean = tempfile::tempdir().unwrap();
    clean_run(clean.path(), 0);
    let killed = tempfile::tempdir().unwrap();
    kill_story(killed.path(), 0);
    assert_same_run(clean.path(), killed.path());
}

#[test]
fn kill_9_at_staleness_1_then_resume_equals_the_uninterrupted_run() {
    let clean = tempfile::tempdir().unwrap();
    let a = clean_run(clean.path(), 1);
    // The run really overlapped: step s was sampled with version s - 2.
    let lags: Vec<u64> = metrics_numbers(clean.path())
        .iter()
        .map(|l| l["version_lag"].as_u64().unwrap())
        .collect();
    assert_eq!(lags, [0, 1, 1, 1, 1, 1, 1, 1]);
    let ck = rlsd::checkpoint::load_checkpoint(&a).unwrap();
    assert_eq!(ck.state["pinned_versions"][0]["version"], STEPS - 1);

    let killed = tempfile::tempdir().unwrap();
    kill_story(killed.path(), 1);
    assert_same_run(clean.path(), killed.path());
}

#[test]
fn sigterm_mid_step_and_sigint_mid_checkpoint_stop_then_resume_equals_the_uninterrupted_run() {
    // SIGTERM mid-step (staleness 1): exit 0, final checkpoint of the last commit.
    let d = tempfile::tempdir().unwrap();
    let mut c = spawn(d.path(), 1, "", &[]);
    wait_for(&mut c, "step 2", || metrics_steps(d.path()).len() >= 2);
    let recorded = metrics_steps(d.path()).len() as u64;
    signal(&c, libc::SIGTERM);
    let status = wait(&mut c);
    assert!(status.success(), "SIGTERM: {status}");
    // At the signal, step `recorded` (or, if its line was not yet written,
    // the next) was the last commit; only the step being trained then may
    // follow it. A step issued or queued behind it is dropped.
    let k = metrics_steps(d.path()).len() as u64;
    assert!(
        (recorded..=recorded + 2).contains(&k),
        "SIGTERM after {recorded} recorded steps stopped at {k}"
    );
    assert_exactly_once(d.path(), k);

    // SIGINT mid-checkpoint: the write finishes, nothing after it is trained.
    let mut c = spawn(
        d.path(),
        1,
        "\"optimizer@6:stall\"",
        &["--resume", "latest"],
    );
    wait_for(&mut c, "the step-6 checkpoint write", || {
        writing(d.path(), 6)
    });
    signal(&c, libc::SIGINT);
    let status = wait(&mut c);
    assert!(status.success(), "SIGINT mid-checkpoint: {status}");
    // The write finishes, and nothing is trained after it: the optimizer was
    // writing, not training, when the signal came, so steps 7 and 8 (issued,
    // and at staleness 1 already generated or queued in its mailbox during
    // the 3 s write) are dropped. Exactly 6, whatever the timing.
    let k = metrics_steps(d.path()).len() as u64;
    assert_eq!(k, 6, "SIGINT mid-checkpoint stopped at {k}");
    assert_exactly_once(d.path(), k);

    finish(d.path(), 1);
    let clean = tempfile::tempdir().unwrap();
    clean_run(clean.path(), 1);
    assert_same_run(clean.path(), d.path());
}

#[test]
fn a_second_signal_exits_at_once_non_zero() {
    let d = tempfile::tempdir().unwrap();
    let mut c = spawn(d.path(), 1, "\"optimizer@3:stall\"", &[]);
    wait_for(&mut c, "the step-3 checkpoint write", || {
        writing(d.path(), 3)
    });
    signal(&c, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    signal(&c, libc::SIGTERM);
    let status = wait(&mut c);
    assert_eq!(status.code(), Some(130), "{status}");
}

/// A checkpoint without pinned versions (an older build's) still resumes at
/// staleness 1, with a warning that names the missing version and says the
/// resume is not bit-exact; every step is still trained once.
#[test]
fn an_old_checkpoint_resumes_at_staleness_1_with_a_warning() {
    let d = tempfile::tempdir().unwrap();
    let mut c = spawn(d.path(), 1, "", &["--set", "runtime.steps=3"]);
    assert!(wait(&mut c).success());
    old_checkpoint::strip_pinned(&d.path().join("checkpoints/step-000003"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlsd"));
    cmd.arg("train");
    for s in sets(d.path(), 1, "") {
        cmd.arg("--set").arg(s);
    }
    cmd.args(["--resume", "latest"]).env("RLSD_LOG", "warn");
    let out = timed::output_within(&mut cmd, Duration::from_secs(300));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no policy weights of version 2") && stderr.contains("not bit-exact"),
        "{stderr}"
    );
    assert_exactly_once(d.path(), STEPS);
}
