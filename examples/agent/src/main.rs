//! An agent program on rlsd: its own multi-turn environment in Rust, trained
//! with RLSD for two steps inside the program's own tokio runtime, every
//! episode's turns and credit seen from the step callback, a stop handle
//! at hand, and the final weights written as a Hugging Face folder. Built and
//! run by CI, without `LD_LIBRARY_PATH`:
//!
//! ```sh
//! cargo run --manifest-path examples/agent/Cargo.toml
//! ```
//!
//! The environment is "higher or lower": the model answers the built-in
//! arithmetic problem; a wrong answer gets a hint (`Higher.` / `Lower.`) as a
//! new user turn and one more try. A right first answer scores 1, a right
//! second answer 0.5. The hint tokens are context, not trained: only the
//! model's own tokens get loss and credit.

use anyhow::{ensure, Result};
use rlsd::actors::{Runtime, StopHandle};
use rlsd::config::RunConfig;
use rlsd::data::Example;
use rlsd::env::{BoxFuture, Environment, Message, Opening, Outcome, Reply, Session, Started};
use rlsd::verify::Verdict;
use std::sync::{Arc, Mutex};

/// The environment: shareable, stateless; each episode's state is its session.
#[derive(Debug)]
struct HigherLower;

/// One episode: the gold answer and the tries so far.
struct Game {
    answer: i64,
    tries: u32,
}

/// The number after the last `Answer:` in a turn.
fn final_answer(turn: &str) -> Option<i64> {
    let rest = &turn[turn.rfind("Answer:")? + "Answer:".len()..];
    let rest = rest.trim_start();
    let end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].parse().ok()
}

impl Environment for HigherLower {
    fn start<'a>(&'a self, example: &'a Example) -> BoxFuture<'a, rlsd::Result<Started>> {
        Box::pin(async move {
            let answer = example.answer.trim().parse().map_err(|_| {
                rlsd::Error::InvalidInput(format!("answer {:?} is not an integer", example.answer))
            })?;
            Ok(Started {
                opening: Opening {
                    messages: vec![Message::new("user", example.prompt.clone())],
                    tools: Vec::new(),
                    privileged: example.privileged.clone(),
                },
                session: Box::new(Game { answer, tries: 0 }),
            })
        })
    }
}

impl Session for Game {
    fn step<'a>(&'a mut self, model_turn: &'a str) -> BoxFuture<'a, rlsd::Result<Reply>> {
        Box::pin(async move {
            self.tries += 1;
            let said = final_answer(model_turn);
            let reward = match (said, self.tries) {
                (Some(n), 1) if n == self.answer => 1.0,
                (Some(n), _) if n == self.answer => 0.5,
                (Some(n), 1) => {
                    let hint = if n < self.answer { "Higher." } else { "Lower." };
                    return Ok(Reply::Continue(vec![Message::new("user", hint)]));
                }
                _ => 0.0,
            };
            Ok(Reply::Done(Outcome::new(Verdict {
                reward,
                correct: reward > 0.0,
                reason: format!("{said:?} in {} tries", self.tries),
            })))
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let out = std::env::temp_dir().join(format!("rlsd-agent-{}", std::process::id()));
    let cfg = RunConfig::from_toml_str(&format!(
        r#"
        [algo]
        algo = "rlsd"
        [rollout]
        batch_prompts = 2
        group_size = 4
        max_new_tokens = 48
        [env]
        max_turns = 2
        turn_timeout_s = 10
        [runtime]
        steps = 2
        sampler_device = "cpu"
        teacher_device = "cpu"
        optimizer_device = "cpu"
        out_dir = "{}"
        "#,
        out.display()
    ))?;
    // Episodes with more than one model turn, seen per step.
    let multi_turn = Arc::new(Mutex::new(0usize));
    let seen = multi_turn.clone();
    let stop = StopHandle::new(); // `stop.stop("why")` from anywhere ends the run cleanly
    let report = Runtime::builder(cfg)
        .environment(HigherLower)
        .stop_handle(stop.clone())
        .on_step_responses(move |s, responses| {
            // An episode's record holds the whole trajectory after the
            // prompt; `trained` is 0 on the environment's tokens (the hint).
            let hinted = responses
                .iter()
                .filter(|r| r.trained.as_ref().is_some_and(|m| m.contains(&0.0)))
                .count();
            *seen.lock().unwrap() += hinted;
            println!(
                "step {} reward {:.3} accuracy {:.2} responses {} with a hint {}",
                s.step,
                s.reward_mean,
                s.accuracy,
                responses.len(),
                hinted
            );
        })
        .run()
        .await?;
    ensure!(!report.failed, "run failed: {}", report.reason);
    ensure!(report.steps.len() == 2, "expected 2 steps");
    let dir = out.join("final-hf");
    report.save_pretrained(&dir)?;
    ensure!(dir.join("model.safetensors").is_file(), "weights written");
    println!(
        "agent run: {} steps, {} hinted episodes, final weights in {}",
        report.steps.len(),
        multi_turn.lock().unwrap(),
        dir.display()
    );
    std::fs::remove_dir_all(&out).ok();
    Ok(())
}
