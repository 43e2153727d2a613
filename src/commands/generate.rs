//! `rlsd generate`: sample responses to one prompt through the model's chat template.

use crate::actors::stages::tokenizer_of;
use crate::data::prompt::chat_prompt_ids;
use crate::error::{Error, Result};
use crate::model::{generate, GenerateOptions, LoadedModel};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// The user message.
    pub prompt: String,
    /// How many responses.
    pub n: usize,
    /// Sampling temperature; 0 means greedy decoding.
    pub temperature: f64,
    /// Most new tokens per response.
    pub max_new_tokens: usize,
    /// Top-k cut-off (0 = off).
    pub top_k: usize,
    /// Nucleus mass (1.0 = off).
    pub top_p: f64,
    /// Sampling seed.
    pub seed: u64,
}

/// One response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneratedText {
    /// Decoded text, special tokens skipped.
    pub text: String,
    /// Generated token count.
    pub tokens: usize,
    /// Whether it ended on an EOS token (else it hit `max_new_tokens`).
    pub stopped_on_eos: bool,
    /// Sum of the sampling log-probs of its tokens.
    pub logprob: f64,
}

/// Sample `req.n` responses to `req.prompt` in one batch.
pub fn generate_text(model: &LoadedModel, req: &GenerateRequest) -> Result<Vec<GeneratedText>> {
    if req.n == 0 || req.max_new_tokens == 0 {
        return Err(Error::InvalidInput(
            "--n and --max-new-tokens must be at least 1".into(),
        ));
    }
    if !(req.temperature >= 0.0 && req.temperature.is_finite()) {
        return Err(Error::InvalidInput(format!(
            "--temperature must be a finite number >= 0 (0 = greedy), got {}",
            req.temperature
        )));
    }
    if !(req.top_p > 0.0 && req.top_p <= 1.0) {
        return Err(Error::InvalidInput(format!(
            "--top-p must be in (0, 1], got {}",
            req.top_p
        )));
    }
    let tok = tokenizer_of(model)?;
    let ids = chat_prompt_ids(tok, &req.prompt)?;
    let greedy = req.temperature == 0.0;
    let opts = GenerateOptions {
        max_new_tokens: req.max_new_tokens,
        greedy,
        temperature: if greedy { 1.0 } else { req.temperature },
        top_k: req.top_k,
        top_p: req.top_p,
        eos_ids: tok.eos_ids().to_vec(),
        pad_id: tok.pad_id(),
    };
    let prompts = vec![ids; req.n];
    let mut rng = StdRng::seed_from_u64(req.seed);
    let gens = tch::no_grad(|| generate(&model.lm, &prompts, &opts, &mut rng))?;
    gens.into_iter()
        .map(|g| {
            Ok(GeneratedText {
                text: tok.decode(&g.tokens, true)?,
                tokens: g.tokens.len(),
                stopped_on_eos: g.stopped_on_eos,
                logprob: g.logprobs.iter().map(|&x| f64::from(x)).sum(),
            })
        })
        .collect()
}
