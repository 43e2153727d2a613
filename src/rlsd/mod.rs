//! The RLSD math (RLSD-SPEC.md): every formula of the spec lives here once.
//!
//! - [`config`]: [`AlgoConfig`], [`Algo`], [`LossAgg`], [`StudentLogprobs`].
//! - [`advantages`]: group-relative advantages `A_i` (GRPO / Dr. GRPO).
//! - [`credit`]: `delta_t`, token weights `w_t`, and `Ahat_t` for grpo / rlsd /
//!   opsd / sdpo / grpo+opsd / cepo, CEPO's negative response, SDPO's feedback.
//! - [`distill`]: the OPSD distillation terms (sampled-token KL; KL / JSD on
//!   the teacher's top-k support plus a tail bucket, or the full vocabulary).
//! - [`distill_vocab`]: the `kl` / `jsd` term as a chunked [`crate::policy::VocabLoss`].
//! - [`policy_loss`]: the PPO clipped surrogate with asymmetric and dual clip, k3 KL,
//!   entropy, token-mean and seq-mean-token-mean aggregation.
//! - [`outcome`]: `grpo+opsd`'s outcome advantage (GRPO or the reference's
//!   batch-whitened REINFORCE++) and its `outcome_ppo_coef`.
//! - [`restrict`]: `rlsd_negative_only` / `rlsd_thought_only` (where the
//!   reweighting applies).
//! - [`sdpo`]: SDPO's teacher context from the group's own attempts.
//! - [`adaptive`]: [`AdaptiveLambda`], lambda decayed by a measured signal
//!   (`lambda_schedule = "adaptive"`).
//! - [`schedule`]: `lambda_at(step)` and `lr_at(step)`, pure functions of the step.

pub mod adaptive;
pub mod advantages;
pub mod config;
pub mod credit;
pub mod distill;
pub mod distill_vocab;
pub mod outcome;
pub mod policy_loss;
pub mod restrict;
pub mod schedule;
pub mod sdpo;

pub use adaptive::{AdaptiveLambda, AdaptiveRule, AdaptiveSignal, LambdaSchedule, SignalInputs};
pub use advantages::{group_advantage, group_advantages};
pub use config::{
    Algo, AlgoConfig, CepoFallback, LambdaWarmup, LossAgg, OpsdLoss, StudentLogprobs,
};
pub use credit::{
    cepo_negatives, clip_token_weights, sdpo_feedback, token_advantages, token_delta,
    token_weights, update_credit, TokenCredit,
};
pub use distill::{support_divergence, token_kl, top_k_support, TokenSupport};
pub use outcome::{batch_advantages, reinforce_pp_advantages, OutcomeAdvantage};
pub use policy_loss::{
    aggregate, k3_kl, policy_loss, ppo_token_loss, LossNorm, PolicyLoss, PpoTokens,
};
pub use restrict::{restrict_reweighting, thought_span_mask};
pub use schedule::{lambda_at, lr_at};
