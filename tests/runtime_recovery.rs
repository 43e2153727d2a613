//! Recovery at every setting (issue 9): checkpoints are consistent cuts of one
//! committed step at staleness 0 and 1, resume is bit-exact at staleness 0,
//! an optimizer step is atomic, faults never lose or repeat a metrics line, a
//! checkpoint that cannot be written stops the run, one run per folder, and
//! hung verifiers are abandoned. All on the built-in task's tiny model, CPU.

#[path = "common/tiny_run.rs"]
mod tiny_run;
use rlsd::actors::{Role, Runtime};
use rlsd::config::RunConfig;
use rlsd::data::Example;
use rlsd::run::folder::RunLock;
use rlsd::verify::{Verdict, Verifier};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const B: usize = 2;

fn config(out: &Path, steps: u64, staleness: u64, extra: &[&str]) -> RunConfig {
    let mut set = tiny_run::tiny_run(out, steps, 16);
    set.extend([
        "algo.algo=\"rlsd\"".into(),
        format!("runtime.max_staleness={staleness}"),
        // every_steps (3) is coprime to the teacher sync interval (2).
        "runtime.teacher_sync_interval=2".into(),
        "checkpoint.every_steps=3".into(),
        "checkpoint.keep_last=0".into(),
        format!("rollout.batch_prompts={B}"),
        tiny_run::FAST_LR.into(),
    ]);
    set = tiny_run::with(set, &tiny_run::EVEN_ANSWER);
    set.extend(extra.iter().map(|s| s.to_string()));
    RunConfig::load(None, &set).unwrap()
}

fn run(cfg: RunConfig) -> rlsd::actors::RunReport {
    tiny_run::rt()
        .block_on(Runtime::builder(cfg).verifier(tiny_run::ByteSumMod3).run())
        .unwrap()
}

/// Prompt ids of the first `steps` steps, in order.
fn expected_ids(cfg: &RunConfig, steps: u64) -> Vec<String> {
    let mut source = rlsd::run::source::from_config(cfg).unwrap();
    source
        .next_batch(steps as usize * B)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect()
}

