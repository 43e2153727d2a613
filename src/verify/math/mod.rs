//! The `math` verifier: find the final answer in a response and decide
//! whether it equals the gold answer as a grader would.
//!
//! - [`extract`]: where the answer is (`\boxed`, `####`, "the answer is",
//!   a bare answer, the last number or number words).
//! - [`choice`]: multiple-choice letters, and the options a prompt lists.
//! - [`latex`]: clean-up of Unicode symbols, delimiters and LaTeX formatting.
//! - [`value`]: scalars, tuples, intervals, sets and text, and their equality.
//! - [`relation`]: equations and inequalities as answers.
//! - [`expr`]: the scalar expression parser and numeric evaluator.
//! - [`words`]: English number words.

mod choice;
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

/// The answer strict extraction reads (`<answer>` content, else the last `\\boxed{}`).
pub fn extract_strict_answer(response: &str) -> Option<String> {
    extract::extract_strict(response, false).map(|(a, _)| a)
}

/// Where the `math` verifier looks for the final answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Extraction {
    /// The reference's: the `<answer>` content, or a `\boxed{}`; else no
    /// answer (reward 0).
    #[default]
    Strict,
    /// `strict`, plus a `####` line or an "answer is" / "Answer:" phrase (the
    /// built-in task ends its solutions with `Answer: n`).
    Phrase,
    /// Every heuristic, down to the last number of the text (a bare number
    /// earns the reward): this runtime's earlier default.
    Lenient,
}

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
    /// Where the final answer is looked for.
    pub extraction: Extraction,
}

impl Default for MathConfig {
    fn default() -> Self {
        MathConfig {
            rel_tol: 1e-9,
            choice_letters: true,
            extraction: Extraction::Strict,
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
        self.judge_with_prompt(gold, "", response)
    }

    /// Judge a response, reading multiple-choice options from the prompt:
    /// an answer given as an option's content counts as that option's letter.
    ///
    /// With `strict` / `phrase` extraction only the extracted answer is
    /// judged (as a response of its own); a response without one scores 0.
    pub fn judge_with_prompt(&self, gold: &str, prompt: &str, response: &str) -> Verdict {
        let phrases = match self.cfg.extraction {
            Extraction::Lenient => return self.judge_lenient(gold, prompt, response),
            Extraction::Strict => false,
            Extraction::Phrase => true,
        };
        match extract::extract_strict(response, phrases) {
            None => Verdict::wrong(if phrases {
                "no <answer>, \\boxed, #### or answer phrase"
            } else {
                "no <answer> or \\boxed answer (strict extraction)"
            }),
            Some((answer, how)) => {
                let mut v = self.judge_lenient(gold, prompt, &answer);
                v.reason = format!("{how}: {}", v.reason);
                v
            }
        }
    }

    /// Judge a whole response with every extraction heuristic.
    fn judge_lenient(&self, gold: &str, prompt: &str, response: &str) -> Verdict {
        if self.cfg.choice_letters {
            if let Some(letter) = choice::parse_choice(gold) {
                return self.judge_choice(letter, prompt, response);
            }
        }
        let Some((mut answer, how)) = extract::extract(response) else {
            return Verdict::wrong("no final answer found");
        };
        // A bare letter answering a gold that is an option's content.
        if let Some(letter) = choice::parse_choice(&answer) {
            let options = choice::prompt_options(prompt);
            if let Some((_, text)) = options.iter().find(|(l, _)| *l == letter) {
                answer = text.clone();
            }
        }
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
                // "Monday or Tuesday", "not Monday": no credit for hedging.
                let hedged = said.iter().any(|w| {
                    w != word && matches!(w.as_str(), "or" | "not" | "isn" | "no" | "never")
                });
                let leads = said.first() == Some(word) && !said.iter().any(|w| w == "or");
                if leads || (said.iter().any(|w| w == word) && !hedged) {
                    return Verdict::correct(format!("{how}: says `{word}`"));
                }
            }
            _ => {}
        }
        Verdict::wrong(format!("{how}: `{shown}` != gold `{}`", shorten(gold)))
    }
}

impl MathVerifier {
    fn judge_choice(&self, letter: char, prompt: &str, response: &str) -> Verdict {
        if let Some(c) = choice::extract_choice(response) {
            return if c == letter {
                Verdict::correct(format!("chose ({c})"))
            } else {
                Verdict::wrong(format!("chose ({c}), gold ({letter})"))
            };
        }
        // No letter: maybe the response gave an option's content instead.
        let options = choice::prompt_options(prompt);
        if let Some((answer, _)) = extract::extract(response) {
            let hits: Vec<char> = options
                .iter()
                .filter(|(_, text)| !text.is_empty() && self.answers_equal(text, &answer))
                .map(|(l, _)| *l)
                .collect();
            if let [only] = hits.as_slice() {
                return if *only == letter {
                    Verdict::correct(format!("answered option ({only})'s content"))
                } else {
                    Verdict::wrong(format!(
                        "answered option ({only})'s content, gold ({letter})"
                    ))
                };
            }
        }
        Verdict::wrong("no option letter found")
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
        self.judge_with_prompt(&example.answer, &example.prompt, response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lenient() -> MathVerifier {
        MathVerifier::new(MathConfig {
            extraction: Extraction::Lenient,
            ..MathConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn strict_judges_only_the_extracted_answer() {
        let v = MathVerifier::new(MathConfig::default()).unwrap();
        assert!(
            v.judge("7", "<thought>3+4</thought><answer>7</answer>")
                .correct
        );
        assert!(v.judge("7", r"so \boxed{7}").correct);
        assert!(!v.judge("7", "3+4 = 7").correct);
        assert!(!v.judge("7", "Answer: 7").correct);
        assert!(v.judge("C", "<answer>(C) 12</answer>").correct);
        let phrase = MathVerifier::new(MathConfig {
            extraction: Extraction::Phrase,
            ..MathConfig::default()
        })
        .unwrap();
        assert!(phrase.judge("7", "3+4=7\nAnswer: 7").correct);
        assert!(!phrase.judge("7", "3+4=7").correct);
        assert!(lenient().judge("7", "3+4 = 7").correct);
    }

    #[test]
    fn judges_common_formats() {
        let v = lenient();
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
        assert!(v.judge("Monday", "It is on Monday.").correct);
        assert!(!v.judge("Monday", "Monday or Tuesday.").correct);
        assert!(!v.judge("Monday", "It is not Monday.").correct);
        assert!(v.judge("no", "No, it is not.").correct);
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
