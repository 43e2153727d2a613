//! Configuration of the RLSD family of updates (the `[algo]` section of a run's TOML).
//!
//! Defaults: `lambda0 = 0.5`, no lambda warm-up, a 50-step linear decay (the
//! spec's; the reference script uses 60; CEPO: `lambda0 = 1.0` over 100 steps,
//! its authors'), `eps_w = 0.2`, PPO clip `eps_low = 0.2`, `eps_high = 0.28`,
//! dual clip `c = 3.0`, token-mean aggregation, no KL and no entropy term, the
//! student log-prob for `delta_t` taken from the current policy's (detached)
//! forward: all as the reference (iie-ycx/RLSD) runs RLSD. The baselines'
//! defaults are this runtime's variants, not the reference's: `opsd_loss =
//! "pg"` (the reference: `"token-kl"`), the GRPO outcome advantage for
//! `grpo+opsd` (the reference: `"reinforce++"`), and the OPSD teacher synced
//! like RLSD's (the reference: live). `configs/paper.toml` selects the
//! reference's for every one of them (docs/ALGORITHMS.md).

use super::adaptive::{AdaptiveLambda, AdaptiveRule, AdaptiveSignal, LambdaSchedule};
use super::outcome::OutcomeAdvantage;
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
    /// As `opsd`, with the teacher's context built from the group's own
    /// attempts (shortest correct and shortest wrong response), not the answer.
    Sdpo,
    /// The policy-gradient loss with `outcome_ppo_coef * A_i` (`A_i` from
    /// `outcome_advantage`) plus `distill_coef` times the OPSD divergence.
    #[serde(rename = "grpo+opsd")]
    GrpoOpsd,
}

impl Algo {
    /// The algorithm a step at `lambda` runs: RLSD at lambda 0 is exactly
    /// GRPO (the credit no longer uses the teacher), so its teacher pass is
    /// skipped. The one place this rule is decided.
    pub fn at_lambda(self, lambda: f64) -> Algo {
        if self == Algo::Rlsd && lambda == 0.0 {
            Algo::Grpo
        } else {
            self
        }
    }

    /// Whether this algorithm needs the teacher's log-probs `logp_T_t`.
    pub fn needs_teacher(self) -> bool {
        !matches!(self, Algo::Grpo)
    }

    /// Whether this algorithm needs a second teacher pass given a wrong answer.
    pub fn needs_negative_teacher(self) -> bool {
        matches!(self, Algo::Cepo)
    }

    /// Whether the update includes an OPSD distillation term (`opsd`, `sdpo`,
    /// `grpo+opsd`), whose form [`OpsdLoss`] chooses.
    pub fn distills(self) -> bool {
        matches!(self, Algo::Opsd | Algo::Sdpo | Algo::GrpoOpsd)
    }

    /// Whether the lambda schedule matters (`rlsd`, `cepo`).
    pub fn uses_lambda(self) -> bool {
        matches!(self, Algo::Rlsd | Algo::Cepo)
    }

    /// `lambda_0` when the config does not set it: 1.0 for CEPO (its authors'), else 0.5.
    pub fn default_lambda0(self) -> f64 {
        match self {
            Algo::Cepo => 1.0,
            _ => 0.5,
        }
    }

    /// Decay steps when the config does not set them: 100 for CEPO, else 50.
    pub fn default_lambda_decay_steps(self) -> u64 {
        match self {
            Algo::Cepo => 100,
            _ => 50,
        }
    }

    /// The lower-case name used in configs and logs.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Grpo => "grpo",
            Algo::Rlsd => "rlsd",
            Algo::Opsd => "opsd",
            Algo::Cepo => "cepo",
            Algo::Sdpo => "sdpo",
            Algo::GrpoOpsd => "grpo+opsd",
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

/// What lambda does during the warm-up (`step <= lambda_warmup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LambdaWarmup {
    /// The reference code's: lambda ramps up from 0, `lambda_0 * step / warmup`.
    #[default]
    Ramp,
    /// This runtime's earlier behaviour: lambda holds at `lambda_0` during the warm-up.
    Hold,
}

/// What CEPO does for a group with no wrong response (no negative context).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CepoFallback {
    /// Its authors': the group's update is plain GRPO (`delta_t = 0`).
    #[default]
    Grpo,
    /// This runtime's earlier behaviour: `Tneg` is the student, i.e. RLSD's credit.
    Rlsd,
}

/// The form of the OPSD distillation term (`opsd`, `sdpo`, `grpo+opsd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpsdLoss {
    /// `Ahat_t = delta_t` on the sampled token through the PPO clip: the
    /// policy-gradient form of the reverse KL toward the teacher (this
    /// runtime's original OPSD).
    #[default]
    Pg,
    /// The reference's default (`distillation_loss_type = kl`, no top-k,
    /// `opsd_kl_penalty = kl`): `logp_T_t - logp_S_t` on the sampled token,
    /// gradient through the student only.
    TokenKl,
    /// `KL(P_T || P_S)` over the teacher's top-k support plus one tail bucket
    /// (or the full vocabulary with `distill_topk = 0`), clamped to [-10, 10].
    Kl,
    /// Jensen-Shannon divergence over the same support, clamped to [0, 10].
    Jsd,
}