/// The `step` of every line of `<dir>/metrics.jsonl`, in file order.
fn metrics_steps(dir: &Path) -> Vec<u64> {
    rlsd::metrics::read_metrics(&dir.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect()
}

fn ck(dir: &Path, step: u64) -> std::path::PathBuf {
    dir.join("checkpoints")
        .join(rlsd::checkpoint::checkpoint_dir_name(step))
}

/// The named tensors of a safetensors file, sorted by name.
fn tensors(path: &Path) -> Vec<(String, tch::Tensor)> {
    let mut t = tch::Tensor::read_safetensors(path).unwrap();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

fn assert_same_tensors(a: &Path, b: &Path) {
    let (x, y) = (tensors(a), tensors(b));
    assert_eq!(x.len(), y.len(), "{}", a.display());
    for ((na, ta), (nb, tb)) in x.iter().zip(&y) {
        assert_eq!(na, nb);
        assert!(
            ta.equal(tb),
            "{na} differs: {} vs {}",
            a.display(),
            b.display()
        );
    }
}

/// Everything a checkpoint says belongs to step `k`.
fn assert_consistent(dir: &Path, k: u64, ids: &[String], interval: u64) {
    let c = rlsd::checkpoint::load_checkpoint(dir).unwrap();
    assert_eq!(c.step, k);
    assert_eq!(c.state["step"].as_u64(), Some(k), "{}", dir.display());
    assert_eq!(c.state["metrics_lines"].as_u64(), Some(k));
    assert_eq!(
        c.state["teacher_version"].as_u64(),
        Some(k / interval * interval),
        "teacher weights of the last sync at or before step {k}"
    );
    let ledger: Vec<(u64, Vec<String>)> =
        serde_json::from_value(c.state["trained"].clone()).unwrap();
    let steps: Vec<u64> = ledger.iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, (1..=k).collect::<Vec<_>>(), "ledger of step {k}");
    let trained: Vec<String> = ledger.into_iter().flat_map(|(_, v)| v).collect();
    assert_eq!(
        trained,
        ids[..k as usize * B].to_vec(),
        "prompts of step {k}"
    );
    let adam_step = c
        .optimizer
        .iter()
        .find(|(n, _)| n == "step")
        .map(|(_, t)| i64::try_from(t).unwrap());
    assert_eq!(adam_step, Some(k as i64), "AdamW state of step {k}");
    assert!(c.teacher.is_some(), "teacher weights stored");
}

#[test]
fn checkpoints_are_consistent_cuts_at_staleness_one_and_resume_trains_each_prompt_once() {
    let a = tempfile::tempdir().unwrap();
    let cfg = config(a.path(), 7, 1, &[]);
    let ids = expected_ids(&cfg, 7);
    let full = run(cfg);
    assert!(!full.failed, "{}", full.reason);
    for k in [3, 6, 7] {
        assert_consistent(&ck(a.path(), k), k, &ids, 2);
    }
    assert_eq!(metrics_steps(a.path()), (1..=7).collect::<Vec<_>>());

    // Resume from step 3 into a new folder: steps 4..7 with the right prompts,
    // and the new log holds 1..7 once (1..3 restored from the checkpoint).
    let b = tempfile::tempdir().unwrap();
    let resumed = tiny_run::rt()
        .block_on(
            Runtime::builder(config(b.path(), 7, 1, &[]))
                .resume(ck(a.path(), 3))
                .run(),
        )
        .unwrap();
    assert!(!resumed.failed, "{}", resumed.reason);
    let steps: Vec<u64> = resumed.trained.iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, vec![4, 5, 6, 7]);
    let got: Vec<String> = resumed.trained.into_iter().flat_map(|(_, v)| v).collect();
    assert_eq!(got, ids[3 * B..].to_vec(), "each prompt trained once");
    assert_eq!(metrics_steps(b.path()), (1..=7).collect::<Vec<_>>());
    assert_consistent(&ck(b.path(), 7), 7, &ids, 2);
}

#[test]
fn resume_at_staleness_zero_is_bit_identical() {
    let a = tempfile::tempdir().unwrap();
    let full = run(config(a.path(), 5, 0, &[]));
    assert!(!full.failed, "{}", full.reason);
    assert!(
        full.steps[3..].iter().any(|s| s.grad_norm > 0.0),
        "the resumed steps make real updates"
    );
    let b = tempfile::tempdir().unwrap();
    let resumed = tiny_run::rt()
        .block_on(
            Runtime::builder(config(b.path(), 5, 0, &[]))
                .verifier(tiny_run::ByteSumMod3)
                .resume(ck(a.path(), 3))
                .run(),
        )
        .unwrap();
    assert!(!resumed.failed, "{}", resumed.reason);
    for (x, y) in full.steps[3..].iter().zip(&resumed.steps) {
        assert_eq!(x.loss, y.loss, "step {}", x.step);
        assert_eq!(x.teacher_version, y.teacher_version, "step {}", x.step);
    }
    let (fa, fb) = (ck(a.path(), 5), ck(b.path(), 5));
    assert_same_tensors(
        &fa.join("model/model.safetensors"),
        &fb.join("model/model.safetensors"),
    );
    assert_same_tensors(
        &fa.join("optimizer.safetensors"),
        &fb.join("optimizer.safetensors"),
    );
    assert_same_tensors(
        &fa.join("teacher.safetensors"),
        &fb.join("teacher.safetensors"),
    );
}

