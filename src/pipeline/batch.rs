//! One type per stage of a step, each holding what its stage added to the
//! one before, so no field starts empty by convention:
//!
//! ```text
//! StepPlan -rollout-> RolloutBatch -verify-> ScoredBatch -teacher-> TeacherBatch -credit-> CreditBatch
//! ```
//!
//! Per-token data are plain vectors (they cross threads); the train step's
//! input is built from a [`CreditBatch`] by [`CreditBatch::train_batch`].

use super::plan::StepPlan;
use crate::data::Example;
use crate::error::{Error, Result};
use crate::policy::PromptResponse;
use crate::rlsd::{AlgoConfig, TokenSupport};
use crate::stats::StageTimings;
use crate::train::TrainBatch;

/// One sampled response, as the sampler produced it.
#[derive(Debug, Clone, Default)]
pub struct Rollout {
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
    /// A multi-turn episode's mask and score (`None`: a single-turn response,
    /// every token the model's, scored by the verifier).
    pub episode: Option<EpisodeRollout>,
}

/// What a multi-turn episode adds to its [`Rollout`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpisodeRollout {
    /// 1 on the model's response tokens, 0 on the environment's
    /// ([`TrainBatch::response_mask`]).
    pub response_mask: Vec<f32>,
    /// The environment's verdict (the verifier stage keeps it);
    /// `timed_out` when an environment call timed out, failed or panicked.
    pub score: Score,
    /// Model turns played.
    pub turns: usize,
    /// Tool calls the model wrote over its turns (read in `env.tool_format`;
    /// unreadable ones included).
    pub tool_calls: usize,
    /// The teacher's context for this episode: the environment's opening
    /// with the privileged text added
    /// ([`crate::env::chat::EpisodeChat::teacher_opening_text`]); `None`
    /// (the environment never started) falls back to the data's teacher
    /// prompt.
    pub teacher_prompt_ids: Option<Vec<i64>>,
}

/// The sampler's output: `B * G` rollouts, prompt-major.
#[derive(Debug, Clone)]
pub struct RolloutBatch {
    /// The plan this batch answers.
    pub plan: StepPlan,
    /// Policy version that generated the responses.
    pub policy_version: u64,
    /// The responses, prompt-major (`G` per prompt).
    pub rollouts: Vec<Rollout>,
    /// Wall time spent in each stage so far (later stages add theirs).
    pub timings: StageTimings,
}

/// The verifier's judgement of one response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Score {
    /// Verifier reward.
    pub reward: f32,
    /// Verifier's correctness verdict.
    pub correct: bool,
    /// Verifier's short reason.
    pub reason: String,
    /// The verifier ran past `verifier_timeout_s` and was abandoned (scored 0).
    pub timed_out: bool,
}

/// The verifier's output: every rollout with its [`Score`].
#[derive(Debug, Clone)]
pub struct ScoredBatch {
    /// What was scored.
    pub rollout: RolloutBatch,
    /// One score per rollout, in the same order.
    pub scores: Vec<Score>,
}

impl ScoredBatch {
    /// Pair rollouts with their scores (one each).
    pub fn new(rollout: RolloutBatch, scores: Vec<Score>) -> Result<ScoredBatch> {
        if scores.len() != rollout.rollouts.len() {
            return Err(Error::InvalidInput(format!(
                "step {}: {} scores for {} responses",
                rollout.plan.step,
                scores.len(),
                rollout.rollouts.len()
            )));
        }
        Ok(ScoredBatch { rollout, scores })
    }
}

/// What the teacher-scorer computed for a batch.
#[derive(Debug, Clone, Default)]
pub struct TeacherScores {
    /// Teacher weights version of the replica that scored (or would have scored) it.
    pub version: u64,
    /// `logp_T_t` per response (`None` when the plan needs no teacher).
    pub logprobs: Option<Vec<Vec<f32>>>,
    /// CEPO only: log-probs under the group's wrong answer; `None` inside for a
    /// response whose group has no wrong response.
    pub neg_logprobs: Option<Vec<Option<Vec<f32>>>>,
    /// OPSD `kl` / `jsd` only: the teacher's top-k (or full) next-token
    /// distribution at each response position.
    pub support: Option<Vec<TokenSupport>>,
}

/// The teacher-scorer's output.
#[derive(Debug, Clone)]
pub struct TeacherBatch {
    /// The scored batch.
    pub scored: ScoredBatch,
    /// The teacher's log-probs (and CEPO / OPSD extras).
    pub teacher: TeacherScores,
}

/// The credit-assigner's output, ready for the optimizer.
#[derive(Debug, Clone)]
pub struct CreditBatch {
    /// Everything earlier stages computed.
    pub taught: TeacherBatch,
    /// Group-relative advantage `A_i` per response.
    pub advantages: Vec<f32>,
}

impl CreditBatch {
    /// The plan of this batch.
    pub fn plan(&self) -> &StepPlan {
        &self.taught.scored.rollout.plan
    }

    /// The rollouts, prompt-major.
    pub fn rollouts(&self) -> &[Rollout] {
        &self.taught.scored.rollout.rollouts
    }

    /// The verifier's scores, one per rollout.
    pub fn scores(&self) -> &[Score] {
        &self.taught.scored.scores
    }

    /// The prompt of rollout `i`'s group.
    pub fn example_of(&self, i: usize) -> Option<&Example> {
        let g = self.rollouts().get(i)?.group;
        self.plan().examples.get(g)
    }

    /// Policy version that generated the responses.
    pub fn policy_version(&self) -> u64 {
        self.taught.scored.rollout.policy_version
    }

    /// Stage timings so far.
    pub fn timings(&self) -> &StageTimings {
        &self.taught.scored.rollout.timings
    }

    /// The optimizer's input. Teacher fields are passed only where the
    /// plan ran the teacher and the algorithm uses them.
    pub fn train_batch(&self, algo: &AlgoConfig, temperature: f64) -> TrainBatch {
        let r = self.rollouts();
        let plan = self.plan();
        let t = &self.taught.teacher;
        let teacher = plan.needs_teacher;
        let n = r.len();
        TrainBatch {
            samples: r
                .iter()
                .map(|x| PromptResponse {
                    image_key: 0,
                    prompt: x.prompt_ids.clone(),
                    response: x.response_ids.clone(),
                })
                .collect(),
            sampling_logprobs: r.iter().map(|x| x.sampling_logprobs.clone()).collect(),
            teacher_logprobs: teacher.then(|| {
                t.logprobs
                    .clone()
                    .unwrap_or_else(|| r.iter().map(|_| Vec::new()).collect())
            }),
            teacher_neg_logprobs: algo
                .algo
                .needs_negative_teacher()
                .then(|| t.neg_logprobs.clone().unwrap_or_else(|| vec![None; n])),
            ref_logprobs: None,
            teacher_support: (teacher
                && algo.algo.distills()
                && algo.opsd_loss.needs_distribution())
            .then(|| {
                t.support
                    .clone()
                    .unwrap_or_else(|| vec![TokenSupport::default(); n])
            }),
            advantages: self.advantages.clone(),
            correct: Some(self.scores().iter().map(|s| s.correct).collect()),
            step: plan.step,
            lambda: plan.lambda,
            lr: plan.lr,
            temperature,
            response_mask: r.iter().any(|x| x.episode.is_some()).then(|| {
                r.iter()
                    .map(|x| match &x.episode {
                        Some(e) => e.response_mask.clone(),
                        None => vec![1.0; x.response_ids.len()],
                    })
                    .collect()
            }),
        }
    }
}
