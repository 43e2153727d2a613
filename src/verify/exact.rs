//! The `exact` verifier: normalised string equality with the gold answer.

use serde::{Deserialize, Serialize};

use super::{extract_final_answer, Verdict, Verifier};
use crate::data::Example;

/// Settings of the `exact` verifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExactConfig {
    /// Compare case-sensitively.
    pub case_sensitive: bool,
    /// Compare the extracted final answer (`\boxed`, `####`, "the answer is")
    /// rather than the whole response.
    pub extract: bool,
}

impl Default for ExactConfig {
    fn default() -> Self {
        ExactConfig {
            case_sensitive: false,
            extract: true,
        }
    }
}

/// Normalised string equality.
#[derive(Debug, Clone)]
pub struct ExactVerifier {
    cfg: ExactConfig,
}

impl ExactVerifier {
    /// A verifier with the given settings.
    pub fn new(cfg: ExactConfig) -> Self {
        ExactVerifier { cfg }
    }

    /// Trim, collapse whitespace, drop surrounding `$` and quotes and a final
    /// period, and lowercase unless case-sensitive.
    pub fn normalize(&self, s: &str) -> String {
        let s = s
            .trim()
            .trim_matches(|c| c == '$' || c == '"' || c == '\'' || c == '`')
            .trim()
            .trim_end_matches('.');
        let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
        if self.cfg.case_sensitive {
            s
        } else {
            s.to_lowercase()
        }
    }
}

impl Verifier for ExactVerifier {
    fn verify(&self, example: &Example, response: &str) -> Verdict {
        let answer = if self.cfg.extract {
            extract_final_answer(response).unwrap_or_else(|| response.to_string())
        } else {
            response.to_string()
        };
        if self.normalize(&answer) == self.normalize(&example.answer) {
            Verdict::correct("exact match")
        } else {
            Verdict::wrong("no exact match")
        }
    }
}
