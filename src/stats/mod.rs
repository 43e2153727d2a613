//! `StepStats`: what one training step reports (RLSD-SPEC.md, "Quantities
//! worth logging"). The train step fills the loss and credit fields; the
//! runtime fills rewards, accuracy, version lag and stage timings.

mod record;
pub use record::ResponseRecord;

use serde::{Deserialize, Serialize};

/// Wall time of each pipeline stage for one step, in seconds (runtime-filled).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimings {
    /// Sampling responses.
    pub generate_s: f64,
    /// Verifying responses.
    pub verify_s: f64,
    /// Teacher scoring pass(es).
    pub teacher_s: f64,
    /// Advantages and token credit.
    pub credit_s: f64,
    /// Forward, backward and optimizer update.
    pub train_s: f64,
    /// Time the optimizer waited for a batch.
    pub idle_s: f64,
    /// Data-parallel runs: time in collectives (loss-normaliser agreement,
    /// gradient all-reduce, stats reduce), part of `train_s`.
    #[serde(default)]
    pub collective_s: f64,
}

/// One held-out validation (`run::evaluate::validate`), logged with the
/// step it follows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValidationStats {
    /// The step it followed (0: before training).
    pub after_step: u64,
    /// Held-out prompts.
    pub n: usize,
    /// Samples per prompt (`K`).
    pub samples: usize,
    /// pass@1 of greedy decoding.
    pub pass1_greedy: f64,
    /// pass@1 of sampling at the validation temperature (mean over the K samples).
    pub pass1_sampled: f64,
    /// pass@K (unbiased estimator).
    pub pass_at_k: f64,
    /// maj@K.
    pub maj_at_k: f64,
    /// Mean reward of the sampled responses.
    pub reward_mean: f64,
    /// Wall-clock seconds of the validation.
    pub wall_s: f64,
    /// Share of the sampled responses holding a span of the teacher's context
    /// absent from their prompt and answer line (`pipeline::leakage_probe`).
    #[serde(default)]
    pub leakage_span: f64,
    /// Share of the sampled responses referring to a reference they never saw.
    #[serde(default)]
    pub leakage_cue: f64,
}

/// Tool use and turns of a step's multi-turn episodes, over all of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpisodeStats {
    /// Fraction of episodes in which the model called a tool at least once
    /// (a call read in `env.tool_format`, well formed or not).
    pub tool_call_rate: f64,
    /// Mean tool calls per episode.
    pub tool_calls_mean: f64,
    /// Mean model turns per episode.
    pub turns_mean: f64,
}

