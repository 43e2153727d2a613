//! The math verifier on a fresh held-out table (tests/fixtures/verify/
//! math_holdout_2026.jsonl: constants and functions, tuples vs sets vs
//! intervals, option letters inside sentences, units, retracted answers),
//! judged by hand before the verifier ever ran on it. It is a measurement,
//! not a target: do not change the verifier to fit these rows (docs/VERIFIERS.md).
//! `cargo test --test verify_math_holdout -- --nocapture` prints the figures.

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
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/verify/math_holdout_2026.jsonl"
    );
    std::fs::read_to_string(path)
        .expect("read math_holdout_2026.jsonl")
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}", i + 1)))
        .collect()
}

fn accuracy(extraction: Extraction, rows: &[Row]) -> f64 {
    let v = MathVerifier::new(MathConfig {
        extraction,
        ..MathConfig::default()
    })
    .unwrap();
    let mut right = 0;
    for r in rows {
        let got = v.judge(&r.gold, &r.prediction);
        if got.correct == r.correct {
            right += 1;
        } else {
            println!(
                "MISS [{extraction:?}] {}: gold {:?} pred {:?}: expected {}, got {} ({})",
                r.id, r.gold, r.prediction, r.correct, got.correct, got.reason
            );
        }
    }
    right as f64 / rows.len() as f64
}

#[test]
fn holdout_accuracy_is_reported() {
    let rows = rows();
    assert!(rows.len() >= 80, "{} rows", rows.len());
    let lenient = accuracy(Extraction::Lenient, &rows);
    let strict = accuracy(Extraction::Strict, &rows);
    println!(
        "held-out math verifier: lenient {:.1}%, strict {:.1}% of {} rows",
        100.0 * lenient,
        100.0 * strict,
        rows.len()
    );
    // A floor well below the measured figures (docs/VERIFIERS.md), so that a
    // regression fails without the table ever being a tuning target.
    assert!(lenient >= FLOOR && strict >= FLOOR, "{lenient} {strict}");
}

const FLOOR: f64 = 0.70;
