//! A program of your own on rlsd: build a run in code, train two steps of
//! GRPO on the built-in task with your own reward, and use `rlsd::tch`
//! directly. Built and run by CI, without `LD_LIBRARY_PATH`:
//!
//! ```sh
//! cargo run --manifest-path examples/embed/Cargo.toml
//! ```

use anyhow::{ensure, Result};
use rlsd::actors::Runtime;
use rlsd::config::RunConfig;
use rlsd::data::Example;
use rlsd::tch::{Kind, Tensor};
use rlsd::verify::{Verdict, Verifier};

/// Pays for short answers that are all digits.
#[derive(Debug)]
struct DigitsOnly;

impl Verifier for DigitsOnly {
    fn verify(&self, example: &Example, response: &str) -> Verdict {
        let answer = response.trim();
        let digits = !answer.is_empty() && answer.chars().all(|c| c.is_ascii_digit());
        Verdict {
            reward: if digits { 1.0 } else { 0.0 },
            correct: answer == example.answer,
            reason: if digits { "digits" } else { "not digits" }.into(),
        }
    }
}

fn main() -> Result<()> {
    // The tensor library rlsd is built on, without a `tch` dependency of our own.
    let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    let sum = (&x * &x).sum(Kind::Float).double_value(&[]);
    ensure!(sum == 14.0, "tch self-check gave {sum}");

    let out = std::env::temp_dir().join(format!("rlsd-embed-{}", std::process::id()));
    let cfg = RunConfig::from_toml_str(&format!(
        r#"
        [algo]
        algo = "grpo"
        [rollout]
        batch_prompts = 2
        group_size = 4
        max_new_tokens = 8
        [runtime]
        steps = 2
        sampler_device = "cpu"
        teacher_device = "cpu"
        optimizer_device = "cpu"
        out_dir = "{}"
        "#,
        out.display()
    ))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(
        Runtime::builder(cfg)
            .verifier(DigitsOnly)
            .on_step(|s| println!("step {} reward {:.3}", s.step, s.reward_mean))
            .run(),
    )?;
    ensure!(!report.failed, "run failed: {}", report.reason);
    ensure!(report.steps.len() == 2, "expected 2 steps");
    std::fs::remove_dir_all(&out).ok();
    println!("embedded run: {} steps, tch {sum}", report.steps.len());
    Ok(())
}
