//! The contract between a trainable model and the train step.
//!
//! The train step needs one thing from a model: the log-probability (and the
//! entropy of the predictive distribution) of every response token given its
//! prompt, as tensors that carry gradients when grad mode is on. Keeping this a
//! trait lets the RLSD math be tested on a toy policy, and lets the transformer
//! in [`crate::model`] plug in unchanged.

use crate::error::{Error, Result};
use tch::{nn, Device, Tensor};

/// One prompt with one sampled response, as token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptResponse {
    /// Prompt token ids (no padding).
    pub prompt: Vec<i64>,
    /// Response token ids (no padding).
    pub response: Vec<i64>,
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

    /// Log-probs and entropies of every response token given its prompt, with
    /// logits divided by `temperature`. Tracks gradients unless called under
    /// `tch::no_grad`.
    fn response_scores(&self, batch: &[PromptResponse], temperature: f64)
        -> Result<ResponseScores>;

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
