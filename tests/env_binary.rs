//! Multi-turn episodes through the real binary: `rlsd train --set
//! env.kind=command ...` with a Python environment over the JSON-lines
//! protocol (two model turns per episode, an observation between them).
//! The run trains, its completions log marks the environment's tokens
//! untrained, and an environment process that crashes or hangs costs the
//! episodes it held (reward 0, counted in `env_failures`) but not the
//! run. Skipped when `python3` is missing.

#[path = "common/timed.rs"]
mod timed;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Two model turns per episode; after the first the environment says
/// `Check:`; the second scores 1 when it contains the answer. `crash`
/// exits the process at its 3rd step request, `hang` stops answering there.
const ENV_PY: &str = r#"
import json, os, sys, time
mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
steps = 0
answers = {}
for line in sys.stdin:
    req = json.loads(line)
    kind = req["type"]
    if kind == "start":
        answers[req["episode"]] = (req["example"]["answer"], 0)
        out = {"messages": [{"role": "user", "content": req["example"]["prompt"]}]}
    elif kind == "step":
        steps += 1
        if steps == 3 and mode == "crash":
            os._exit(3)
        if steps == 3 and mode == "hang":
            time.sleep(3600)
        answer, turns = answers[req["episode"]]
        if turns == 0:
            answers[req["episode"]] = (answer, 1)
            out = {"messages": [{"role": "user", "content": "Check:"}]}
        else:
            ok = answer in req["turn"]
            out = {"done": True, "reward": 1.0 if ok else 0.0, "correct": ok, "reason": "checked"}
    else:
        out = {"done": True, "reward": 0.0, "correct": False, "reason": "turn limit"}
    out["id"] = req["id"]
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
"#;

fn have_python() -> bool {
    Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Train 2 steps of 2 prompts x 2 episodes against the environment in `mode`.
fn train(dir: &Path, mode: &str) -> (std::process::Output, String) {
    let script = dir.join("env.py");
    std::fs::write(&script, ENV_PY).unwrap();
    let out_dir = dir.join(format!("run-{mode}"));
    let args = format!("env.args=[\"{}\", \"{mode}\"]", script.display());
    let out = timed::output_within(
        Command::new(env!("CARGO_BIN_EXE_rlsd")).args([
            "train",
            "--set",
            "env.kind=command",
            "--set",
            "env.program=python3",
            "--set",
            &args,
            "--set",
            "env.turn_timeout_s=3",
            "--set",
            "env.max_turns=3",
            "--set",
            "runtime.steps=2",
            "--set",
            "runtime.max_staleness=0",
            "--set",
            "rollout.batch_prompts=2",
            "--set",
            "rollout.group_size=2",
            "--set",
            "rollout.max_new_tokens=6",
            "--set",
            "checkpoint.every_steps=0",
            "--set",
            &format!("runtime.out_dir={}", out_dir.display()),
        ]),
        Duration::from_secs(600),
    );
    let log = std::fs::read_to_string(out_dir.join("completions.jsonl")).unwrap_or_default();
    (out, log)
}

fn records(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .flat_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["samples"].as_array().cloned().unwrap_or_default()
        })
        .collect()
}

#[test]
fn a_python_environment_trains_through_the_binary() {
    if !have_python() {
        eprintln!("skipped: no python3");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (out, log) = train(tmp.path(), "ok");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let samples = records(&log);
    assert_eq!(samples.len(), 8, "{log}");
    for s in &samples {
        // The environment's `Check:` turn sits inside the response,
        // untrained and without credit; the model's tokens are trained.
        let trained = s["trained"].as_array().expect("a trained mask");
        let tokens = s["tokens"].as_array().unwrap();
        let ahat = s["ahat"].as_array().unwrap();
        assert_eq!(trained.len(), tokens.len());
        assert!(trained.iter().any(|m| m == 0.0), "{s}");
        assert!(trained.iter().any(|m| m == 1.0), "{s}");
        for (m, a) in trained.iter().zip(ahat) {
            if m == 0.0 {
                assert_eq!(a.as_f64(), Some(0.0), "{s}");
            }
        }
        assert!(s["response"].as_str().unwrap().contains("Check:"), "{s}");
        assert_eq!(s["reason"], "checked", "{s}");
    }
}

#[test]
fn a_crashing_or_hanging_environment_costs_its_episodes_not_the_run() {
    if !have_python() {
        eprintln!("skipped: no python3");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for mode in ["crash", "hang"] {
        let (out, log) = train(tmp.path(), mode);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mode}: {stderr}");
        let samples = records(&log);
        assert_eq!(samples.len(), 8, "{mode}: {log}");
        let failed: Vec<_> = samples
            .iter()
            .filter(|s| s["reason"] != "checked")
            .collect();
        assert!(!failed.is_empty(), "{mode}: {log}");
        for s in &failed {
            assert_eq!(s["reward"], 0.0, "{mode}: {s}");
        }
        let metrics =
            std::fs::read_to_string(tmp.path().join(format!("run-{mode}")).join("metrics.jsonl"))
                .unwrap();
        let counted: u64 = metrics
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["env_failures"].as_u64())
            .sum();
        assert!(counted >= 1, "{mode}: {metrics}");
        let verifier: u64 = metrics
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["verifier_timeouts"].as_u64())
            .sum();
        assert_eq!(
            verifier, 0,
            "{mode}: an environment failure counted as the verifier's"
        );
    }
}

