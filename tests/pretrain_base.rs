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
    let mut report = pretrain(&cfg).unwrap();
    // Record the folder relative to the repository, not this machine's path.
    if let Ok(rel) = report.out_dir.strip_prefix(env!("CARGO_MANIFEST_DIR")) {
        report.out_dir = rel.to_path_buf();
    }
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

/// The committed base model's teacher is informative: on held-out problems,
/// shown the reference answer (the RL run's teacher template), it puts more
/// mass on the correct answer's tokens than the student prompt does.
#[test]
fn committed_base_model_teacher_is_informative() {
    use rlsd::data::prompt::TeacherPrompt;
    use rlsd::data::task::ArithmeticTask;
    use rlsd::pretrain::{answer_token_logprob, held_out_problems, load_base_model};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/tiny-arith");
    let model = load_base_model(&dir).unwrap();
    let cfg = PretrainConfig::default();
    let task = ArithmeticTask::new(cfg.task.clone()).unwrap();
    let problems = held_out_problems(&task, 128, cfg.seed);
    let teacher = TeacherPrompt::new(cfg.teacher_template.clone()).unwrap();
    let student_lp = answer_token_logprob(&model, &problems, None).unwrap();
    let teacher_lp = answer_token_logprob(&model, &problems, Some(&teacher)).unwrap();
    eprintln!("answer tokens, mean log-prob: teacher {teacher_lp:.4}, student {student_lp:.4}");
    assert!(
        student_lp.is_finite() && teacher_lp.is_finite(),
        "log-probs {student_lp} {teacher_lp}"
    );
    assert!(
        teacher_lp > student_lp + 0.1,
        "teacher {teacher_lp} does not beat student {student_lp} on the answer tokens"
    );
}