impl OpsdLoss {
    /// Whether this form needs the teacher's next-token distribution (top-k or full).
    pub fn needs_distribution(self) -> bool {
        matches!(self, OpsdLoss::Kl | OpsdLoss::Jsd)
    }

    /// The kebab-case name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            OpsdLoss::Pg => "pg",
            OpsdLoss::TokenKl => "token-kl",
            OpsdLoss::Kl => "kl",
            OpsdLoss::Jsd => "jsd",
        }
    }
}

/// Hyper-parameters of the update (the `[algo]` TOML section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlgoConfig {
    /// Which token credit to use.
    pub algo: Algo,
    /// `lambda_0`, the weight of the teacher-derived token credit after the
    /// warm-up; unset: [`Algo::default_lambda0`] (read it with [`AlgoConfig::lambda0`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda0: Option<f64>,
    /// Warm-up steps (lambda ramps up from 0 over them; see `lambda_warmup_mode`).
    pub lambda_warmup: u64,
    /// What lambda does during the warm-up.
    pub lambda_warmup_mode: LambdaWarmup,
    /// Steps over which lambda decays linearly from `lambda0` to 0 after the
    /// warm-up; 0 keeps lambda at `lambda0` (constant-lambda ablation). Unset:
    /// [`Algo::default_lambda_decay_steps`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda_decay_steps: Option<u64>,
    /// `"fixed"` (default): lambda is [`super::lambda_at`] of the step;
    /// `"adaptive"`: [`super::AdaptiveLambda`], from `lambda0`, decayed by the
    /// measured signal (the `adaptive_*` keys; warm-up and decay keys unused).
    pub lambda_schedule: LambdaSchedule,
    /// Adaptive schedule: the measured signal (`"delta-correct"` or `"weight-clip"`).
    pub adaptive_signal: AdaptiveSignal,
    /// Adaptive schedule: a step whose signal lies below this counts toward the streak.
    pub adaptive_threshold: f64,
    /// Adaptive schedule: steps in a row below the threshold that decay lambda.
    pub adaptive_patience: u64,
    /// Adaptive schedule: lambda's factor at each decay, in (0, 1).
    pub adaptive_factor: f64,
    /// Adaptive schedule: a decayed lambda below this becomes 0 (GRPO from then on).
    pub adaptive_min_lambda: f64,
    /// CEPO for a group with no wrong response.
    pub cepo_fallback: CepoFallback,
    /// Form of the OPSD distillation term (opsd, sdpo, grpo+opsd).
    pub opsd_loss: OpsdLoss,
    /// Teacher support for the `kl` / `jsd` forms: the teacher's top-k tokens
    /// plus one tail bucket; 0 = the full vocabulary.
    pub distill_topk: usize,
    /// Weight of the distillation term (opsd / sdpo forms other than `pg`, and
    /// the OPSD term of `grpo+opsd`).
    pub distill_coef: f64,
    /// SDPO's teacher template, with `{question}`, `{correct_solution}` and
    /// `{feedback}` (the shortest correct / wrong response of the group).
    pub sdpo_template: String,
    /// SDPO: feedback candidates sampled per prompt besides the group, the
    /// reference's `sdpo_num_candidates` (8 in its config; the paper preset's).
    /// 0 (the default, this runtime's variant) takes the feedback from the
    /// group being distilled, so the teacher's context can hold the very
    /// response it scores.
    pub sdpo_num_candidates: usize,
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
    /// `grpo+opsd`: the advantage of its policy-gradient term: `"grpo"`
    /// (default, this runtime's variant) or `"reinforce++"` (the reference's:
    /// batch-whitened REINFORCE++, [`super::outcome::reinforce_pp_advantages`]).
    pub outcome_advantage: OutcomeAdvantage,
    /// `grpo+opsd`: weight of its policy-gradient term (the reference's
    /// `outcome_ppo_coef`; applied to the advantage, which scales the PPO
    /// loss by the same factor). Default 1.0.
    pub outcome_ppo_coef: f64,
    /// Teacher sync interval of the distilling algorithms (`opsd`, `sdpo`,
    /// `grpo+opsd`); unset: `runtime.teacher_sync_interval`. 1 is the live
    /// policy, the reference's OPSD (`freeze_teacher_model = False`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opsd_teacher_sync_interval: Option<u64>,
    /// RLSD / CEPO: reweight only responses with `A_i < 0`; the others keep
    /// GRPO's `A_i` (the reference's `rlsd_negative_only`).
    pub rlsd_negative_only: bool,
    /// RLSD / CEPO: reweight only the tokens inside `<thought> ... </thought>`;
    /// the others keep GRPO's `A_i` (the reference's `rlsd_thought_only`).
    /// Needs [`AlgoConfig::thought_tag_ids`], set from the tokenizer.
    pub rlsd_thought_only: bool,
    /// The token ids of `<thought>` and `</thought>` (each encoded alone), for
    /// `rlsd_thought_only`; resolved from the tokenizer, never read from TOML.
    #[serde(skip)]
    pub thought_tag_ids: Option<(Vec<i64>, Vec<i64>)>,
}

