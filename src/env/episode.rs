//! The episode: what one rollout is, as a list of segments.
//!
//! A segment is either *given* (the prompt, a system turn, a tool result, an
//! environment observation) or *generated* by the policy (token ids with the
//! sampler's log-probs and the policy version that drew them). Only generated
//! tokens are trained: they carry loss, advantage and credit; given tokens are
//! context for the policy and for the teacher. A single-turn rollout is the
//! case `[Given(prompt), Generated(response)]`.
//!
//! Plain data (no tensors), so episodes cross threads and actors freely.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a given segment came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GivenKind {
    /// The templated prompt (system and user turns before the first reply).
    Prompt,
    /// A system turn inserted later in the episode.
    System,
    /// A tool's answer to the model's tool call, rendered by the chat template.
    ToolResult,
    /// Any other text the environment shows the model between its turns.
    Observation,
}

/// One contiguous run of tokens of an episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Segment {
    /// Context the policy did not produce: no loss, no advantage, no credit.
    Given {
        /// What kind of context it is (shown by `inspect`, counted in metrics).
        kind: GivenKind,
        /// Its token ids.
        token_ids: Vec<i64>,
    },
    /// Tokens the policy sampled: the only trained tokens.
    Generated {
        /// The sampled token ids.
        token_ids: Vec<i64>,
        /// `logp_old`: the sampler's log-prob of each token (same length).
        sampling_logprobs: Vec<f32>,
        /// The policy version that sampled them (staleness is per turn).
        policy_version: u64,
    },
}

impl Segment {
    /// The segment's token ids.
    pub fn token_ids(&self) -> &[i64] {
        match self {
            Segment::Given { token_ids, .. } | Segment::Generated { token_ids, .. } => token_ids,
        }
    }

    /// Whether the policy generated it (so it is trained).
    pub fn is_generated(&self) -> bool {
        matches!(self, Segment::Generated { .. })
    }
}

/// A rollout as a list of segments, in context order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    segments: Vec<Segment>,
}

impl Episode {
    /// An empty episode.
    pub fn new() -> Episode {
        Episode::default()
    }

    /// The single-turn case: a prompt, then one generated response.
    pub fn single_turn(
        prompt_ids: Vec<i64>,
        response_ids: Vec<i64>,
        sampling_logprobs: Vec<f32>,
        policy_version: u64,
    ) -> Result<Episode> {
        let mut e = Episode::new();
        e.push_given(GivenKind::Prompt, prompt_ids);
        e.push_generated(response_ids, sampling_logprobs, policy_version)?;
        Ok(e)
    }

    /// Append context the policy did not produce. Empty segments are skipped.
    pub fn push_given(&mut self, kind: GivenKind, token_ids: Vec<i64>) {
        if !token_ids.is_empty() {
            self.segments.push(Segment::Given { kind, token_ids });
        }
    }

    /// Append one model turn; `sampling_logprobs` must have one entry per token.
    pub fn push_generated(
        &mut self,
        token_ids: Vec<i64>,
        sampling_logprobs: Vec<f32>,
        policy_version: u64,
    ) -> Result<()> {
        if token_ids.len() != sampling_logprobs.len() {
            return Err(Error::InvalidInput(format!(
                "episode turn {}: {} generated tokens but {} sampling log-probs",
                self.turns(),
                token_ids.len(),
                sampling_logprobs.len()
            )));
        }
        if let Some(bad) = sampling_logprobs
            .iter()
            .find(|l| !l.is_finite() || **l > 0.0)
        {
            return Err(Error::InvalidInput(format!(
                "episode turn {}: sampling log-prob {bad} is not a finite value <= 0",
                self.turns()
            )));
        }
        if !token_ids.is_empty() {
            self.segments.push(Segment::Generated {
                token_ids,
                sampling_logprobs,
                policy_version,
            });
        }
        Ok(())
    }

    /// The segments, in context order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Every token id of the episode, in order (what the model reads).
    pub fn token_ids(&self) -> Vec<i64> {
        self.segments
            .iter()
            .flat_map(|s| s.token_ids().iter().copied())
            .collect()
    }

    /// Total number of tokens.
    pub fn len(&self) -> usize {
        self.segments.iter().map(|s| s.token_ids().len()).sum()
    }

    /// Whether the episode has no tokens.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The loss mask, aligned with [`Episode::token_ids`]: 1 on generated
    /// tokens, 0 on given ones.
    pub fn loss_mask(&self) -> Vec<f32> {
        self.segments
            .iter()
            .flat_map(|s| {
                let m = if s.is_generated() { 1.0 } else { 0.0 };
                std::iter::repeat_n(m, s.token_ids().len())
            })
            .collect()
    }

