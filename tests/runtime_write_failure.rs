//! A failed write of `metrics.jsonl` (disk full) stops the run with a final
//! checkpoint of the last committed step, leaves only whole lines in the
//! log, and the run resumes to the end with every step logged exactly once
//! (issue 24, item 2). Through the real binary; needs root for a tmpfs
//! (skipped, saying so, without it).

#[path = "common/timed.rs"]
mod timed;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const STEPS: u64 = 40;

fn train(out: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlsd"));
    cmd.args(["train", "--set"])
        .arg(format!("runtime.out_dir={}", out.display()))
        .arg("--set")
        .arg(format!("runtime.steps={STEPS}"));
    for kv in [
        "rollout.batch_prompts=2",
        "rollout.group_size=2",
        "rollout.max_new_tokens=4",
        "runtime.sampler_device=cpu",
        "runtime.teacher_device=cpu",
        "runtime.optimizer_device=cpu",
        "checkpoint.every_steps=5",
        "checkpoint.keep_last=0",
        // Only metrics.jsonl grows in the run folder, so it is the write that fails.
        "observe.tensorboard=false",
        "observe.completions_per_step=0",
        "observe.report=false",
    ] {
        cmd.args(["--set", kv]);
    }
    cmd.args(extra).env("RLSD_LOG", "warn").env("NO_COLOR", "1");
    timed::output_within(&mut cmd, Duration::from_secs(300))
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Unmounts on drop (innermost first), so a failed assertion leaves nothing mounted.
struct Mounts(Vec<PathBuf>);

impl Drop for Mounts {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = Command::new("umount").arg(p).status();
        }
    }
}

fn mount(args: &[&str], at: &Path) -> bool {
    Command::new("mount")
        .args(args)
        .arg(at)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Steps of the metrics log; panics on a line that is not whole JSON.
fn logged_steps(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "torn last line");
    text.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}"));
            v["step"].as_u64().unwrap()
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[test]
fn a_full_disk_under_the_metrics_log_keeps_a_final_checkpoint_and_the_run_resumes() {
    let d = tempfile::tempdir().unwrap();
    let (run, ckpts) = (d.path().join("run"), d.path().join("ckpts"));
    std::fs::create_dir_all(&run).unwrap();
    std::fs::create_dir_all(&ckpts).unwrap();
    // The run folder is a 16 KiB tmpfs (room for about a dozen metrics
    // lines); its checkpoint root is bound to a folder on the real disk.
    if !mount(&["-t", "tmpfs", "-o", "size=16k", "tmpfs"], &run) {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    let mut mounts = Mounts(vec![run.clone()]);
    let root = run.join("checkpoints");
    std::fs::create_dir_all(&root).unwrap();
    assert!(mount(&["--bind", &ckpts.display().to_string()], &root));
    mounts.0.push(root.clone());

    let o = train(&run, &[]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("No space left"), "{t}");
    let logged = logged_steps(&run.join("metrics.jsonl"));
    assert!(
        !logged.is_empty() && (logged.len() as u64) < STEPS,
        "{logged:?}"
    );
    assert_eq!(logged, (1..=logged.len() as u64).collect::<Vec<_>>());
    // A final checkpoint of the last committed step: the step whose line
    // failed was committed before it was logged, so it is past the log.
    let (last, _) = rlsd::checkpoint::list_checkpoints(&ckpts)
        .unwrap()
        .pop()
        .expect("a checkpoint");
    assert!(
        last > *logged.last().unwrap(),
        "last checkpoint {last}, logged {logged:?}\n{t}"
    );

    // Room again (the folder moved to a real disk): resume to the end.
    let moved = d.path().join("moved");
    copy_dir(&run, &moved);
    drop(mounts);
    std::fs::remove_dir_all(moved.join("checkpoints")).unwrap();
    copy_dir(&ckpts, &moved.join("checkpoints"));
    let o = train(&moved, &["--resume", "latest"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        logged_steps(&moved.join("metrics.jsonl")),
        (1..=STEPS).collect::<Vec<_>>()
    );
}
