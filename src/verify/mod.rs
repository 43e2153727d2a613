//! Verifiers: reward functions behind the [`Verifier`] trait.
//!
//! A verifier reads one response to one [`Example`] and returns a [`Verdict`]:
//! a reward, whether the answer is correct, and a short reason a person can
//! read in the logs. Verifiers never fail: a response that cannot be judged
//! (no answer found, an external checker that crashed or timed out) scores 0
//! and says why.
//!
//! Built in, chosen by [`VerifierConfig::kind`]:
//! - [`math`]: final-answer extraction and mathematical equivalence;
//! - [`exact`]: normalised string equality;
//! - [`regex`](self::regex): a regular expression over the response;
//! - [`command`]: an external process speaking JSON (protocol in docs/VERIFIERS.md).
//!
//! An optional [`FormatConfig`] adds a format reward, combined with the
//! accuracy reward by configurable weights ([`format::WithFormat`]).

pub mod command;
pub mod exact;
pub mod format;
pub mod math;
pub mod regex;

use serde::{Deserialize, Serialize};

use crate::data::Example;
use crate::Result;

pub use self::regex::{RegexConfig, RegexVerifier};
pub use command::{CommandConfig, CommandVerifier};
pub use exact::{ExactConfig, ExactVerifier};
pub use format::{thought_answer_format, FormatConfig, FormatStyle, WithFormat};
pub use math::{extract_final_answer, extract_strict_answer, Extraction, MathConfig, MathVerifier};

/// The judgement of one response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The reward `R(x, y)` the RL step uses.
    pub reward: f32,
    /// Whether the answer is correct (counts toward accuracy).
    pub correct: bool,
    /// A short human-readable reason.
    pub reason: String,
}

impl Verdict {
    /// A correct answer: reward 1.
    pub fn correct(reason: impl Into<String>) -> Self {
        Verdict {
            reward: 1.0,
            correct: true,
            reason: reason.into(),
        }
    }

    /// A wrong (or unjudgeable) answer: reward 0.
    pub fn wrong(reason: impl Into<String>) -> Self {
        Verdict {
            reward: 0.0,
            correct: false,
            reason: reason.into(),
        }
    }
}

/// A reward function over (example, response) pairs.
///
/// Implementations must be cheap to share across the verifier pool's threads
/// and must not panic on any input.
pub trait Verifier: Send + Sync {
    /// Judge `response` as an answer to `example`.
    fn verify(&self, example: &Example, response: &str) -> Verdict;
}

/// Which built-in verifier scores accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifierKind {
    /// Final-answer extraction and mathematical equivalence.
    #[default]
    Math,
    /// Normalised string equality.
    Exact,
    /// A regular expression over the response.
    Regex,
    /// An external process fed JSON on stdin.
    Command,
}

/// The `[verifier]` section of a run's TOML.
///
/// ```toml
/// [verifier]
/// kind = "math"            # math | exact | regex | command
/// [verifier.format]        # optional format reward
/// pattern = '\\boxed\{'
/// weight = 0.1
/// accuracy_weight = 1.0
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifierConfig {
    /// Which verifier scores accuracy.
    pub kind: VerifierKind,
    /// Settings of the `math` verifier.
    pub math: MathConfig,
    /// Settings of the `exact` verifier.
    pub exact: ExactConfig,
    /// Settings of the `regex` verifier.
    pub regex: RegexConfig,
    /// Settings of the `command` verifier.
    pub command: CommandConfig,
    /// Optional format reward added to the accuracy reward.
    pub format: Option<FormatConfig>,
}

/// Build the verifier a config describes (with its format reward, if any).
pub fn build_verifier(cfg: &VerifierConfig) -> Result<Box<dyn Verifier>> {
    let accuracy: Box<dyn Verifier> = match cfg.kind {
        VerifierKind::Math => Box::new(MathVerifier::new(cfg.math.clone())?),
        VerifierKind::Exact => Box::new(ExactVerifier::new(cfg.exact.clone())),
        VerifierKind::Regex => Box::new(RegexVerifier::new(&cfg.regex)?),
        VerifierKind::Command => Box::new(CommandVerifier::new(cfg.command.clone())?),
    };
    match &cfg.format {
        Some(f) => Ok(Box::new(WithFormat::new(accuracy, f)?)),
        None => Ok(accuracy),
    }
}
