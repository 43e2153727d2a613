//! An optional format reward combined with the accuracy reward:
//! `reward = accuracy_weight * R_acc + weight * R_format`, where `R_format`
//! is 1 when the response matches the format pattern (by default: it puts
//! its answer in `\boxed{..}`). Correctness is the accuracy verifier's.

use ::regex::Regex;
use serde::{Deserialize, Serialize};

use super::{Verdict, Verifier};
use crate::data::Example;
use crate::{Error, Result};

/// The `[verifier.format]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FormatConfig {
    /// Pattern the response must match to earn the format reward.
    pub pattern: String,
    /// Weight of the format reward.
    pub weight: f32,
    /// Weight of the accuracy reward.
    pub accuracy_weight: f32,
}

impl Default for FormatConfig {
    fn default() -> Self {
        FormatConfig {
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
    weight: f32,
    accuracy_weight: f32,
}

impl std::fmt::Debug for WithFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithFormat")
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
            weight: cfg.weight,
            accuracy_weight: cfg.accuracy_weight,
        })
    }
}

impl Verifier for WithFormat {
    fn verify(&self, example: &Example, response: &str) -> Verdict {
        let acc = self.accuracy.verify(example, response);
        let formatted = self.pattern.is_match(response);
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