    /// The sampler's log-probs aligned with [`Episode::token_ids`] (0 on
    /// given tokens, which [`Episode::loss_mask`] masks out).
    pub fn sampling_logprobs(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len());
        for s in &self.segments {
            match s {
                Segment::Given { token_ids, .. } => {
                    out.extend(std::iter::repeat_n(0.0, token_ids.len()))
                }
                Segment::Generated {
                    sampling_logprobs, ..
                } => out.extend_from_slice(sampling_logprobs),
            }
        }
        out
    }

    /// Number of leading given tokens (the prompt before the first model turn).
    pub fn prompt_len(&self) -> usize {
        self.segments
            .iter()
            .take_while(|s| !s.is_generated())
            .map(|s| s.token_ids().len())
            .sum()
    }

    /// Number of generated (trained) tokens.
    pub fn generated_len(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| s.is_generated())
            .map(|s| s.token_ids().len())
            .sum()
    }

    /// Number of model turns (generated segments).
    pub fn turns(&self) -> usize {
        self.segments.iter().filter(|s| s.is_generated()).count()
    }

    /// The tokens after the prompt ([`Episode::prompt_len`]): the "response"
    /// of the train step's prompt / response split, environment tokens included.
    pub fn response_ids(&self) -> Vec<i64> {
        self.token_ids().split_off(self.prompt_len())
    }

    /// [`Episode::loss_mask`] over [`Episode::response_ids`]: 0 on the
    /// environment's tokens inside the response.
    pub fn response_loss_mask(&self) -> Vec<f32> {
        self.loss_mask().split_off(self.prompt_len())
    }

    /// [`Episode::sampling_logprobs`] over [`Episode::response_ids`].
    pub fn response_sampling_logprobs(&self) -> Vec<f32> {
        self.sampling_logprobs().split_off(self.prompt_len())
    }

    /// The oldest policy version among the model's turns (`None` before the
    /// first turn): an episode is as stale as its oldest turn.
    pub fn oldest_policy_version(&self) -> Option<u64> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Generated { policy_version, .. } => Some(*policy_version),
                Segment::Given { .. } => None,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_turn_is_prompt_then_response() {
        let e = Episode::single_turn(vec![1, 2, 3], vec![7, 8], vec![-0.5, -1.0], 4).unwrap();
        assert_eq!(e.token_ids(), vec![1, 2, 3, 7, 8]);
        assert_eq!(e.loss_mask(), vec![0.0, 0.0, 0.0, 1.0, 1.0]);
        assert_eq!(e.sampling_logprobs(), vec![0.0, 0.0, 0.0, -0.5, -1.0]);
        assert_eq!((e.prompt_len(), e.generated_len(), e.turns()), (3, 2, 1));
        assert_eq!(e.oldest_policy_version(), Some(4));
    }

    #[test]
    fn two_turns_with_a_tool_result_between() {
        // prompt [10, 11] | model [20, 21, 22] v3 | tool [30] | model [40] v4
        let mut e = Episode::new();
        e.push_given(GivenKind::Prompt, vec![10, 11]);
        e.push_generated(vec![20, 21, 22], vec![-0.1, -0.2, -0.3], 3)
            .unwrap();
        e.push_given(GivenKind::ToolResult, vec![30]);
        e.push_generated(vec![40], vec![-0.4], 4).unwrap();
        assert_eq!(e.token_ids(), vec![10, 11, 20, 21, 22, 30, 40]);
        assert_eq!(e.loss_mask(), vec![0., 0., 1., 1., 1., 0., 1.]);
        assert_eq!(
            e.sampling_logprobs(),
            vec![0.0, 0.0, -0.1, -0.2, -0.3, 0.0, -0.4]
        );
        assert_eq!(
            (e.len(), e.prompt_len(), e.generated_len(), e.turns()),
            (7, 2, 4, 2)
        );
        assert_eq!(e.oldest_policy_version(), Some(3));
        assert_eq!(e.response_ids(), vec![20, 21, 22, 30, 40]);
        assert_eq!(e.response_loss_mask(), vec![1., 1., 1., 0., 1.]);
        assert_eq!(
            e.response_sampling_logprobs(),
            vec![-0.1, -0.2, -0.3, 0.0, -0.4]
        );
    }

    #[test]
    fn mismatched_or_impossible_logprobs_are_refused() {
        let mut e = Episode::new();
        let err = e.push_generated(vec![1, 2], vec![-0.1], 0).unwrap_err();
        assert!(
            err.to_string().contains("2 generated tokens but 1"),
            "{err}"
        );
        let err = e.push_generated(vec![1], vec![0.5], 0).unwrap_err();
        assert!(err.to_string().contains("0.5"), "{err}");
        let err = e.push_generated(vec![1], vec![f32::NAN], 0).unwrap_err();
        assert!(err.to_string().contains("NaN"), "{err}");
        assert!(e.is_empty());
    }

    #[test]
    fn empty_segments_are_skipped_and_serde_round_trips() {
        let mut e = Episode::new();
        e.push_given(GivenKind::Observation, vec![]);
        e.push_generated(vec![], vec![], 1).unwrap();
        assert!(e.is_empty());
        assert_eq!(e.oldest_policy_version(), None);
        let e = Episode::single_turn(vec![1], vec![2], vec![-1.0], 0).unwrap();
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"source\":\"generated\""), "{json}");
        let back: Episode = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }
}
