//! The `math` verifier: find the final answer in a response and decide
//! whether it equals the gold answer as a grader would.
//!
//! - [`extract`]: where the answer is (`\boxed`, `####`, "the answer is",
//!   a bare answer, the last number or number words), and multiple-choice letters.
//! - [`latex`]: clean-up of Unicode symbols, delimiters and LaTeX formatting.
//! - [`value`]: scalars, tuples, intervals, sets and text, and their equality.
//! - [`relation`]: equations and inequalities as answers.
//! - [`expr`]: the scalar expression parser and numeric evaluator.
//! - [`words`]: English number words.

mod expr;
mod extract;
mod latex;
mod relation;
mod value;
mod words;

use serde::{Deserialize, Serialize};

use super::{Verdict, Verifier};
use crate::data::Example;
use crate::{Error, Result};

pub use extract::extract_final_answer;

/// Settings of the `math` verifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MathConfig {
    /// Relative tolerance of numeric equality (floating-point noise, not
    /// rounding: `3.14159` is not `\pi`).
    pub rel_tol: f64,
    /// Treat a gold answer that is a single letter `A`..`J` (optionally in
    /// parentheses) as a multiple-choice letter.
    pub choice_letters: bool,
}

impl Default for MathConfig {
    fn default() -> Self {
        MathConfig {
            rel_tol: 1e-9,
            choice_letters: true,
        }
    }
}

/// Final-answer verifier for math problems.
#[derive(Debug, Clone)]
pub struct MathVerifier {
    cfg: MathConfig,
}

impl MathVerifier {
    /// A verifier with the given settings.
    pub fn new(cfg: MathConfig) -> Result<Self> {
        if !(cfg.rel_tol.is_finite() && cfg.rel_tol >= 0.0 && cfg.rel_tol < 1.0) {
            return Err(Error::config(
                "verifier.math.rel_tol",
                format!("must be in [0, 1), got {}", cfg.rel_tol),
            ));
        }
        Ok(MathVerifier { cfg })
    }

    /// Whether `pred` (an already extracted answer) equals `gold`.
    pub fn answers_equal(&self, gold: &str, pred: &str) -> bool {
        let gold = gold_answer(gold);
        value::values_equal(
            &value::parse_value(&gold),
            &value::parse_value(pred),
            self.cfg.rel_tol,
        )
    }

    /// Judge a whole response against a gold answer string.
    pub fn judge(&self, gold: &str, response: &str) -> Verdict {
        if self.cfg.choice_letters {
            if let Some(letter) = extract::parse_choice(gold) {
                return match extract::extract_choice(response) {
                    Some(c) if c == letter => Verdict::correct(format!("chose ({c})")),
                    Some(c) => Verdict::wrong(format!("chose ({c}), gold ({letter})")),
                    None => Verdict::wrong("no option letter found"),
                };
            }
        }
        let Some((answer, how)) = extract::extract(response) else {
            return Verdict::wrong("no final answer found");
        };
        let shown = shorten(&answer);
        if self.answers_equal(gold, &answer) {
            return Verdict::correct(format!("{how}: `{shown}` equals gold"));
        }
        let gold_value = value::parse_value(&gold_answer(gold));
        match &gold_value {
            // Several solutions with none marked: read the last list `1 and 4`.
            value::Value::Set(items) if items.len() > 1 && how == "last number" => {
                if let Some(list) = extract::last_number_list(response) {
                    if self.answers_equal(gold, &list) {
                        return Verdict::correct(format!(
                            "last list: `{}` equals gold",
                            shorten(&list)
                        ));
                    }
                }
            }
            // A word answer stated in a sentence: "The meeting is on Monday."
            value::Value::Text(word) if !word.is_empty() && how == "short response" => {
                let said = latex::normalize_words(&answer);
                if said.iter().any(|w| w == word) {
                    return Verdict::correct(format!("{how}: says `{word}`"));
                }
            }
            _ => {}
        }
        Verdict::wrong(format!("{how}: `{shown}` != gold `{}`", shorten(gold)))
    }
}

/// The gold answer itself may be a worked solution (`... #### 72`) or boxed.
fn gold_answer(gold: &str) -> String {
    if let Some(b) = extract::last_boxed(gold) {
        return b;
    }
    if let Some(i) = gold.rfind("####") {
        return gold[i + 4..].trim().to_string();
    }
    gold.to_string()
}

fn shorten(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}...")
    }
}

impl Verifier for MathVerifier {
    fn verify(&self, example: &Example, response: &str) -> Verdict {
        self.judge(&example.answer, response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_common_formats() {
        let v = MathVerifier::new(MathConfig::default()).unwrap();
        assert!(
            v.judge("72", "So she sold 48 + 24 = 72 clips.\n#### 72")
                .correct
        );
        assert!(v.judge("0.5", r"The answer is $\dfrac12$.").correct);
        assert!(v.judge("-3", "\\boxed{\u{2212}3}").correct);
        assert!(!v.judge("3", r"\boxed{-3}").correct);
        assert!(v.judge("C", "The answer is (C).").correct);
        assert!(!v.judge("C", "The answer is (B).").correct);
        assert!(v.judge("#### 10000", r"$10\,000$").correct);
        assert!(!v.judge("5", "I don't know.").correct);
    }

    #[test]
    fn rejects_bad_tolerance() {
        let cfg = MathConfig {
            rel_tol: f64::NAN,
            ..MathConfig::default()
        };
        assert!(MathVerifier::new(cfg).is_err());
    }
}
