//! The settings the runtime tests start from (`#[path = "common/tiny_run.rs"]
//! mod tiny_run;`): the built-in model and task on the CPU, two prompts of four
//! responses per step. Each test adds what it is about.
#![allow(dead_code)] // each test file uses a part

use std::path::Path;

/// `runtime.steps`, the three actors' devices, `runtime.out_dir` and a
/// 2 x 4 batch of responses of at most `max_new_tokens` tokens.
pub fn tiny_run(out: &Path, steps: u64, max_new_tokens: usize) -> Vec<String> {
    vec![
        format!("runtime.steps={steps}"),
        "runtime.sampler_device=\"cpu\"".into(),
        "runtime.teacher_device=\"cpu\"".into(),
        "runtime.optimizer_device=\"cpu\"".into(),
        format!("runtime.out_dir=\"{}\"", out.display()),
        "rollout.batch_prompts=2".into(),
        "rollout.group_size=4".into(),
        format!("rollout.max_new_tokens={max_new_tokens}"),
    ]
}

/// A learning rate that visibly moves the tiny model within a few steps.
pub const FAST_LR: &str = "optim.lr=1e-3";

/// Rewards that vary within a group on a barely trained model: the final
/// answer is even.
pub const EVEN_ANSWER: [&str; 2] = [
    "verifier.kind=\"regex\"",
    "verifier.regex.pattern='Answer: -?[0-9]*[02468]\\b'",
];

/// `base` followed by `more` (later keys win).
pub fn with(mut base: Vec<String>, more: &[&str]) -> Vec<String> {
    base.extend(more.iter().map(|s| s.to_string()));
    base
}

/// Rewards from the byte sum mod 3: spread over every group whatever the tiny
/// model writes, so each step has advantages, correct responses and a gradient.
#[derive(Debug)]
pub struct ByteSumMod3;

impl rlsd::verify::Verifier for ByteSumMod3 {
    fn verify(&self, _example: &rlsd::data::Example, response: &str) -> rlsd::verify::Verdict {
        let r = (response.bytes().map(u64::from).sum::<u64>() % 3) as f32 / 2.0;
        rlsd::verify::Verdict {
            reward: r,
            correct: r == 1.0,
            reason: "byte sum mod 3".into(),
        }
    }
}

/// The multi-threaded tokio runtime the runtime tests run the actor tree on.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