#[test]
fn a_fault_inside_the_adamw_step_leaves_no_trace() {
    let a = tempfile::tempdir().unwrap();
    let clean = run(config(a.path(), 3, 0, &[]));
    assert!(
        clean.steps.iter().all(|s| s.grad_norm > 0.0),
        "real updates"
    );
    let b = tempfile::tempdir().unwrap();
    let faulty = run(config(
        b.path(),
        3,
        0,
        &["runtime.faults=[\"optimizer@2:adam\"]"],
    ));
    assert!(!faulty.failed, "{}", faulty.reason);
    assert_eq!(faulty.restarts.get(&Role::Optimizer).copied(), Some(1));
    for ((n, x), (_, y)) in clean
        .final_weights
        .tensors
        .iter()
        .zip(&faulty.final_weights.tensors)
    {
        assert!(x.equal(y), "{n} differs after a failed AdamW step");
    }
    assert_same_tensors(
        &ck(a.path(), 3).join("optimizer.safetensors"),
        &ck(b.path(), 3).join("optimizer.safetensors"),
    );
    assert_eq!(metrics_steps(b.path()), vec![1, 2, 3]);
}

#[test]
fn faults_in_each_actor_at_staleness_one_keep_every_metrics_line_once() {
    for (role, kind) in [
        ("scheduler", "error"),
        ("sampler", "panic"),
        ("verifier", "error"),
        ("teacher", "panic"),
        ("credit", "error"),
        ("optimizer", "panic"),
    ] {
        let d = tempfile::tempdir().unwrap();
        let fault = format!("runtime.faults=[\"{role}@2:{kind}\"]");
        let report = run(config(d.path(), 3, 1, &[&fault]));
        assert!(!report.failed, "{role}: {}", report.reason);
        assert_eq!(metrics_steps(d.path()), vec![1, 2, 3], "{role}");
        let steps: Vec<u64> = report.steps.iter().map(|s| s.step).collect();
        assert_eq!(steps, vec![1, 2, 3], "{role}: on_step once per step");
    }
}

#[test]
fn a_checkpoint_that_cannot_be_written_stops_the_run_and_keeps_the_previous_one() {
    let d = tempfile::tempdir().unwrap();
    let report = run(config(
        d.path(),
        7,
        1,
        &["runtime.faults=[\"optimizer@6:disk\"]"],
    ));
    assert!(report.failed, "a lost checkpoint must fail the run");
    assert!(
        report.reason.contains("checkpoint") && report.reason.contains("No space left"),
        "{}",
        report.reason
    );
    let listed: Vec<u64> = rlsd::checkpoint::list_checkpoints(&d.path().join("checkpoints"))
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(listed, vec![3], "step 3 intact, no partial step 6");
    rlsd::checkpoint::load_checkpoint(&ck(d.path(), 3)).unwrap();
    let leftovers = std::fs::read_dir(d.path().join("checkpoints"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(leftovers, 0, "temporary folders removed");
    assert_eq!(metrics_steps(d.path()), (1..=6).collect::<Vec<_>>());

    // A checkpoint folder that cannot exist at all (a file is in the way).
    let e = tempfile::tempdir().unwrap();
    std::fs::write(e.path().join("blocker"), b"").unwrap();
    let report = run(config(e.path(), 4, 0, &["checkpoint.dir=\"blocker/ck\""]));
    assert!(
        report.failed && report.reason.contains("blocker"),
        "{}",
        report.reason
    );
}

#[test]
fn a_second_run_into_one_folder_is_refused_and_the_first_is_untouched() {
    let d = tempfile::tempdir().unwrap();
    let first = run(config(d.path(), 3, 1, &[]));
    assert!(!first.failed);
    let metrics = std::fs::read(d.path().join("metrics.jsonl")).unwrap();
    let err = tiny_run::rt()
        .block_on(Runtime::builder(config(d.path(), 3, 1, &[])).run())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--resume") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(d.path().join("metrics.jsonl")).unwrap(),
        metrics
    );
    assert_consistent(
        &ck(d.path(), 3),
        3,
        &expected_ids(&config(d.path(), 3, 1, &[]), 3),
        2,
    );

    // While a run holds the folder, even a resume is refused.
    let lock = RunLock::acquire(d.path()).unwrap();
    let err = tiny_run::rt()
        .block_on(
            Runtime::builder(config(d.path(), 5, 1, &[]))
                .resume("latest")
                .run(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("another rlsd run"), "{err}");
    drop(lock);

    // Resuming at the last step says so and trains nothing.
    let done = tiny_run::rt()
        .block_on(
            Runtime::builder(config(d.path(), 3, 1, &[]))
                .resume("latest")
                .run(),
        )
        .unwrap();
    assert!(!done.failed && done.steps.is_empty());
    assert!(done.reason.contains("nothing to train"), "{}", done.reason);

    // Starting over is explicit.
    let again = tiny_run::rt()
        .block_on(
            Runtime::builder(config(d.path(), 2, 1, &[]))
                .overwrite(true)
                .run(),
        )
        .unwrap();
    assert!(!again.failed);
    assert_eq!(metrics_steps(d.path()), vec![1, 2]);
}

#[test]
fn kl_coef_without_a_reference_model_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let err = tiny_run::rt()
        .block_on(Runtime::builder(config(d.path(), 2, 1, &["algo.kl_coef=0.1"])).run())
        .unwrap_err()
        .to_string();
    assert!(err.contains("algo.kl_coef"), "{err}");
}

/// Hangs (30 s) on its first `hangs` calls, then rewards by byte sum.
#[derive(Debug)]
struct Hanging {
    calls: AtomicUsize,
    hangs: usize,
    sleeping: Arc<AtomicUsize>,
}

impl Verifier for Hanging {
    fn verify(&self, _example: &Example, response: &str) -> Verdict {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.hangs {
            self.sleeping.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_secs(30));
            self.sleeping.fetch_sub(1, Ordering::SeqCst);
        }
        let r = (response.len() % 2) as f32;
        Verdict {
            reward: r,
            correct: r == 1.0,
            reason: "length parity".into(),
        }
    }
}

