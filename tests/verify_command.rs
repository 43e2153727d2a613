//! The command verifier: a good checker, a crash, bad JSON, a timeout (with a
//! child process that must die too), partial credit, and a missing program.

use std::time::{Duration, Instant};

use rlsd::data::Example;
use rlsd::verify::{build_verifier, CommandConfig, Verifier, VerifierConfig, VerifierKind};

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/verify/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn example() -> Example {
    Example {
        id: "q1".into(),
        prompt: "What is 6 * 7?".into(),
        answer: "42".into(),
        privileged: "42".into(),
        context: Vec::new(),
        extra: Default::default(),
        images: Vec::new(),
    }
}

fn verifier(program: &str, args: &[&str], timeout_ms: u64) -> Box<dyn Verifier> {
    let cfg = VerifierConfig {
        kind: VerifierKind::Command,
        command: CommandConfig {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            timeout_ms,
            worker: false,
        },
        ..VerifierConfig::default()
    };
    build_verifier(&cfg).unwrap()
}

#[test]
fn good_checker_scores_from_its_json_reply() {
    let v = verifier("python3", &[&fixture("good.py")], 20_000);
    let right = v.verify(&example(), "6 * 7 = 42");
    assert_eq!(right.reward, 1.0, "{}", right.reason);
    assert!(right.correct);
    assert_eq!(right.reason, "python saw '42'");
    let wrong = v.verify(&example(), "6 * 7 = 48");
    assert_eq!(wrong.reward, 0.0);
    assert!(!wrong.correct);
}

#[test]
fn crash_scores_zero_with_exit_status_and_stderr() {
    let v = verifier(&fixture("crash.sh"), &[], 20_000);
    let verdict = v.verify(&example(), "42");
    assert_eq!(verdict.reward, 0.0);
    assert!(!verdict.correct);
    assert!(
        verdict.reason.contains("exit status: 3"),
        "{}",
        verdict.reason
    );
    assert!(
        verdict.reason.contains("checker exploded"),
        "{}",
        verdict.reason
    );
}

#[test]
fn bad_json_scores_zero() {
    let v = verifier(&fixture("bad_json.sh"), &[], 20_000);
    let verdict = v.verify(&example(), "42");
    assert_eq!(verdict.reward, 0.0);
    assert!(
        verdict.reason.contains("not the expected JSON"),
        "{}",
        verdict.reason
    );
    assert!(verdict.reason.contains("reward: one"), "{}", verdict.reason);
}

#[test]
fn timeout_scores_zero_and_returns_without_waiting_for_the_script() {
    let v = verifier(&fixture("slow.sh"), &[], 300);
    let start = Instant::now();
    let verdict = v.verify(&example(), "42");
    let took = start.elapsed();
    assert_eq!(verdict.reward, 0.0);
    assert_eq!(verdict.reason, "timed out after 300 ms");
    // The script sleeps 30 s; returning well before that shows the verifier
    // does not wait for the script or its `sleep` child.
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// Whether `pid` is gone: no `/proc` entry, or a zombie waiting to be reaped
/// (dead; a container's init may never reap it).
fn is_dead(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or("").trim().chars().next();
    matches!(state, None | Some('Z') | Some('X'))
}

#[test]
fn timeout_kills_the_process_group() {
    let tmp = tempfile::tempdir().unwrap();
    let pid_file = tmp.path().join("pids");
    let v = verifier(
        &fixture("slow_child.sh"),
        &[pid_file.to_str().unwrap()],
        1500,
    );
    let verdict = v.verify(&example(), "42");
    assert_eq!(verdict.reason, "timed out after 1500 ms");
    let text = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("the fixture wrote no pid file ({e}): {}", verdict.reason));
    let pids: Vec<u32> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "script and child: {text}");
    // A killed process is gone within moments; allow a loaded machine 5 s.
    let start = Instant::now();
    while !pids.iter().all(|&p| is_dead(p)) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in pids {
        assert!(
            is_dead(pid),
            "process {pid} of the timed-out checker is still alive"
        );
    }
}

#[test]
fn partial_credit_is_not_counted_correct_by_default() {
    let v = verifier(&fixture("partial.sh"), &[], 20_000);
    let verdict = v.verify(&example(), "42");
    assert_eq!(verdict.reward, 0.5);
    assert!(!verdict.correct);
}

#[test]
fn missing_program_scores_zero() {
    let v = verifier("/nonexistent/checker", &[], 1000);
    let verdict = v.verify(&example(), "42");
    assert_eq!(verdict.reward, 0.0);
    assert!(
        verdict.reason.contains("failed to start"),
        "{}",
        verdict.reason
    );
}

#[test]
fn empty_program_or_zero_timeout_is_a_config_error() {
    for (program, timeout_ms, key) in [
        ("", 1000, "verifier.command.program"),
        ("true", 0, "verifier.command.timeout_ms"),
    ] {
        let cfg = VerifierConfig {
            kind: VerifierKind::Command,
            command: CommandConfig {
                program: program.into(),
                args: vec![],
                timeout_ms,
                worker: false,
            },
            ..VerifierConfig::default()
        };
        let err = build_verifier(&cfg)
            .err()
            .expect("config error")
            .to_string();
        assert!(err.contains(key), "{err}");
    }
}
