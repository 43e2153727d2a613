//! Multi-turn rollouts, one episode at a time ([`play_episode`]): the
//! policy writes a turn (an EOS or one of the stop strings ends it), the
//! environment's [`Session`](crate::env::Session) answers, its tokens are
//! appended through [`EpisodeBuilder`], until the environment ends the
//! episode or the turn limit is reached.
//!
//! The result ([`PlayedEpisode`]) is what the train step needs: the prompt,
//! the response (every token after the prompt, the environment's included),
//! the response's loss mask ([`crate::train::TrainBatch::response_mask`]),
//! the sampling log-probs aligned with it, and the reward. Continuous
//! batching of many episodes is the sampler's job; this is the reference it
//! must equal.

use crate::data::Example;
use crate::env::chat::EpisodeChat;
use crate::env::environment::{step_with_timeout, with_timeout, Opening, Outcome, Reply, Started};
use crate::env::{EnvCounters, Environment, Episode, EpisodeBuilder, GivenKind, SampledTurn};
use crate::error::Result;
use crate::model::{generate_with, CausalLm, GenerateOptions, Tokenizer};
use crate::policy::PromptResponse;
use std::time::Duration;

/// How [`play_episode`] samples and waits.
#[derive(Debug, Clone)]
pub struct EpisodeOptions {
    /// Decoding of each model turn (`max_new_tokens` per turn; `stop`
    /// strings, e.g. `</tool_call>`, end a turn as an EOS does).
    pub generate: GenerateOptions,
    /// Most model turns per episode; past it the session's `finish` scores it.
    pub max_turns: usize,
    /// Limit on each environment call (a timeout scores the episode 0).
    pub env_timeout: Duration,
    /// The policy version the turns are sampled with.
    pub policy_version: u64,
}

/// One played episode and how it ended.
#[derive(Debug, Clone)]
pub struct PlayedEpisode {
    /// The tokens: the prompt, the model's turns, the environment's answers.
    pub episode: Episode,
    /// The environment's verdict (reward 0 when a call failed or timed out).
    pub outcome: Outcome,
    /// How the environment opened it (`None` when its start failed): the
    /// teacher's context is this opening with the privileged text added
    /// ([`crate::env::chat::EpisodeChat::teacher_opening_text`]).
    pub opening: Option<Opening>,
}

impl PlayedEpisode {
    /// The train step's sample: the prompt and every token after it.
    pub fn sample(&self) -> PromptResponse {
        let mut prompt = self.episode.token_ids();
        let response = prompt.split_off(self.episode.prompt_len());
        PromptResponse {
            prompt,
            response,
            image_key: 0,
        }
    }

    /// 1 on the model's response tokens, 0 on the environment's.
    pub fn response_mask(&self) -> Vec<f32> {
        self.episode.response_loss_mask()
    }

    /// The sampling log-probs of the response (0 on environment tokens).
    pub fn sampling_logprobs(&self) -> Vec<f32> {
        self.episode.response_sampling_logprobs()
    }

    /// The episode's reward.
    pub fn reward(&self) -> f32 {
        self.outcome.verdict.reward
    }
}

/// Play one episode of `env` for `example` with the policy `lm`; turn `k`
/// samples from `StdRng::seed_from_u64(seed + k)`. An environment call that
/// fails or times out ends the episode with reward 0 (counted in
/// `counters`); an episode whose start failed has no tokens.
#[allow(clippy::too_many_arguments)]
pub async fn play_episode(
    lm: &CausalLm,
    tokenizer: &Tokenizer,
    chat: EpisodeChat<'_>,
    env: &dyn Environment,
    example: &Example,
    opts: &EpisodeOptions,
    seed: u64,
    counters: &EnvCounters,
) -> Result<PlayedEpisode> {
    let Started {
        opening,
        mut session,
    } = match with_timeout(env.start(example), opts.env_timeout, counters).await {
        Ok(started) => started,
        Err(outcome) => {
            let episode = Episode::new();
            return Ok(PlayedEpisode {
                episode,
                outcome,
                opening: None,
            });
        }
    };
    let mut builder = EpisodeBuilder::start(tokenizer, chat, &opening)?;
    for turn in 0..opts.max_turns {
        let context = builder.context_ids();
        let seeds = [seed.wrapping_add(turn as u64)];
        let generation = generate_with(lm, &[context], &seeds, &opts.generate, Some(tokenizer))?
            .pop()
            .ok_or_else(|| crate::Error::InvalidInput("generation returned no row".into()))?;
        let text = builder.model_turn(SampledTurn {
            token_ids: generation.tokens,
            sampling_logprobs: generation.logprobs,
            policy_version: opts.policy_version,
        })?;
        match step_with_timeout(session.as_mut(), &text, opts.env_timeout, counters).await {
            Reply::Done(outcome) => {
                let episode = builder.finish();
                return Ok(PlayedEpisode {
                    episode,
                    outcome,
                    opening: Some(opening),
                });
            }
            Reply::Continue(messages) => {
                let kind = if messages.iter().any(|m| m.role == "tool") {
                    GivenKind::ToolResult
                } else {
                    GivenKind::Observation
                };
                builder.environment(&messages, kind)?;
            }
        }
    }
    let outcome = match with_timeout(session.finish(), opts.env_timeout, counters).await {
        Ok(o) | Err(o) => o,
    };
    Ok(PlayedEpisode {
        episode: builder.finish(),
        outcome,
        opening: Some(opening),
    })
}
