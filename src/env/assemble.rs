//! Token-level episodes: an [`Episode`] built turn by turn from the model's
//! sampled tokens and the environment's messages.
//!
//! The model's tokens are kept exactly as sampled (with their log-probs);
//! only the environment's text is tokenized, through the chat template
//! ([`EpisodeChat::given_after_turn`]), so the episode's tokens are the
//! context the sampler really continued from.

use super::chat::EpisodeChat;
use super::environment::{Message, Opening};
use super::episode::{Episode, GivenKind};
use crate::error::Result;
use crate::model::Tokenizer;

/// One model turn as the sampler produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledTurn {
    /// The sampled token ids (an EOS or the token completing a stop string included).
    pub token_ids: Vec<i64>,
    /// The sampler's log-prob of each.
    pub sampling_logprobs: Vec<f32>,
    /// The policy version that sampled them.
    pub policy_version: u64,
}

/// Builds one episode: the opening, then alternating model turns and
/// environment answers.
#[derive(Debug)]
pub struct EpisodeBuilder<'a> {
    tokenizer: &'a Tokenizer,
    chat: EpisodeChat<'a>,
    episode: Episode,
    /// The last model turn's text with special tokens (to see which part of
    /// the template's turn end it already wrote).
    last_turn_text: String,
}

impl<'a> EpisodeBuilder<'a> {
    /// Start with the opening's prompt (chat template and generation prompt).
    pub fn start(
        tokenizer: &'a Tokenizer,
        chat: EpisodeChat<'a>,
        opening: &Opening,
    ) -> Result<EpisodeBuilder<'a>> {
        let prompt = chat.opening_text(opening)?;
        let mut episode = Episode::new();
        episode.push_given(GivenKind::Prompt, tokenizer.encode(&prompt, false)?);
        Ok(EpisodeBuilder {
            tokenizer,
            chat,
            episode,
            last_turn_text: String::new(),
        })
    }

    /// Append a model turn; returns its text without special tokens (what the
    /// environment reads).
    pub fn model_turn(&mut self, turn: SampledTurn) -> Result<String> {
        self.last_turn_text = self.tokenizer.decode(&turn.token_ids, false)?;
        let text = self.tokenizer.decode(&turn.token_ids, true)?;
        self.episode
            .push_generated(turn.token_ids, turn.sampling_logprobs, turn.policy_version)?;
        Ok(text)
    }

    /// Append the environment's answer to the last model turn (`kind`: tool
    /// results or observations), ending with the next generation prompt.
    pub fn environment(&mut self, messages: &[Message], kind: GivenKind) -> Result<()> {
        let text = self.chat.given_after_turn(&self.last_turn_text, messages)?;
        self.episode
            .push_given(kind, self.tokenizer.encode(&text, false)?);
        Ok(())
    }

    /// The tokens so far: the context the next model turn continues.
    pub fn context_ids(&self) -> Vec<i64> {
        self.episode.token_ids()
    }

    /// The episode.
    pub fn finish(self) -> Episode {
        self.episode
    }
}
