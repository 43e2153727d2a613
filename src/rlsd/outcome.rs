//! The outcome advantage of `grpo+opsd`: which per-response advantage the
//! policy-gradient half of the update uses, and its weight.
//!
//! The reference (iie-ycx/RLSD) runs its GRPO+OPSD baseline as the OPSD
//! self-distillation branch (`use_gt_as_hint`, whose distillation weight
//! `alpha` it forces to 1.0: `verl/trainer/opsd_trainer.py` 136-141) plus an
//! outcome PPO loss weighted by `outcome_ppo_coef` whose advantages are
//! REINFORCE++'s (`opsd_trainer.py` 832-870 calls
//! `compute_advantage_return(AdvantageEstimator.REINFORCE_PLUS_PLUS, ...)`;
//! `verl/workers/actor/dp_opsd_actor.py` 1033-1062 adds
//! `outcome_ppo_coef * outcome_pg_loss`). Because the PPO clipped surrogate
//! (dual clip included) is positively homogeneous in the advantage, weighting
//! the loss by `c > 0` equals weighting the advantage by `c`, which is how this
//! runtime applies the coefficient.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Which per-response advantage `A_i` the policy-gradient term of
/// `grpo+opsd` uses (`algo.outcome_advantage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeAdvantage {
    /// This runtime's variant: the GRPO group-relative advantage
    /// ([`super::group_advantages`]).
    #[default]
    Grpo,
    /// The reference's: REINFORCE++ returns whitened over every response
    /// token of the batch ([`reinforce_pp_advantages`]).
    #[serde(rename = "reinforce++")]
    ReinforcePlusPlus,
}

impl OutcomeAdvantage {
    /// The name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            OutcomeAdvantage::Grpo => "grpo",
            OutcomeAdvantage::ReinforcePlusPlus => "reinforce++",
        }
    }
}

/// REINFORCE++ outcome advantages, one per response, as the reference
/// computes them for a scalar reward on the last response token with
/// `gamma = 1` (`verl/trainer/core_algos.py` 311-340,
/// `verl/utils/torch_functional.py` 73-98):
///
/// - the return of every response token of response `i` is `R_i`;
/// - the returns are whitened over every response token of the batch:
///   `N = sum_i |y_i|`, `mu = sum_i |y_i| R_i / (N + 1e-8)`,
///   `var = sum_i |y_i| (R_i - mu)^2 / (N + 1e-8) * N / (N - 1)` (Bessel
///   over tokens, skipped when `N <= 1`),
///   `A_i = (R_i - mu) / sqrt(var + 1e-8)`.
///
/// Longer responses weigh more in `mu` and `var` (token-weighted), and there
/// is no grouping: the baseline is the whole batch's. `lengths[i] = |y_i|`; a
/// response of length 0 takes no part in the statistics. A non-finite reward
/// makes every advantage NaN, so that the train step skips the step.
pub fn reinforce_pp_advantages(rewards: &[f32], lengths: &[usize]) -> Result<Vec<f32>> {
    if rewards.len() != lengths.len() {
        return Err(Error::InvalidInput(format!(
            "reinforce_pp_advantages: {} rewards for {} responses",
            rewards.len(),
            lengths.len()
        )));
    }
    if rewards.iter().any(|r| !r.is_finite()) {
        return Ok(vec![f32::NAN; rewards.len()]);
    }
    let n: f64 = lengths.iter().map(|&l| l as f64).sum();
    let weighted = |f: &dyn Fn(f64) -> f64| -> f64 {
        rewards
            .iter()
            .zip(lengths)
            .map(|(&r, &l)| l as f64 * f(f64::from(r)))
            .sum::<f64>()
            / (n + 1e-8)
    };
    let mu = weighted(&|r| r);
    let mut var = weighted(&|r| (r - mu).powi(2));
    if n > 1.0 {
        var *= n / (n - 1.0);
    }
    let scale = 1.0 / (var + 1e-8).sqrt();
    Ok(rewards
        .iter()
        .map(|&r| ((f64::from(r) - mu) * scale) as f32)
        .collect())
}

/// The advantage `A_i` of every response of a batch laid out as consecutive
/// groups of `group_size`: `outcome_ppo_coef * A_i` with `A_i` from
/// `outcome` for `grpo+opsd`, the GRPO group advantage (unweighted) for
/// every other algorithm.
pub fn batch_advantages(
    cfg: &super::AlgoConfig,
    rewards: &[f32],
    lengths: &[usize],
    group_size: usize,
) -> Result<Vec<f32>> {
    let group = || super::group_advantages(rewards, group_size, cfg.scale_by_std);
    if cfg.algo != super::Algo::GrpoOpsd {
        return group();
    }
    let a = match cfg.outcome_advantage {
        OutcomeAdvantage::Grpo => group()?,
        OutcomeAdvantage::ReinforcePlusPlus => reinforce_pp_advantages(rewards, lengths)?,
    };
    let coef = cfg.outcome_ppo_coef;
    Ok(a.into_iter()
        .map(|x| (f64::from(x) * coef) as f32)
        .collect())
}
