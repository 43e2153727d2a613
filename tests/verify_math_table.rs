//! The math verifier against the committed table of (gold, prediction,
//! human verdict) rows: at least 97% agreement, and every miss printed.
//! `cargo test --test verify_math_table -- --nocapture` shows the misses;
//! docs/VERIFIERS.md lists them with their reasons.

use rlsd::verify::{Extraction, MathConfig, MathVerifier};
use serde::Deserialize;

#[derive(Deserialize)]
struct Row {
    id: String,
    gold: String,
    prediction: String,
    correct: bool,
}

fn rows() -> Vec<Row> {
    // RLSD_MATH_TABLE scores another table of the same format instead.
    let path = std::env::var("RLSD_MATH_TABLE").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/verify/math_table.jsonl"
        )
        .to_string()
    });
    let text = std::fs::read_to_string(path).expect("read math_table.jsonl");
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("math_table.jsonl:{}: {e}", i + 1))
        })
        .collect()
}

#[test]
fn math_verifier_agrees_with_the_human_verdicts() {
    // The table's predictions are free-form: it measures answer equivalence
    // under the lenient extraction (strict extraction is tested elsewhere).
    let v = MathVerifier::new(MathConfig {
        extraction: Extraction::Lenient,
        ..MathConfig::default()
    })
    .unwrap();
    let rows = rows();
    if std::env::var("RLSD_MATH_TABLE").is_err() {
        assert!(rows.len() >= 300, "table has only {} rows", rows.len());
        let right = rows.iter().filter(|r| r.correct).count();
        assert!(
            right > 100 && rows.len() - right > 100,
            "table must hold both verdicts"
        );
    }
    let mut misses = Vec::new();
    for r in &rows {
        let verdict = v.judge(&r.gold, &r.prediction);
        if verdict.correct != r.correct {
            misses.push(format!(
                "{}: gold {:?} pred {:?}: expected {}, got {} ({})",
                r.id, r.gold, r.prediction, r.correct, verdict.correct, verdict.reason
            ));
        }
    }
    let acc = 1.0 - misses.len() as f64 / rows.len() as f64;
    println!(
        "math verifier: {}/{} = {:.2}%",
        rows.len() - misses.len(),
        rows.len(),
        acc * 100.0
    );
    for m in &misses {
        println!("MISS {m}");
    }
    assert!(
        acc >= 0.97,
        "accuracy {acc:.4} below 0.97; misses:\n{}",
        misses.join("\n")
    );
}
