//! JSON-lines workers: one process serves many concurrent requests; a crash
//! fails the requests in flight and the next request restarts it; a hung
//! process is killed at the timeout; the command verifier and the command
//! environment run over it (the environment is examples/python_env's
//! calculator).

use std::time::Duration;

use rlsd::data::Example;
use rlsd::env::{
    build_group_reward, play_text, BoxFuture, CommandEnvironment, EnvCounters, Message, Opening,
    Worker, WorkerConfig, WorkerError,
};
use rlsd::verify::{CommandConfig, CommandVerifier, Verifier, VerifierConfig, VerifierKind};
use serde_json::{json, Map, Value};

fn root(p: &str) -> String {
    format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))
}

fn worker(timeout_ms: u64) -> Worker {
    let cfg = WorkerConfig {
        program: "python3".into(),
        args: vec![root("tests/fixtures/env/worker.py")],
        timeout_ms,
    };
    Worker::new(cfg, "test.worker").unwrap()
}

fn req(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn one_process_serves_concurrent_requests_out_of_order() {
    let w = worker(5_000);
    let rt = rt();
    let replies = rt.block_on(async {
        let mut calls = Vec::new();
        // 8 requests that each sleep 0.3 s, all in flight together.
        for i in 0..8 {
            let w = w.clone();
            calls.push(tokio::spawn(async move {
                w.call(req(json!({"op": "sleep", "s": 0.3, "i": i}))).await
            }));
        }
        let mut out = Vec::new();
        for c in calls {
            out.push(c.await.unwrap());
        }
        out
    });
    assert!(
        replies.iter().all(|r| r.as_ref().unwrap()["slept"] == 0.3),
        "{replies:?}"
    );
    let peak = replies
        .iter()
        .map(|r| r.as_ref().unwrap()["peak"].as_u64().unwrap())
        .max();
    assert!(
        peak > Some(1),
        "requests were in flight together: peak {peak:?}"
    );
    let pids: Vec<Value> = (0..20)
        .map(|i| w.call_blocking(req(json!({"op": "echo", "x": i}))).unwrap())
        .inspect(|r| assert!(r["x"].is_number()))
        .map(|r| r["pid"].clone())
        .collect();
    assert!(
        pids.windows(2).all(|p| p[0] == p[1]),
        "one process: {pids:?}"
    );
    assert_eq!(w.restarts(), 0);
    let e = w.call_blocking(req(json!({"op": "fail"}))).unwrap_err();
    assert!(
        matches!(e, WorkerError::Remote { ref msg, .. } if msg == "asked to fail"),
        "{e}"
    );
}

#[test]
fn a_crash_fails_the_requests_in_flight_and_the_worker_restarts() {
    let w = worker(5_000);
    let first = w.call_blocking(req(json!({"op": "echo"}))).unwrap()["pid"].clone();
    let rt = rt();
    let (slow, crash) = rt.block_on(async {
        let w2 = w.clone();
        let slow =
            tokio::spawn(async move { w2.call(req(json!({"op": "sleep", "s": 2.0}))).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let crash = w.call(req(json!({"op": "crash"}))).await;
        (slow.await.unwrap(), crash)
    });
    for r in [&slow, &crash] {
        let e = r.as_ref().unwrap_err();
        assert!(matches!(e, WorkerError::Crashed { .. }), "{e}");
        assert!(e.to_string().contains("exit status: 3"), "{e}");
    }
    let again = w.call_blocking(req(json!({"op": "echo"}))).unwrap()["pid"].clone();
    assert_ne!(first, again, "a fresh process");
    assert_eq!(w.restarts(), 1);
}

#[test]
fn a_hung_worker_times_out_is_killed_and_restarts() {
    let w = worker(2_000);
    let e = w.call_blocking(req(json!({"op": "hang"}))).unwrap_err();
    assert!(
        matches!(
            e,
            WorkerError::TimedOut {
                timeout_ms: 2_000,
                ..
            }
        ),
        "{e}"
    );
    let r = w.call_blocking(req(json!({"op": "echo", "x": 1}))).unwrap();
    assert_eq!(r["x"], 1);
    assert_eq!(w.restarts(), 1);
}

#[test]
fn a_missing_program_fails_each_request_with_its_name() {
    let cfg = WorkerConfig {
        program: "/no/such/worker".into(),
        ..WorkerConfig::default()
    };
    let w = Worker::new(cfg, "test.worker").unwrap();
    let e = w.call_blocking(req(json!({}))).unwrap_err().to_string();
    assert!(
        e.contains("/no/such/worker") && e.contains("failed to start"),
        "{e}"
    );
    let e = Worker::new(WorkerConfig::default(), "env.command")
        .unwrap_err()
        .to_string();
    assert!(e.contains("env.command.program"), "{e}");
}

fn calculator() -> (String, Vec<String>) {
    (
        "python3".into(),
        vec![root("examples/python_env/calculator_env.py")],
    )
}

#[test]
fn command_verifier_in_worker_mode_scores_over_one_process() {
    let (program, args) = calculator();
    let v = CommandVerifier::new(CommandConfig {
        program,
        args,
        timeout_ms: 5_000,
        worker: true,
    })
    .unwrap();
    let ex = Example::new("q1", "What is 6 * 7?", "42", "42");
    let right = v.verify(&ex, "6 * 7 = 42\nAnswer: 42");
    assert_eq!(
        (right.reward, right.correct),
        (1.0, true),
        "{}",
        right.reason
    );
    assert_eq!(v.verify(&ex, "Answer: 41").reward, 0.0);
    let group: Vec<String> = ["Answer: 42", "Answer: 40", "no answer"]
        .map(String::from)
        .to_vec();
    let verdicts = rt().block_on(v.verify_group(&ex, &group));
    let rewards: Vec<f32> = verdicts.iter().map(|v| v.reward).collect();
    assert_eq!(rewards, vec![1.0, 0.0, 0.0]);
    assert_eq!(verdicts[2].reason, "no final answer");
    // The same through the config's group reward (`verifier.command.worker = true`).
    let cfg = VerifierConfig {
        kind: VerifierKind::Command,
        command: CommandConfig {
            program: "python3".into(),
            args: calculator().1,
            timeout_ms: 5_000,
            worker: true,
        },
        ..VerifierConfig::default()
    };
    let g = build_group_reward(&cfg).unwrap();
    assert_eq!(g.name(), "command");
    let again: Vec<f32> = rt()
        .block_on(g.score_group(&ex, &group))
        .iter()
        .map(|v| v.reward)
        .collect();
    assert_eq!(again, rewards);
    assert_eq!(v.worker().unwrap().restarts(), 0);
}

/// Calls the calculator first, then answers from the tool's result.
fn calculator_model(
) -> impl for<'m> FnMut(&'m Opening, &'m [Message]) -> BoxFuture<'m, rlsd::Result<String>> {
    let mut turn = 0;
    move |_, msgs| {
        turn += 1;
        let text = if turn == 1 {
            "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"17*23\"}}\n</tool_call>".to_string()
        } else {
            let r: i64 = msgs.last().unwrap().content.parse().unwrap();
            format!("So {r} + 1.\nAnswer: {}", r + 1)
        };
        Box::pin(async move { Ok(text) })
    }
}

#[test]
fn command_environment_plays_a_calculator_episode() {
    let (program, args) = calculator();
    let env = CommandEnvironment::new(
        WorkerConfig {
            program,
            args,
            timeout_ms: 5_000,
        },
        "env.command",
    )
    .unwrap();
    let ex = Example::new("q1", "What is 17 * 23 + 1?", "392", "392");
    let model = calculator_model();
    let c = EnvCounters::default();
    let t = rt()
        .block_on(play_text(&env, &ex, model, 4, Duration::from_secs(5), &c))
        .unwrap();
    assert_eq!(
        t.opening.messages,
        vec![Message::new("user", "What is 17 * 23 + 1?")]
    );
    assert_eq!(t.opening.tools[0]["function"]["name"], "calculator");
    assert_eq!(t.opening.privileged, "392");
    let roles: Vec<_> = t.turns.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["assistant", "tool", "assistant"]);
    assert_eq!(t.turns[1].content, "391");
    assert_eq!(t.outcome.verdict.reward, 1.0, "{:?}", t.outcome);
    assert_eq!(t.outcome.components["tool_calls"], 1.0);
    assert_eq!(c.snapshot(), (0, 0));
}

/// Plays one turn: the text is the episode's prompt.
fn say_prompt(
) -> impl for<'m> FnMut(&'m Opening, &'m [Message]) -> BoxFuture<'m, rlsd::Result<String>> {
    |opening, _| {
        let text = opening.messages[0].content.clone();
        Box::pin(async move { Ok(text) })
    }
}

#[test]
fn a_crashed_or_hung_environment_costs_its_episode_not_the_run() {
    let env = CommandEnvironment::new(
        WorkerConfig {
            program: "python3".into(),
            args: vec![root("tests/fixtures/env/crashy_env.py")],
            timeout_ms: 1_500,
        },
        "env.command",
    )
    .unwrap();
    let c = EnvCounters::default();
    let rt = rt();
    let play = |prompt: &str| {
        let ex = Example::new("q", prompt, "", "");
        rt.block_on(play_text(
            &env,
            &ex,
            say_prompt(),
            2,
            Duration::from_secs(30),
            &c,
        ))
        .unwrap()
        .outcome
    };
    let crashed = play("crash");
    assert_eq!(crashed.verdict.reward, 0.0);
    assert!(
        crashed.verdict.reason.contains("exit status: 4"),
        "{:?}",
        crashed
    );
    assert_eq!(c.snapshot(), (0, 1));
    let hung = play("hang");
    assert_eq!(hung.verdict.reward, 0.0);
    assert!(
        hung.verdict.reason.contains("timed out after 1500 ms"),
        "{:?}",
        hung
    );
    assert_eq!(c.snapshot(), (1, 1));
    let fine = play("fine");
    assert_eq!(
        (fine.verdict.reward, fine.verdict.reason.as_str()),
        (1.0, "ok")
    );
    assert_eq!(env.worker().restarts(), 2);
}