/// The built-in agent task through the binary: `rlsd train --config
/// configs/agent.toml` (its embedded `builtin-agent` base calls the
/// calculator on some problems) for one step, every episode logged. The
/// metrics carry the step's tool-call rate and turns; in completions.jsonl
/// an episode that called the tool has several turns, its tool turn
/// (`Tool: <value>`) is marked untrained with no credit, and every token
/// with credit is the model's; `rlsd inspect --run` shows the same step with
/// the tool turn inside `⟦ ⟧`.
#[test]
fn the_builtin_agent_task_logs_tool_turns_untrained() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("agent");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/agent.toml");
    let out = timed::output_within(
        Command::new(env!("CARGO_BIN_EXE_rlsd"))
            .arg("train")
            .arg("--config")
            .arg(&config)
            .args([
                "--set",
                "runtime.steps=1",
                "--set",
                "rollout.batch_prompts=4",
                "--set",
                "rollout.group_size=4",
                "--set",
                "observe.completions_per_step=16",
                "--set",
                "checkpoint.every_steps=0",
                "--set",
            ])
            .arg(format!("runtime.out_dir={}", run.display())),
        Duration::from_secs(600),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let step: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    let rate = step["episodes"]["tool_call_rate"]
        .as_f64()
        .expect("a tool-call rate");
    let turns = step["episodes"]["turns_mean"]
        .as_f64()
        .expect("turns per episode");
    assert!((0.0..=1.0).contains(&rate) && turns >= 1.0, "{step}");

    let log = std::fs::read_to_string(run.join("completions.jsonl")).unwrap();
    let samples = records(&log);
    assert_eq!(samples.len(), 16, "{log}");
    let mut with_tool = 0;
    for s in &samples {
        let tokens: Vec<&str> = s["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        let trained: Vec<f64> = s["trained"]
            .as_array()
            .expect("a trained mask")
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect();
        let ahat = s["ahat"].as_array().unwrap();
        assert_eq!(trained.len(), tokens.len(), "{s}");
        for (m, a) in trained.iter().zip(ahat) {
            if *m == 0.0 {
                assert_eq!(a.as_f64(), Some(0.0), "credit on an environment token: {s}");
            }
        }
        let response = s["response"].as_str().unwrap();
        if !response.contains("</tool_call>") {
            continue;
        }
        with_tool += 1;
        // The tool turn: `Tool: ` and the value, all untrained; the call
        // before it and the model's next turn after it, trained.
        let text: String = tokens.concat();
        let at = text.find("Tool: ").expect("a tool turn after the call");
        let (mut pos, mut first) = (0, None);
        for (j, t) in tokens.iter().enumerate() {
            if pos == at {
                first = Some(j);
            }
            pos += t.len();
        }
        let first = first.expect("the tool turn starts on a token boundary");
        assert!(trained[first..first + 6].iter().all(|m| *m == 0.0), "{s}");
        assert!(trained[..first].contains(&1.0), "{s}");
        assert!(trained[first..].contains(&1.0), "{s}");
    }
    assert!(with_tool > 0, "no episode called the calculator: {log}");

    let page = tmp.path().join("inspect.html");
    let json = tmp.path().join("inspect.json");
    let out = timed::output_within(
        Command::new(env!("CARGO_BIN_EXE_rlsd"))
            .args(["inspect", "--quiet", "--run"])
            .arg(&run)
            .arg("--out")
            .arg(&page)
            .arg("--json")
            .arg(&json),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("⟦"), "no environment run marked in the page");
    let shown: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(shown.to_string().contains("Tool: "), "{shown}");
}
