//! The embedding API an agent program lives in (issue 20): a stop handle that
//! ends a run as SIGTERM does, every response with its credit in the step
//! callback, a dataset's extra columns reaching the reward, the final weights
//! written as a Hugging Face folder, and `Runtime` driven from inside an
//! existing tokio runtime (`#[tokio::test]`, both flavours).

#[path = "common/tiny_run.rs"]
mod tiny_run;

use rlsd::actors::{Runtime, StopHandle};
use rlsd::config::RunConfig;
use rlsd::data::Example;
use rlsd::model::LoadedModel;
use rlsd::stats::ResponseRecord;
use rlsd::verify::{Verdict, Verifier};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tiny_run::{rt, tiny_run, with, ByteSumMod3, FAST_LR};

/// A step number and the records its callback received.
type StepResponses = (u64, Vec<ResponseRecord>);

fn config(out: &Path, steps: u64, more: &[&str]) -> RunConfig {
    RunConfig::load(None, &with(tiny_run(out, steps, 8), more)).unwrap()
}

#[test]
fn a_stop_handle_ends_the_run_cleanly_with_a_final_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    // Twenty steps asked for, no periodic checkpoint: what is on disk at the
    // end is the stop's final checkpoint.
    let cfg = config(tmp.path(), 20, &["checkpoint.every_steps=1000"]);
    let stop = StopHandle::new();
    let in_callback = stop.clone();
    let report = rt()
        .block_on(
            Runtime::builder(cfg)
                .verifier(ByteSumMod3)
                .stop_handle(stop.clone())
                .on_step(move |s| {
                    if s.step == 2 {
                        in_callback.stop("enough after step 2");
                    }
                })
                .run(),
        )
        .unwrap();
    assert!(stop.is_stopped());
    assert!(
        !report.failed,
        "a requested stop is not a failure: {}",
        report.reason
    );
    assert!(
        report.reason.contains("enough after step 2"),
        "{}",
        report.reason
    );
    // The step in flight when the stop came may finish; nothing after it.
    let last = report.steps.last().unwrap().step;
    assert!((2..=3).contains(&last), "trained through step {last}");
    let ckpt = report.last_checkpoint.expect("a final checkpoint");
    let loaded = rlsd::checkpoint::load_checkpoint(&ckpt).unwrap();
    assert_eq!(
        loaded.step, last,
        "the final checkpoint is the last committed step"
    );
}

#[test]
fn a_stop_before_the_run_starts_trains_at_most_one_step() {
    let tmp = tempfile::tempdir().unwrap();
    let stop = StopHandle::new();
    stop.stop("never mind");
    let report = rt()
        .block_on(
            Runtime::builder(config(tmp.path(), 20, &[]))
                .verifier(ByteSumMod3)
                .stop_handle(stop)
                .run(),
        )
        .unwrap();
    assert!(!report.failed, "{}", report.reason);
    assert!(report.steps.len() <= 1, "{} steps", report.steps.len());
    assert!(report.reason.contains("never mind"), "{}", report.reason);
}

#[test]
fn on_step_responses_gets_every_response_with_its_token_credit() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 2, &["algo.algo=\"rlsd\"", FAST_LR]);
    let seen: Arc<Mutex<Vec<StepResponses>>> = Arc::default();
    let sink = seen.clone();
    let report = rt()
        .block_on(
            Runtime::builder(cfg)
                .verifier(ByteSumMod3)
                .on_step_responses(move |s, responses| {
                    sink.lock().unwrap().push((s.step, responses.to_vec()));
                })
                .run(),
        )
        .unwrap();
    assert!(!report.failed, "{}", report.reason);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2]);
    for (step, responses) in seen.iter() {
        // 2 prompts x 4 responses, prompt-major.
        assert_eq!(responses.len(), 8, "step {step}");
        let groups: Vec<usize> = responses.iter().map(|r| r.group).collect();
        assert_eq!(groups, [0, 0, 0, 0, 1, 1, 1, 1]);
        for r in responses {
            assert!(r.prompt.starts_with("What is"), "{}", r.prompt);
            assert_eq!(r.ahat.len(), r.response_ids.len());
            assert_eq!(r.tokens.len(), r.response_ids.len());
            assert_eq!(r.delta.as_ref().map(Vec::len), Some(r.response_ids.len()));
            // The reward is the verifier's for this very text.
            let v = ByteSumMod3.verify(&Example::new("", "", "", ""), &r.response);
            assert_eq!(r.reward, v.reward, "{:?}", r.response);
            // RLSD keeps the sign of the advantage on every token.
            for &a in &r.ahat {
                assert!(a == 0.0 || a.signum() == r.advantage.signum());
            }
        }
        // The group advantages are GRPO's over the rewards of each group.
        for g in responses.chunks(4) {
            let sum: f32 = g.iter().map(|r| r.advantage).sum();
            assert!(sum.abs() < 1e-4, "advantages of a group sum to 0: {sum}");
        }
    }
    // The records went to the callback only, not into the report.
    assert!(report.steps.iter().all(|s| s.responses.is_empty()));
}