impl Default for AlgoConfig {
    fn default() -> Self {
        AlgoConfig {
            algo: Algo::Rlsd,
            lambda0: None,
            lambda_warmup: 0,
            lambda_warmup_mode: LambdaWarmup::Ramp,
            lambda_decay_steps: None,
            lambda_schedule: LambdaSchedule::Fixed,
            adaptive_signal: AdaptiveSignal::DeltaCorrect,
            adaptive_threshold: 0.05,
            adaptive_patience: 5,
            adaptive_factor: 0.5,
            adaptive_min_lambda: 0.05,
            cepo_fallback: CepoFallback::Grpo,
            opsd_loss: OpsdLoss::Pg,
            distill_topk: 64,
            distill_coef: 1.0,
            sdpo_template: super::sdpo::DEFAULT_SDPO_TEMPLATE.to_string(),
            eps_w: 0.2,
            eps_low: 0.2,
            eps_high: 0.28,
            dual_clip_c: 3.0,
            loss_agg: LossAgg::TokenMean,
            student_logprobs: StudentLogprobs::Current,
            scale_by_std: true,
            kl_coef: 0.0,
            entropy_coef: 0.0,
            sdpo_num_candidates: 0,
            outcome_advantage: OutcomeAdvantage::Grpo,
            outcome_ppo_coef: 1.0,
            opsd_teacher_sync_interval: None,
            rlsd_negative_only: false,
            rlsd_thought_only: false,
            thought_tag_ids: None,
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

    /// `lambda_0`: the configured value or the algorithm's default.
    pub fn lambda0(&self) -> f64 {
        self.lambda0.unwrap_or_else(|| self.algo.default_lambda0())
    }

    /// The teacher sync interval this algorithm runs with:
    /// `opsd_teacher_sync_interval` for the distilling algorithms where set,
    /// else `runtime_interval` (`runtime.teacher_sync_interval`).
    pub fn teacher_sync_interval(&self, runtime_interval: u64) -> u64 {
        match self.opsd_teacher_sync_interval {
            Some(n) if self.algo.distills() => n,
            _ => runtime_interval,
        }
    }

    /// The adaptive lambda schedule's rule (the `adaptive_*` keys).
    pub fn adaptive_rule(&self) -> AdaptiveRule {
        AdaptiveRule {
            signal: self.adaptive_signal,
            threshold: self.adaptive_threshold,
            patience: self.adaptive_patience,
            factor: self.adaptive_factor,
            min_lambda: self.adaptive_min_lambda,
        }
    }

    /// The adaptive lambda schedule's state before step 1 (at `lambda0`).
    pub fn adaptive_start(&self) -> AdaptiveLambda {
        AdaptiveLambda::start(self.lambda0())
    }

    /// Decay steps: the configured value or the algorithm's default.
    pub fn lambda_decay_steps(&self) -> u64 {
        self.lambda_decay_steps
            .unwrap_or_else(|| self.algo.default_lambda_decay_steps())
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
            (0.0..=1.0).contains(&self.lambda0()),
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
            self.distill_coef >= 0.0 && self.distill_coef.is_finite(),
            "distill_coef",
            "must be finite and >= 0",
        )?;
        check(
            !(self.algo == Algo::GrpoOpsd && self.opsd_loss == OpsdLoss::Pg)
                || self.distill_coef > 0.0,
            "distill_coef",
            "grpo+opsd needs distill_coef > 0",
        )?;
        check(
            self.outcome_ppo_coef > 0.0 && self.outcome_ppo_coef.is_finite(),
            "outcome_ppo_coef",
            "must be finite and > 0",
        )?;
        check(
            self.opsd_teacher_sync_interval != Some(0),
            "opsd_teacher_sync_interval",
            "must be >= 1 (1 = the live policy)",
        )?;
        super::sdpo::check_sdpo_template(&self.sdpo_template)?;
        // Checked whatever the schedule, so a bad value never waits for the
        // day the schedule is switched on.
        self.adaptive_rule().validate()?;
        check(
            self.entropy_coef.is_finite(),
            "entropy_coef",
            "must be finite",
        )?;
        Ok(())
    }
}
