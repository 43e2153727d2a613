//! An optional format reward combined with the accuracy reward:
//! `reward = accuracy_weight * R_acc + weight * R_format`, where `R_format`
//! is 1 when the response has the required format: by default it matches
//! `pattern` (its answer in `\boxed{..}`); with `style = "thought-answer"`
//! it is the reference's check, the whole response being
//! `<thought>...</thought>...<answer>...</answer>`. The paper's reward is
//! `0.9 * accuracy + 0.1 * format` (configs/paper.toml). Correctness is the
//! accuracy verifier's.

use ::regex::Regex;
use serde::{Deserialize, Serialize};

use super::{Verdict, Verifier};
use crate::data::Example;
use crate::{Error, Result};

/// Which format check earns the format reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FormatStyle {
    /// The response matches `pattern` anywhere.
    #[default]
    Pattern,
    /// The reference's: after removing whitespace around `<`, `>` and `/`,
    /// the whole response matches `<thought>.*</thought>.*<answer>.*</answer>`.
    ThoughtAnswer,
}

/// The reference's format check (RLSD-SPEC.md, "Reward and prompts"): with
/// whitespace around `<`, `>`, `/` removed, the WHOLE response is
/// `<thought>...</thought>...<answer>...</answer>` (dot matches newlines).
pub fn thought_answer_format(response: &str) -> bool {
    static NORM: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    static FULL: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let norm = NORM.get_or_init(|| Regex::new(r"\s*([<>/])\s*").expect("valid regex"));
    let full = FULL.get_or_init(|| {
        Regex::new(r"(?s)\A<thought>.*</thought>.*<answer>.*</answer>\z").expect("valid regex")
    });
    full.is_match(&norm.replace_all(response, "$1"))
}

/// The `[verifier.format]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FormatConfig {
    /// Which check earns the format reward.
    pub style: FormatStyle,
    /// Pattern the response must match to earn the format reward (`style = "pattern"`).
    pub pattern: String,
    /// Weight of the format reward.
    pub weight: f32,
    /// Weight of the accuracy reward.
    pub accuracy_weight: f32,
}

impl Default for FormatConfig {
    fn default() -> Self {
        FormatConfig {
            style: FormatStyle::Pattern,
            pattern: r"\\boxed\{".to_string(),
            weight: 0.1,
            accuracy_weight: 1.0,
        }
    }
}

/// An accuracy verifier plus a weighted format reward.
pub struct WithFormat {
    accuracy: Box<dyn Verifier>,
    pattern: Regex,
    style: FormatStyle,
    weight: f32,
    accuracy_weight: f32,
}

impl std::fmt::Debug for WithFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithFormat")
            .field("style", &self.style)
            .field("pattern", &self.pattern.as_str())
            .field("weight", &self.weight)
            .field("accuracy_weight", &self.accuracy_weight)
            .finish_non_exhaustive()
    }
}

impl WithFormat {
    /// Wrap `accuracy` with the format reward `cfg` describes.
    pub fn new(accuracy: Box<dyn Verifier>, cfg: &FormatConfig) -> Result<Self> {
        let pattern = Regex::new(&cfg.pattern)
            .map_err(|e| Error::config("verifier.format.pattern", e.to_string()))?;
        for (key, w) in [
            ("verifier.format.weight", cfg.weight),
            ("verifier.format.accuracy_weight", cfg.accuracy_weight),
        ] {
            if !w.is_finite() {
                return Err(Error::config(key, format!("must be finite, got {w}")));
            }
        }
        Ok(WithFormat {
            accuracy,
            pattern,
            style: cfg.style,
            weight: cfg.weight,
            accuracy_weight: cfg.accuracy_weight,
        })
    }
}

impl Verifier for WithFormat {
    fn verify(&self, example: &Example, response: &str) -> Verdict {
        let acc = self.accuracy.verify(example, response);
        let formatted = match self.style {
            FormatStyle::Pattern => self.pattern.is_match(response),
            FormatStyle::ThoughtAnswer => thought_answer_format(response),
        };
        let format_reward = if formatted { 1.0 } else { 0.0 };
        Verdict {
            reward: self.accuracy_weight * acc.reward + self.weight * format_reward,
            correct: acc.correct,
            reason: format!(
                "{}; format {}",
                acc.reason,
                if formatted { "ok" } else { "missing" }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thought_answer_format_is_the_whole_response() {
        assert!(thought_answer_format(
            "<thought>a\nb</thought> so <answer>4</answer>"
        ));
        // Whitespace around the tag characters is forgiven, as the reference's.
        assert!(thought_answer_format(
            "  < thought >a</ thought>\n< answer > 4 </answer >\n"
        ));
        assert!(!thought_answer_format("<thought>a</thought>4"));
        assert!(!thought_answer_format("<answer>4</answer>"));
        assert!(!thought_answer_format(
            "<thought>a</thought><answer>4</answer> trailing"
        ));
        assert!(!thought_answer_format(
            "pre <thought>a</thought><answer>4</answer>"
        ));
        assert!(!thought_answer_format(
            "<answer>4</answer><thought>a</thought>"
        ));
    }
}