/// Everything one training step reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// Step number (from 1), as given by the caller.
    pub step: u64,
    /// Algorithm name (`grpo`, `rlsd`, `opsd`, `cepo`).
    pub algo: String,
    /// True when this step was skipped (non-finite input, loss or gradient).
    pub skipped: bool,
    /// Why the step was skipped.
    pub skip_reason: Option<String>,
    /// Steps skipped so far by this trainer (this one included).
    pub skipped_steps: u64,
    /// Total loss that was back-propagated.
    pub loss: f64,
    /// The clipped-surrogate part of the loss.
    pub pg_loss: f64,
    /// Aggregated k3 KL to the reference (0 when off).
    pub kl: f64,
    /// Mean policy entropy over response tokens.
    pub entropy: f64,
    /// Mean reward of the batch (runtime-filled).
    pub reward_mean: f64,
    /// Fraction of responses judged correct (runtime-filled).
    pub accuracy: f64,
    /// Responses in the batch.
    pub num_responses: usize,
    /// Response tokens in the batch.
    pub num_tokens: usize,
    /// Mean response length in tokens.
    pub response_len_mean: f64,
    /// Longest response in tokens.
    pub response_len_max: usize,
    /// Token positions the train step's forward ran over its micro-batches,
    /// padding included (`model::trunk_positions`: fewer with
    /// `optim.share_prompt`). 0 where unknown.
    #[serde(default)]
    pub train_positions: usize,
    /// Lambda used for this step.
    pub lambda: f64,
    /// Learning rate used for this step.
    pub lr: f64,
    /// Mean of the sequence advantages `A_i`.
    pub adv_mean: f64,
    /// Mean of `|A_i|`.
    pub adv_abs_mean: f64,
    /// Mean of `Ahat_t` over response tokens.
    pub ahat_mean: f64,
    /// Mean of `|Ahat_t|` over response tokens.
    pub ahat_abs_mean: f64,
    /// Mean of `delta_t` over response tokens (0 without a teacher).
    pub delta_mean: f64,
    /// Mean of `|delta_t|` over response tokens.
    pub delta_abs_mean: f64,
    /// Mean raw token weight `w_t` (rlsd / cepo).
    pub weight_mean: f64,
    /// Fraction of response tokens whose `w_t` was clipped (paper: 3-6%).
    pub weight_clip_frac: f64,
    /// Fraction of response tokens with `w_t < 1 - eps_w` (clipped low).
    #[serde(default)]
    pub weight_clip_low_frac: f64,
    /// Fraction of response tokens with `w_t > 1 + eps_w` (clipped high).
    #[serde(default)]
    pub weight_clip_high_frac: f64,
    /// Mean `delta_t` over the tokens of correct responses (the teacher-student
    /// gap; `A_i > 0` where the verdicts are unknown).
    #[serde(default)]
    pub delta_mean_correct: f64,
    /// Mean `delta_t` over the tokens of wrong responses.
    #[serde(default)]
    pub delta_mean_wrong: f64,
    /// The aggregated OPSD distillation term (opsd / sdpo / grpo+opsd, forms
    /// other than `pg`), before `distill_coef`.
    #[serde(default)]
    pub distill_loss: f64,
    /// Share of responses that stopped at the token limit (runtime-filled).
    #[serde(default)]
    pub truncation_rate: f64,
    /// Share of responses that contain the privileged text verbatim before
    /// their final answer (runtime-filled; see `pipeline::leakage`).
    #[serde(default)]
    pub leakage_rate: f64,
    /// Mean PPO ratio over response tokens.
    pub ratio_mean: f64,
    /// Fraction of response tokens where the PPO clip was active.
    pub ratio_clip_frac: f64,
    /// Fraction of response tokens where the dual clip was active.
    pub dual_clip_frac: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Policy version lag of the batch (runtime-filled).
    pub version_lag: u64,
    /// Policy version that generated the batch (filled by the runtime).
    #[serde(default)]
    pub policy_version: u64,
    /// Teacher weights version that scored the batch (filled by the runtime).
    #[serde(default)]
    pub teacher_version: u64,
    /// Responses whose verifier ran past `runtime.verifier_timeout_s` this
    /// step (abandoned and scored 0).
    #[serde(default)]
    pub verifier_timeouts: u64,
    /// Multi-turn episodes whose environment call timed out, failed or
    /// panicked this step (ended and scored 0; `[env]`).
    #[serde(default)]
    pub env_failures: u64,
    /// Tool use and turns of the step's multi-turn episodes (`[env]`
    /// only; absent from `metrics.jsonl` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episodes: Option<EpisodeStats>,
    /// Wall time per stage (runtime-filled, except `train_s`).
    pub timings: StageTimings,
    /// A few of the step's responses with their token credit, for the
    /// completions log and TensorBoard (filled where the step's stats are
    /// assembled by [`crate::pipeline::sample_completions`]; not a metric, so
    /// not in `metrics.jsonl`).
    #[serde(skip)]
    pub completions: Vec<ResponseRecord>,
    /// Every response of the step with its token credit, filled only when
    /// the embedding program asked for them
    /// (`RuntimeBuilder::on_step_responses`); handed to its callback and
    /// then dropped, never kept in the report or written to a log.
    #[serde(skip)]
    pub responses: Vec<ResponseRecord>,
    /// Validations run with this step: after it, and before training on step 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation: Vec<ValidationStats>,
}
