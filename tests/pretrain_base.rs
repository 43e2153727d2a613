//! Makes the committed base model `assets/tiny-arith/` (ignored by default:
//! it trains for a few minutes). Run it by hand with
//!
//! ```text
//! cargo test --test pretrain_base -- --ignored --nocapture
//! ```
//!
//! `RLSD_PRETRAIN_CONFIG` may name a TOML file of `PretrainConfig` overrides
//! and `RLSD_PRETRAIN_OUT` another output folder. The report is printed as
//! JSON and written next to the model as `pretrain_report.json`.

use rlsd::pretrain::{pretrain, PretrainConfig};
use std::path::PathBuf;

#[test]
#[ignore = "trains the base model for minutes; run by hand"]
fn make_base_model() {
    rlsd::logging::init();
    let mut cfg = match std::env::var("RLSD_PRETRAIN_CONFIG") {
        Ok(path) => toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap(),
        Err(_) => PretrainConfig::default(),
    };
    cfg.out_dir = match std::env::var("RLSD_PRETRAIN_OUT") {
        Ok(out) => PathBuf::from(out),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/tiny-arith"),
    };
    let report = pretrain(&cfg).unwrap();
    let json = serde_json::to_string_pretty(&report).unwrap();
    println!("{json}");
    std::fs::write(cfg.out_dir.join("pretrain_report.json"), json + "\n").unwrap();
}

/// The committed base model loads, carries the character tokenizer, and is
/// weak but not useless on its own held-out problems (greedy decoding).
#[test]
fn committed_base_model_is_weak_but_not_zero() {
    use rlsd::data::task::ArithmeticTask;
    use rlsd::pretrain::{held_out_problems, heldout_accuracy, load_base_model};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/tiny-arith");
    let model = load_base_model(&dir).unwrap();
    let cfg = PretrainConfig::default();
    let task = ArithmeticTask::new(cfg.task.clone()).unwrap();
    let problems = held_out_problems(&task, 64, cfg.seed);
    let accuracy = heldout_accuracy(&model, &problems, cfg.eval_max_new_tokens, None).unwrap();
    assert!(
        (0.05..=0.7).contains(&accuracy),
        "greedy held-out accuracy {accuracy} is outside the base model's range"
    );
}
