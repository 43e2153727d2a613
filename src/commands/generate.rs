//! `rlsd generate`: sample responses to one prompt through the model's chat template.

use crate::data::prompt::chat_prompt_ids;
use crate::error::{Error, Result};
use crate::model::{generate, GenerateOptions, LoadedModel};
use crate::pipeline::tokenizer_of;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use std::path::Path;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// The user message.
    pub prompt: String,
    /// How many responses.
    pub n: usize,
    /// Sampling temperature; 0 means greedy decoding.
    pub temperature: f64,
    /// Most new tokens per response; `None`: the model's own limit
    /// (`limits`, else the room left in its context window).
    pub max_new_tokens: Option<usize>,
    /// The model's generation limits from its `generation_config.json`.
    pub limits: GenerationLimits,
    /// Top-k cut-off (0 = off).
    pub top_k: usize,
    /// Nucleus mass (1.0 = off).
    pub top_p: f64,
    /// Sampling seed.
    pub seed: u64,
    /// Tokenise the prompt as it is, without the chat template.
    pub raw: bool,
}

/// Length limits a model folder sets in `generation_config.json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenerationLimits {
    /// `max_new_tokens`: most new tokens per response.
    pub max_new_tokens: Option<usize>,
    /// `max_length`: most tokens of prompt plus response.
    pub max_length: Option<usize>,
}

impl GenerationLimits {
    /// Read `generation_config.json` of a model folder; a folder without
    /// one has no limits. A file that is not JSON is an error naming it.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("generation_config.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Model {
            path: path.clone(),
            msg: format!("not valid JSON: {e}"),
        })?;
        let get = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_u64)
                .map(|n| n as usize)
        };
        Ok(GenerationLimits {
            max_new_tokens: get("max_new_tokens"),
            max_length: get("max_length"),
        })
    }

    /// New tokens allowed after a prompt of `prompt_len` tokens: the
    /// requested number (or `max_new_tokens`, or all the room there is),
    /// never more than the room left in `max_length` (or the model's
    /// `max_position_embeddings`, `context`).
    pub fn new_tokens(
        &self,
        requested: Option<usize>,
        prompt_len: usize,
        context: usize,
    ) -> Result<usize> {
        let window = self.max_length.unwrap_or(context).min(context);
        let room = window.saturating_sub(prompt_len);
        if room == 0 {
            return Err(Error::InvalidInput(format!(
                "the prompt is {prompt_len} tokens; the model's context holds {window}"
            )));
        }
        Ok(requested.or(self.max_new_tokens).unwrap_or(room).min(room))
    }
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
    /// The generated token ids.
    pub ids: Vec<i64>,
    /// Each generated token's log-prob under the distribution it was drawn
    /// from (the model's at the sampling temperature; greedy: temperature 1).
    pub logprobs: Vec<f32>,
}

/// The prompt's token ids and the responses (`rlsd generate --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generated {
    /// The prompt as the model saw it (after the chat template unless raw).
    pub prompt_ids: Vec<i64>,
    /// The responses.
    pub responses: Vec<GeneratedText>,
}

/// Sample `req.n` responses to `req.prompt` in one batch, with the prompt's
/// token ids.
pub fn generate_tokens(model: &LoadedModel, req: &GenerateRequest) -> Result<Generated> {
    if req.n == 0 || req.max_new_tokens == Some(0) {
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
    let ids = if req.raw {
        tok.encode(&req.prompt, true)?
    } else {
        chat_prompt_ids(tok, &req.prompt)?
    };
    let context = usize::try_from(model.config.max_position_embeddings).unwrap_or(usize::MAX);
    let max_new_tokens = req
        .limits
        .new_tokens(req.max_new_tokens, ids.len(), context)?;
    let greedy = req.temperature == 0.0;
    let opts = GenerateOptions {
        max_new_tokens,
        greedy,
        temperature: if greedy { 1.0 } else { req.temperature },
        top_k: req.top_k,
        top_p: req.top_p,
        eos_ids: tok.eos_ids().to_vec(),
        pad_id: tok.pad_id(),
        ..GenerateOptions::default()
    };
    let prompts = vec![ids.clone(); req.n];
    let mut rng = StdRng::seed_from_u64(req.seed);
    let gens = tch::no_grad(|| generate(&model.lm, &prompts, &opts, &mut rng))?;
    let responses = gens
        .into_iter()
        .map(|g| {
            Ok(GeneratedText {
                text: tok.decode(&g.tokens, true)?,
                tokens: g.tokens.len(),
                stopped_on_eos: g.stopped_on_eos,
                logprob: g.logprobs.iter().map(|&x| f64::from(x)).sum(),
                ids: g.tokens,
                logprobs: g.logprobs,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Generated {
        prompt_ids: ids,
        responses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_tokens_follow_the_model_limits() {
        let none = GenerationLimits::default();
        // No limits: the room left in a 512-token context after 12 prompt tokens.
        assert_eq!(none.new_tokens(None, 12, 512).unwrap(), 500);
        assert_eq!(none.new_tokens(Some(8), 12, 512).unwrap(), 8);
        assert_eq!(none.new_tokens(Some(900), 12, 512).unwrap(), 500);
        let cfg = GenerationLimits {
            max_new_tokens: Some(64),
            max_length: Some(100),
        };
        assert_eq!(cfg.new_tokens(None, 12, 512).unwrap(), 64);
        assert_eq!(cfg.new_tokens(None, 50, 512).unwrap(), 50);
        assert!(cfg.new_tokens(None, 100, 512).is_err());
    }
}
