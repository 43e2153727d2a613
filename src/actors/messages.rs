//! What flows between the actors.
//!
//! One [`Batch`] travels the pipeline sampler -> verifier -> teacher ->
//! credit -> optimizer, each stage filling its fields. Per-token data are
//! plain vectors; the only tensors that cross actors are the detached deep
//! copies inside a [`WeightSnapshot`].

use crate::data::Example;
use crate::model::WeightSnapshot;
use crate::stats::{StageTimings, StepStats};
use ractor::RpcReplyPort;

/// The scheduler's order for one step: which prompts, with which constants.
#[derive(Debug, Clone)]
pub struct StepPlan {
    /// Step number, counted from 1.
    pub step: u64,
    /// The `B` prompts of this step.
    pub examples: Vec<Example>,
    /// lambda of the RLSD schedule at this step.
    pub lambda: f64,
    /// Learning rate at this step.
    pub lr: f64,
    /// Oldest policy version the sampler may use (bounds staleness).
    pub min_version: u64,
    /// Seed of this step's sampling RNG (a function of the run seed and the step).
    pub seed: u64,
    /// The data cursor after these prompts were drawn (for checkpoints).
    pub cursor_after: serde_json::Value,
}

/// One sampled response and everything later stages learn about it.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Index of its prompt in the step's `examples` (its group).
    pub group: usize,
    /// Student prompt token ids (chat template applied).
    pub prompt_ids: Vec<i64>,
    /// Generated token ids.
    pub response_ids: Vec<i64>,
    /// Decoded response text (what the verifier reads).
    pub response_text: String,
    /// `logp_old`: the sampler's log-prob of each generated token.
    pub sampling_logprobs: Vec<f32>,
    /// Whether generation ended on EOS (vs. the token limit).
    pub stopped_on_eos: bool,
    /// Whether generation ended on one of `rollout.stop` (the text is cut after it).
    pub stopped_on_stop_string: bool,
    /// Verifier reward.
    pub reward: f32,
    /// Verifier's correctness verdict.
    pub correct: bool,
    /// Verifier's short reason.
    pub reason: String,
    /// The verifier ran past `verifier_timeout_s` and was abandoned (scored 0).
    pub verifier_timed_out: bool,
    /// Teacher log-prob of each response token under the privileged context.
    pub teacher_logprobs: Vec<f32>,
    /// CEPO only: log-probs under the negative (wrong-answer) context.
    pub teacher_neg_logprobs: Option<Vec<f32>>,
    /// OPSD `kl` / `jsd` only: the teacher's top-k (or full) next-token
    /// distribution at each response position.
    pub teacher_support: Option<crate::rlsd::TokenSupport>,
    /// Group-relative advantage `A_i`.
    pub advantage: f32,
}

/// A step's batch as it moves through the pipeline.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The plan this batch answers.
    pub plan: StepPlan,
    /// Policy version that generated the responses.
    pub policy_version: u64,
    /// Teacher weights version that scored them.
    pub teacher_version: u64,
    /// `B * G` samples, prompt-major.
    pub samples: Vec<Sample>,
    /// Wall time spent in each stage so far.
    pub timings: StageTimings,
}

/// Messages to the scheduler.
#[derive(Debug)]
pub enum SchedulerMsg {
    /// Issue the first steps.
    Start,
    /// The optimizer finished a step.
    StepDone(Box<StepStats>),
    /// An actor was respawned: send in-flight steps again.
    Reissue,
    /// Stop issuing, checkpoint, and finish (Ctrl-C or a spent restart budget).
    Shutdown {
        /// Why the run stops.
        reason: String,
        /// Whether the run ends as a failure.
        failed: bool,
    },
}

/// Messages to the sampler.
#[derive(Debug)]
pub enum SamplerMsg {
    /// Generate the responses of a step.
    Generate(StepPlan),
    /// New policy weights.
    Weights(WeightSnapshot),
}

/// Messages to the verifier pool.
#[derive(Debug)]
pub enum VerifierMsg {
    /// Score every response of a batch.
    Verify(Box<Batch>),
}

/// Messages to the teacher-scorer.
#[derive(Debug)]
pub enum TeacherMsg {
    /// Score the batch's responses under the privileged context.
    Score(Box<Batch>),
    /// New teacher weights.
    Weights(WeightSnapshot),
}

/// Messages to the credit-assigner.
#[derive(Debug)]
pub enum CreditMsg {
    /// Compute advantages and assemble the train batch.
    Assign(Box<Batch>),
}

/// Messages to the optimizer.
#[derive(Debug)]
pub enum OptimizerMsg {
    /// Train on a finished batch.
    Train(Box<Batch>),
    /// Send the latest weights to the sampler (and teacher) again, after a respawn.
    Republish,
    /// Write a checkpoint of the last committed step (the optimizer holds
    /// every part of it); replies with its folder.
    Checkpoint {
        /// The final checkpoint: train nothing after it.
        last: bool,
        /// The checkpoint folder (`None` when no step was ever committed).
        reply: RpcReplyPort<Result<Option<std::path::PathBuf>, String>>,
    },
}