/// Records the `tests` column of every example it scores, and pays when the
/// response is non-empty.
#[derive(Debug, Default)]
struct SeesTests(Mutex<Vec<(String, serde_json::Value)>>);

impl Verifier for SeesTests {
    fn verify(&self, example: &Example, response: &str) -> Verdict {
        let tests = example.extra("tests").cloned().unwrap_or_default();
        self.0.lock().unwrap().push((example.id.clone(), tests));
        Verdict {
            reward: (response.len() % 2) as f32,
            correct: false,
            reason: "parity".into(),
        }
    }
}

/// Delegates to the shared recorder (the builder takes the verifier by value).
#[derive(Debug)]
struct Shared(Arc<SeesTests>);

impl Verifier for Shared {
    fn verify(&self, example: &Example, response: &str) -> Verdict {
        self.0.verify(example, response)
    }
}

#[test]
fn a_datasets_extra_column_reaches_the_reward() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("code.jsonl");
    std::fs::write(
        &data,
        concat!(
            "{\"id\": \"a\", \"prompt\": \"What is 1+2?\", \"answer\": \"3\", \"tests\": [\"f(1)==2\", \"f(2)==3\"]}\n",
            "{\"id\": \"b\", \"prompt\": \"What is 2+2?\", \"answer\": \"4\", \"tests\": {\"cases\": 2, \"strict\": true}}\n",
        ),
    )
    .unwrap();
    let out = tmp.path().join("run");
    let data_path = format!("data.path=\"{}\"", data.display());
    let cfg = config(&out, 1, &[&data_path, "data.shuffle=false"]);
    let verifier = Arc::new(SeesTests::default());
    let report = rt()
        .block_on(
            Runtime::builder(cfg)
                .verifier(Shared(verifier.clone()))
                .run(),
        )
        .unwrap();
    assert!(!report.failed, "{}", report.reason);
    let seen = verifier.0.lock().unwrap();
    assert_eq!(seen.len(), 8, "every response of the step was scored");
    for (id, tests) in seen.iter() {
        let want = match id.as_str() {
            "a" => serde_json::json!(["f(1)==2", "f(2)==3"]),
            "b" => serde_json::json!({"cases": 2, "strict": true}),
            other => panic!("unexpected example {other}"),
        };
        assert_eq!(tests, &want, "example {id}");
    }
}

/// The final weights saved as a Hugging Face folder load back exactly.
async fn train_and_save(tmp: &Path) {
    let cfg = config(&tmp.join("run"), 2, &[FAST_LR]);
    let report = Runtime::builder(cfg)
        .verifier(ByteSumMod3)
        .run()
        .await
        .unwrap();
    assert!(!report.failed, "{}", report.reason);
    let dir = tmp.join("final");
    report.save_pretrained(&dir).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(dir.join(f).is_file(), "{f} written");
    }
    let back = LoadedModel::load(&dir, tch::Device::Cpu, tch::Kind::Float).unwrap();
    assert!(back.tokenizer.is_some());
    let snap = back.snapshot(0).unwrap();
    assert_eq!(snap.tensors.len(), report.final_weights.tensors.len());
    let mut moved = false;
    let start = LoadedModel::load(
        &rlsd::config::builtin_model_dir(),
        tch::Device::Cpu,
        tch::Kind::Float,
    )
    .unwrap()
    .snapshot(0)
    .unwrap();
    for (((n, a), (m, b)), (_, s)) in snap
        .tensors
        .iter()
        .zip(&report.final_weights.tensors)
        .zip(&start.tensors)
    {
        assert_eq!(n, m);
        assert!(a.equal(b), "{n} differs from the final weights");
        moved |= !a.equal(s);
    }
    assert!(moved, "two steps at lr 1e-3 changed the weights");
}

#[tokio::test]
async fn runs_inside_a_current_thread_tokio_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    train_and_save(tmp.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_inside_a_multi_thread_tokio_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    train_and_save(tmp.path()).await;
}

/// `configs/agent.toml` trains through the episode path with the built-in
/// calculator: every record is an episode scored by the environment, and
/// the step logs the tool-call rate.
#[test]
fn the_agent_config_trains_calculator_episodes() {
    let tmp = tempfile::tempdir().unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/agent.toml");
    let mut set = tiny_run(tmp.path(), 1, 48);
    set.push("rollout.group_size=2".into());
    let cfg = RunConfig::load(Some(path.as_path()), &set).unwrap();
    assert_eq!(cfg.env.kind, rlsd::config::EnvKind::BuiltinCalculator);
    let seen: Arc<Mutex<Vec<ResponseRecord>>> = Arc::default();
    let sink = seen.clone();
    let report = rt()
        .block_on(
            Runtime::builder(cfg)
                .on_step_responses(move |_, r| sink.lock().unwrap().extend_from_slice(r))
                .run(),
        )
        .unwrap();
    assert!(!report.failed, "{}", report.reason);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4);
    for r in seen.iter() {
        // The environment's verdicts: a final answer judged, or the limits.
        assert!(
            ["answer", "no final answer", "turn limit", "more than"]
                .iter()
                .any(|w| r.reason.contains(w)),
            "{}",
            r.reason
        );
    }
}
