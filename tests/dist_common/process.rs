//! Running `rlsd train --nproc N` jobs from the tests (tests/dist_launch.rs,
//! tests/dist_failure.rs, tests/dist_split.rs): a bounded wait (a hang is
//! the bug these tests look for) and the run folder's reports and metrics.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Run `cmd` to the end with its output captured, killing it and failing
/// the test if it outlives a generous bound.
pub fn run(mut cmd: Command, what: &str) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}: still running after 300 s (hung?)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The job succeeded (else its stderr is shown).
pub fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The job failed and its stderr says `needle`.
pub fn failed_naming(o: &Output, what: &str, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{what} must fail:\n{err}");
    assert!(
        err.contains(needle),
        "{what}: stderr should say {needle:?}:\n{err}"
    );
}

/// `ranks/rank<r>.json` of the run folder `out`.
pub fn report(out: &Path, rank: usize) -> Value {
    let text = std::fs::read_to_string(out.join(format!("ranks/rank{rank}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The metrics log without its wall-clock times (`timings`, and each
/// validation's `wall_s`).
pub fn metrics(out: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("timings");
            for val in v["validation"].as_array_mut().into_iter().flatten() {
                val.as_object_mut().unwrap().remove("wall_s");
            }
            v
        })
        .collect()
}
