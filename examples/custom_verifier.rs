//! Embedding the runtime: your own prompt source and your own verifier.
//!
//! The prompts ask for the sum of two numbers in the built-in task's format;
//! the verifier reads the number after "Answer:" and pays 1.0 for the right
//! sum, 0.1 for any well-formed answer, 0 otherwise. Run with
//!
//! ```sh
//! cargo run --example custom_verifier
//! ```

use anyhow::Result;
use rlsd::actors::{PromptSource, Runtime};
use rlsd::config::RunConfig;
use rlsd::data::Example;
use rlsd::verify::{Verdict, Verifier};

/// Sums `a + b` with a counter for a cursor.
#[derive(Debug, Default)]
struct Sums {
    next: u64,
}

impl Sums {
    fn example(i: u64) -> Example {
        let (a, b) = ((i * 7) % 20, (i * 13 + 5) % 20);
        let sum = (a + b).to_string();
        Example::new(
            format!("sum-{i}"),
            format!("What is {a}+{b}?"),
            sum.clone(),
            sum,
        )
    }
}

impl PromptSource for Sums {
    fn next_batch(&mut self, n: usize) -> rlsd::Result<Vec<Example>> {
        let out = (self.next..self.next + n as u64)
            .map(Sums::example)
            .collect();
        self.next += n as u64;
        Ok(out)
    }

    fn cursor(&self) -> serde_json::Value {
        serde_json::json!({ "next": self.next })
    }

    fn restore(&mut self, cursor: &serde_json::Value) -> rlsd::Result<()> {
        self.next = cursor["next"]
            .as_u64()
            .ok_or_else(|| rlsd::Error::InvalidInput("cursor lacks `next`".into()))?;
        Ok(())
    }
}

/// Reads "Answer: N" and compares it with the gold sum.
#[derive(Debug)]
struct SumVerifier;

impl Verifier for SumVerifier {
    fn verify(&self, example: &Example, response: &str) -> Verdict {
        let answer = response
            .rsplit("Answer:")
            .next()
            .filter(|_| response.contains("Answer:"))
            .map(|s| s.trim().to_string());
        match answer {
            Some(a) if a == example.answer => Verdict {
                reward: 1.0,
                correct: true,
                reason: "right sum".into(),
            },
            Some(a) if a.parse::<i64>().is_ok() => Verdict {
                reward: 0.1,
                correct: false,
                reason: format!("wrong sum {a}"),
            },
            _ => Verdict {
                reward: 0.0,
                correct: false,
                reason: "no Answer: line".into(),
            },
        }
    }
}

fn main() -> Result<()> {
    rlsd::logging::init();
    let cfg = RunConfig::load(
        None,
        &[
            "runtime.steps=5".into(),
            "runtime.out_dir=\"runs/custom-verifier\"".into(),
        ],
    )?;
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(
        Runtime::builder(cfg)
            .prompts(Sums::default())
            .verifier(SumVerifier)
            // A demo: start over each time instead of refusing the used folder.
            .overwrite(true)
            .on_step(|s| {
                println!(
                    "step {:>2}  reward {:.3}  accuracy {:.3}  lambda {:.3}",
                    s.step, s.reward_mean, s.accuracy, s.lambda
                )
            })
            .run(),
    )?;
    println!("finished: {} ({} steps)", report.reason, report.steps.len());
    Ok(())
}
