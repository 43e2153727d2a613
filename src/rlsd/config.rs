//! Configuration of the RLSD family of updates (the `[algo]` section of a run's TOML).
//!
//! Defaults are the spec's / paper's: `lambda0 = 0.5`, no lambda warm-up, a
//! 50-step linear decay, `eps_w = 0.2`, PPO clip `eps_low = 0.2`,
//! `eps_high = 0.28`, dual clip `c = 3.0`, token-mean aggregation, no KL and no
//! entropy term, the student log-prob for `delta_t` taken from the current
//! policy's (detached) forward.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Which token credit `Ahat_t` the update uses (RLSD-SPEC.md, "Other algorithms").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algo {
    /// `Ahat_t = A_i`: group-relative policy optimisation, the baseline.
    Grpo,
    /// `Ahat_t = A_i * ((1 - lambda) + lambda * clamp(exp(sign(A_i) * delta_t), 1 - eps_w, 1 + eps_w))`.
    #[default]
    Rlsd,
    /// `Ahat_t = delta_t`: on-policy self-distillation, no reward used.
    Opsd,
    /// As `rlsd` with `delta_t = logp_Tpos_t - logp_Tneg_t` (contrastive teacher).
    Cepo,
}

impl Algo {
    /// Whether this algorithm needs the teacher's log-probs `logp_T_t`.
    pub fn needs_teacher(self) -> bool {
        !matches!(self, Algo::Grpo)
    }

    /// Whether this algorithm needs a second teacher pass given a wrong answer.
    pub fn needs_negative_teacher(self) -> bool {
        matches!(self, Algo::Cepo)
    }

    /// The lower-case name used in configs and logs.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Grpo => "grpo",
            Algo::Rlsd => "rlsd",
            Algo::Opsd => "opsd",
            Algo::Cepo => "cepo",
        }
    }
}

/// How per-token policy losses are reduced to one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossAgg {
    /// `sum_{i,t} pg_{i,t} / sum_i |y_i|`: the mean over every response token of
    /// the whole batch (across micro-batches).
    #[default]
    TokenMean,
    /// `(1/B) sum_i (1/|y_i|) sum_t pg_{i,t}`: the paper's printed GRPO form.
    SeqMeanTokenMean,
}

/// Where `logp_S_t` in `delta_t = logp_T_t - logp_S_t` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StudentLogprobs {
    /// The current policy's log-probs from the update's own forward, detached
    /// (the reference code's choice; free).
    #[default]
    Current,
    /// The sampling log-probs `logp_old_t` recorded at generation time.
    Sampling,
}

/// Hyper-parameters of the update (the `[algo]` TOML section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlgoConfig {
    /// Which token credit to use.
    pub algo: Algo,
    /// `lambda_0`, the initial weight of the teacher-derived token credit.
    pub lambda0: f64,
    /// Steps during which lambda stays at `lambda0` before decaying.
    pub lambda_warmup: u64,
    /// Steps over which lambda decays linearly from `lambda0` to 0.
    pub lambda_decay_steps: u64,
    /// `eps_w`: the token weight is clipped to `[1 - eps_w, 1 + eps_w]`.
    pub eps_w: f64,
    /// PPO lower clip: the ratio is clamped below at `1 - eps_low`.
    pub eps_low: f64,
    /// PPO upper clip: the ratio is clamped above at `1 + eps_high`.
    pub eps_high: f64,
    /// Dual clip `c`: for `Ahat_t < 0` the per-token loss is capped at `-Ahat_t * c`.
    pub dual_clip_c: f64,
    /// Loss aggregation.
    pub loss_agg: LossAgg,
    /// Source of `logp_S_t` for `delta_t`.
    pub student_logprobs: StudentLogprobs,
    /// Divide group advantages by the group's std (GRPO); `false` is Dr. GRPO.
    pub scale_by_std: bool,
    /// Coefficient of the k3 KL-to-reference penalty (0 = off).
    pub kl_coef: f64,
    /// Coefficient of the entropy bonus (0 = off).
    pub entropy_coef: f64,
}

impl Default for AlgoConfig {
    fn default() -> Self {
        AlgoConfig {
            algo: Algo::Rlsd,
            lambda0: 0.5,
            lambda_warmup: 0,
            lambda_decay_steps: 50,
            eps_w: 0.2,
            eps_low: 0.2,
            eps_high: 0.28,
            dual_clip_c: 3.0,
            loss_agg: LossAgg::TokenMean,
            student_logprobs: StudentLogprobs::Current,
            scale_by_std: true,
            kl_coef: 0.0,
            entropy_coef: 0.0,
        }
    }
}

impl AlgoConfig {
    /// The defaults with another algorithm.
    pub fn with_algo(algo: Algo) -> Self {
        AlgoConfig {
            algo,
            ..AlgoConfig::default()
        }
    }

    /// Check value ranges; the error names the key (`algo.<field>`).
    pub fn validate(&self) -> Result<()> {
        let check = |ok: bool, key: &str, msg: &str| -> Result<()> {
            if ok {
                Ok(())
            } else {
                Err(Error::config(format!("algo.{key}"), msg))
            }
        };
        check(
            (0.0..=1.0).contains(&self.lambda0),
            "lambda0",
            "must lie in [0, 1]",
        )?;
        check(
            self.eps_w >= 0.0 && self.eps_w < 1.0,
            "eps_w",
            "must lie in [0, 1)",
        )?;
        check(
            self.eps_low >= 0.0 && self.eps_low < 1.0,
            "eps_low",
            "must lie in [0, 1)",
        )?;
        check(
            self.eps_high >= 0.0 && self.eps_high.is_finite(),
            "eps_high",
            "must be finite and >= 0",
        )?;
        check(
            self.dual_clip_c > 1.0 && self.dual_clip_c.is_finite(),
            "dual_clip_c",
            "must be finite and > 1",
        )?;
        check(
            self.kl_coef >= 0.0 && self.kl_coef.is_finite(),
            "kl_coef",
            "must be finite and >= 0",
        )?;
        check(
            self.entropy_coef.is_finite(),
            "entropy_coef",
            "must be finite",
        )?;
        Ok(())
    }
}
