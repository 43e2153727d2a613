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
