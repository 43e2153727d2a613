//! The `regex` verifier: a regular expression over the response.
//!
//! Three modes, picked by the pattern:
//! - it contains `{answer}`: the gold answer (regex-escaped) is put there and
//!   the response must match;
//! - it has a capture group (`(?P<answer>..)` or the first group): the group
//!   of the last match must equal the gold answer after trimming;
//! - otherwise: the response must match.

use ::regex::Regex;
use serde::{Deserialize, Serialize};

use super::{Verdict, Verifier};
use crate::data::Example;
use crate::{Error, Result};

/// Settings of the `regex` verifier.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegexConfig {
    /// The pattern (Rust `regex` syntax).
    pub pattern: String,
    /// Compare a captured answer case-insensitively.
    pub ignore_case: bool,
}

/// Regular-expression verifier.
#[derive(Debug, Clone)]
pub struct RegexVerifier {
    cfg: RegexConfig,
    /// The compiled pattern when it has no `{answer}` placeholder.
    fixed: Option<Regex>,
}

const KEY: &str = "verifier.regex.pattern";

impl RegexVerifier {
    /// Compile the pattern; an empty or invalid pattern is a config error.
    pub fn new(cfg: &RegexConfig) -> Result<Self> {
        if cfg.pattern.is_empty() {
            return Err(Error::config(KEY, "empty pattern"));
        }
        let fixed = if cfg.pattern.contains("{answer}") {
            // Check that the pattern compiles with some answer in place.
            Regex::new(&cfg.pattern.replace("{answer}", "x"))
                .map_err(|e| Error::config(KEY, e.to_string()))?;
            None
        } else {
            Some(Regex::new(&cfg.pattern).map_err(|e| Error::config(KEY, e.to_string()))?)
        };
        Ok(RegexVerifier {
            cfg: cfg.clone(),
            fixed,
        })
    }
}

impl Verifier for RegexVerifier {
    fn verify(&self, example: &Example, response: &str) -> Verdict {
        let Some(re) = &self.fixed else {
            let pattern = self
                .cfg
                .pattern
                .replace("{answer}", &::regex::escape(example.answer.trim()));
            return match Regex::new(&pattern) {
                Ok(re) if re.is_match(response) => Verdict::correct("pattern with answer matched"),
                Ok(_) => Verdict::wrong("pattern with answer did not match"),
                Err(e) => Verdict::wrong(format!("pattern with answer invalid: {e}")),
            };
        };
        if re.captures_len() == 1 {
            return if re.is_match(response) {
                Verdict::correct("pattern matched")
            } else {
                Verdict::wrong("pattern did not match")
            };
        }
        let Some(caps) = re.captures_iter(response).last() else {
            return Verdict::wrong("pattern did not match");
        };
        let Some(got) = caps.name("answer").or_else(|| caps.get(1)) else {
            return Verdict::wrong("capture group did not participate");
        };
        let (got, gold) = (got.as_str().trim(), example.answer.trim());
        let same = if self.cfg.ignore_case {
            got.to_lowercase() == gold.to_lowercase()
        } else {
            got == gold
        };
        if same {
            Verdict::correct(format!("captured `{got}`"))
        } else {
            Verdict::wrong(format!("captured `{got}`, gold `{gold}`"))
        }
    }
}
