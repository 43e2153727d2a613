//! The RLSD math (RLSD-SPEC.md): every formula of the spec lives here once.
//!
//! - [`config`]: [`AlgoConfig`], [`Algo`], [`LossAgg`], [`StudentLogprobs`].
//! - [`advantages`]: group-relative advantages `A_i` (GRPO / Dr. GRPO).
//! - [`credit`]: `delta_t`, token weights `w_t`, and `Ahat_t` for grpo / rlsd /
//!   opsd / cepo, plus CEPO's choice of negative response.
//! - [`loss`]: the PPO clipped surrogate with asymmetric and dual clip, k3 KL,
//!   entropy, token-mean and seq-mean-token-mean aggregation.
//! - [`schedule`]: `lambda_at(step)` and `lr_at(step)`, pure functions of the step.

pub mod advantages;
pub mod config;
pub mod credit;
pub mod loss;
pub mod schedule;

pub use advantages::{group_advantage, group_advantages};
pub use config::{Algo, AlgoConfig, LossAgg, StudentLogprobs};
pub use credit::{
    cepo_negatives, clip_token_weights, token_advantages, token_delta, token_weights, TokenCredit,
};
pub use loss::{aggregate, k3_kl, policy_loss, ppo_token_loss, LossNorm, PolicyLoss, PpoTokens};
pub use schedule::{lambda_at, lr_at};
