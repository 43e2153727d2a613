//! `--overwrite` removes only what a run wrote inside its own run folder,
//! and `checkpoint.dir` cannot point outside it (issue 24, item 1), through
//! the real binary.

#[path = "common/timed.rs"]
mod timed;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// A one-step run of the built-in task into `out`, tiny and on the CPU.
fn train(out: &Path, extra: &[&str]) -> Output {
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
        "checkpoint.every_steps=1",
    ] {
        cmd.args(["--set", kv]);
    }
    cmd.args(extra)
        .env("RLSD_LOG", "error")
        .env("NO_COLOR", "1");
    timed::output_within(&mut cmd, Duration::from_secs(300))
}

/// TensorBoard event files in `dir`.
fn event_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let e = e.as_ref().unwrap();
            e.file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .count()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn checkpoint_dir_outside_the_run_folder_is_refused_before_anything_is_touched() {
    let d = tempfile::tempdir().unwrap();
    let beside = d.path().join("beside.txt");
    std::fs::write(&beside, "not rlsd's").unwrap();
    let abs = format!("checkpoint.dir={}", d.path().join("abs").display());
    for set in [
        "checkpoint.dir=..",
        "checkpoint.dir=",
        "checkpoint.dir=.",
        "checkpoint.dir=a/../../b",
        abs.as_str(),
    ] {
        let out = d.path().join("run");
        let o = train(&out, &["--overwrite", "--set", set]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{set}: {}", text(&o));
        assert!(err.contains("checkpoint.dir"), "{set}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{set}: {err}");
        assert!(!out.exists(), "{set}: the run folder was created");
        assert!(
            beside.is_file(),
            "{set}: a file beside the run folder was removed"
        );
    }
}

#[test]
fn overwrite_keeps_files_the_run_did_not_write() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let o = train(&out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.join("checkpoints/step-000001").is_dir(), "{}", text(&o));
    // Planted: beside the run folder, inside it, inside its checkpoint root.
    let beside = d.path().join("beside.txt");
    let inside = out.join("my-notes.txt");
    let in_root = out.join("checkpoints/README");
    for p in [&beside, &inside, &in_root] {
        std::fs::write(p, "not rlsd's").unwrap();
    }
    // Without --overwrite the used folder is refused.
    let o = train(&out, &[]);
    assert!(!o.status.success(), "{}", text(&o));
    let o = train(&out, &["--overwrite"]);
    assert!(o.status.success(), "{}", text(&o));
    for p in [&beside, &inside, &in_root] {
        assert_eq!(
            std::fs::read_to_string(p).unwrap(),
            "not rlsd's",
            "{} was touched",
            p.display()
        );
    }
    // The old run's TensorBoard file went with it: one event file, the new run's.
    assert_eq!(event_files(&out), 1);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 1, "{metrics}");
    assert!(out.join("checkpoints/step-000001").is_dir());
}
