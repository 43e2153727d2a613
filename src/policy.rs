//! The contract between a trainable model and the train step.
//!
//! The train step needs one thing from a model: the log-probability (and the
//! entropy of the predictive distribution) of every response token given its
//! prompt, as tensors that carry gradients when grad mode is on. Keeping this a
//! trait lets the RLSD math be tested on a toy policy, and lets the transformer
//! in [`crate::model`] plug in unchanged.

use crate::error::{Error, Result};
use std::ops::Range;
use tch::{nn, Device, Tensor};

/// One prompt with one sampled response, as token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptResponse {
    /// Prompt token ids (no padding).
    pub prompt: Vec<i64>,
    /// Response token ids (no padding).
    pub response: Vec<i64>,
    /// Which bound images the prompt's image tokens stand for
    /// (`model::vision::VlPolicy::bind_images`): two prompts whose ids are
    /// equal but whose images differ (two pictures of the same size behind
    /// the same text) carry different keys. 0 for a text prompt.
    pub image_key: u64,
}

/// Per-token scores of a batch of responses, right-padded to the longest.
#[derive(Debug)]
pub struct ResponseScores {
    /// `[B, L]` log-prob of each response token at the given temperature; 0 on padding.
    pub logprobs: Tensor,
    /// `[B, L]` entropy of the predictive distribution at each response position; 0 on padding.
    pub entropy: Tensor,
    /// `[B, L]` 1.0 on response tokens, 0.0 on padding (float, same device).
    pub mask: Tensor,
}

/// How a policy may trade compute for memory when scoring with gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScoreOptions {
    /// Response tokens per output-head chunk: at most this many rows of
    /// `[tokens, vocab]` logits exist at once (0 = pick from the vocabulary size).
    pub chunk_tokens: usize,
    /// Recompute each decoder layer in the backward instead of keeping its
    /// activations (`optim.activation_checkpointing`).
    pub activation_checkpointing: bool,
    /// Run each distinct prompt of a batch once, its responses attending to
    /// its keys and values (`optim.share_prompt`; `model::shared`). The
    /// default (false) is the plain per-row computation.
    pub share_prompt: bool,
}

/// A loss term over the student's full next-token distribution, added chunk
/// by chunk (e.g. a full-vocabulary distillation KL between teacher and
/// student). The response tokens of a batch are numbered row-major: sample
/// 0's tokens in order, then sample 1's, and so on; a chunk is a contiguous
/// range of that numbering.
pub trait VocabLoss {
    /// The term of `tokens` given their student log-softmax `logp [n, vocab]`
    /// (float32, at the scoring temperature, carrying gradient), or `None`
    /// when these tokens add nothing. The term is summed into the loss: it
    /// must already carry the batch's normaliser.
    fn chunk_loss(&mut self, tokens: Range<usize>, logp: &Tensor) -> Result<Option<Tensor>>;
}

/// A model the train step can score and update.
pub trait Policy: Send {
    /// The variables the optimizer updates.
    fn var_store(&self) -> &nn::VarStore;

    /// Mutable access, for loading snapshots.
    fn var_store_mut(&mut self) -> &mut nn::VarStore;

    /// Device of the parameters.
    fn device(&self) -> Device {
        self.var_store().device()
    }

    /// Set (training one micro-batch) or clear the key that random parts of
    /// the forward draw from, so a recomputation draws the same values (a
    /// LoRA adapter's dropout masks, `model::lora_dropout`). The default has
    /// nothing random.
    fn set_train_key(&self, _key: Option<u64>) {}

    /// Log-probs and entropies of every response token given its prompt, with
    /// logits divided by `temperature`. Tracks gradients unless called under
    /// `tch::no_grad`.
    fn response_scores(&self, batch: &[PromptResponse], temperature: f64)
        -> Result<ResponseScores>;

    /// Score `batch`, let `loss` turn the scores into a scalar loss, and
    /// back-propagate it (plus `vocab_loss`, when given) into the
    /// parameters' gradients. `loss` returning `None` stops before any
    /// backward (the caller skips the step); the return value says whether
    /// gradients were accumulated.
    ///
    /// The default scores the whole batch with [`Policy::response_scores`]
    /// and cannot take a `vocab_loss`; the transformer overrides it with a
    /// chunked path whose memory does not grow with `tokens x vocab`.
    fn backward_scores(
        &self,
        batch: &[PromptResponse],
        temperature: f64,
        _opts: &ScoreOptions,
        loss: &mut dyn FnMut(&ResponseScores) -> Result<Option<Tensor>>,
        vocab_loss: Option<&mut dyn VocabLoss>,
    ) -> Result<bool> {
        if vocab_loss.is_some() {
            return Err(Error::InvalidInput(
                "this policy has no full-vocabulary scores for a vocab loss".into(),
            ));
        }
        let scores = self.response_scores(batch, temperature)?;
        match loss(&scores)? {
            Some(l) => {
                l.f_backward()?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// [`Policy::response_scores`] plus the log-probs (same temperature, full
    /// vocabulary normalisation) of the token ids `support` (`[B, L, K]` i64)
    /// at each response position, as `[B, L, K]` carrying gradient. The OPSD
    /// `kl` / `jsd` distillation forms need it; a policy that cannot give it
    /// says so.
    fn response_scores_on_support(
        &self,
        batch: &[PromptResponse],
        temperature: f64,
        support: &Tensor,
    ) -> Result<(ResponseScores, Tensor)> {
        let _ = (batch, temperature, support);
        Err(Error::InvalidInput(
            "this policy cannot score a token support (needed by opsd_loss = kl / jsd)".into(),
        ))
    }
}