#[test]
fn hung_in_process_verifiers_are_abandoned_and_the_pool_keeps_its_size() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(
        d.path(),
        2,
        0,
        &[
            "runtime.verifier_workers=2",
            "runtime.verifier_timeout_s=1.0",
        ],
    );
    let sleeping = Arc::new(AtomicUsize::new(0));
    let v = Hanging {
        calls: AtomicUsize::new(0),
        hangs: 2,
        sleeping: sleeping.clone(),
    };
    let runtime = tiny_run::rt();
    let report = runtime
        .block_on(Runtime::builder(cfg).verifier(v).run())
        .unwrap();
    assert!(!report.failed, "{}", report.reason);
    assert_eq!(report.steps.len(), 2);
    // Both workers hung on step 1; without fresh slots nothing else could run.
    assert_eq!(report.steps[0].verifier_timeouts, 2);
    assert_eq!(report.steps[1].verifier_timeouts, 0);
    assert_eq!(
        sleeping.load(Ordering::SeqCst),
        2,
        "the run did not wait for them"
    );
    runtime.shutdown_background();
}

#[test]
fn a_hung_command_verifier_has_its_process_group_killed() {
    let d = tempfile::tempdir().unwrap();
    let pids = d.path().join("pids");
    let script = format!("sleep 30 & echo $! >> {}; wait", pids.display());
    let args = format!("verifier.command.args=[\"-c\", \"{script}\"]");
    let cfg = config(
        d.path(),
        1,
        0,
        &[
            "verifier.kind=\"command\"",
            "verifier.command.program=\"sh\"",
            "verifier.command.timeout_ms=60000",
            &args,
            "rollout.group_size=2",
            "runtime.verifier_workers=2",
            "runtime.verifier_timeout_s=1.0",
        ],
    );
    let report = tiny_run::rt()
        .block_on(Runtime::builder(cfg).run())
        .unwrap();
    assert!(!report.failed, "{}", report.reason);
    let text = std::fs::read_to_string(&pids).unwrap();
    let pids: Vec<&str> = text.lines().collect();
    assert_eq!(pids.len(), 2 * B, "one process per response");
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim().chars().next();
        assert!(
            matches!(state, None | Some('Z') | Some('X')),
            "sleep {pid} still alive: {stat}"
        );
    }
}
