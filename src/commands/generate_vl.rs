//! `rlsd generate --image FILE` for vision-language models (Qwen2.5-VL, Qwen3-VL).
//!
//! The images go first in the user's turn, each as
//! `<|vision_start|><|image_pad|><|vision_end|>` (what the models' chat
//! templates write for an `{"type": "image"}` part before the text); each pad
//! is expanded to the image's token count, and the responses are sampled
//! with the model's KV cache and multimodal rotary.

use super::generate::{GenerateRequest, Generated, GeneratedText};
use crate::data::prompt::chat_prompt_ids;
use crate::error::{Error, Result};
use crate::model::sampling::SamplingParams;
use crate::model::vision::{
    expand_image_pad_ids, image_token_count, LoadedVlModel, VisionInput, IMAGE_PAD,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::{Path, PathBuf};

/// What a chat template writes for one image part.
use crate::data::vl_prompt::IMAGE_PART;

/// Sample `req.n` responses to `req.prompt` with `images` (one or more files).
pub fn generate_vl_tokens(
    model: &LoadedVlModel,
    dir: &Path,
    req: &GenerateRequest,
    images: &[PathBuf],
) -> Result<Generated> {
    let missing = |what: &str| {
        Error::InvalidInput(format!(
            "vision-language model folder {} has no {what}",
            dir.display()
        ))
    };
    let tok = model
        .tokenizer
        .as_ref()
        .ok_or_else(|| missing("tokenizer.json"))?;
    let processor = model
        .processor
        .as_ref()
        .ok_or_else(|| missing("preprocessor_config.json"))?;
    let processed = images
        .iter()
        .map(|p| processor.preprocess_file(p))
        .collect::<Result<Vec<_>>>()?;
    let merge = processor.config.merge_size;
    let counts: Vec<usize> = processed
        .iter()
        .map(|p| image_token_count(p.grid_thw, merge))
        .collect();
    let pad = tok.token_to_id(IMAGE_PAD).ok_or_else(|| {
        Error::InvalidInput(format!(
            "the tokenizer of {} has no {IMAGE_PAD} token",
            dir.display()
        ))
    })?;
    let text = IMAGE_PART.repeat(images.len()) + &req.prompt;
    let templated = if req.raw {
        tok.encode(&text, true)?
    } else {
        chat_prompt_ids(tok, &text)?
    };
    let ids = expand_image_pad_ids(&templated, pad, &counts)?;
    let vision = if images.is_empty() {
        None
    } else {
        Some(VisionInput::from_processed(
            &processed,
            model.model.lm.device(),
        )?)
    };
    let context =
        usize::try_from(model.model.config.text.max_position_embeddings).unwrap_or(usize::MAX);
    let max_new = req
        .limits
        .new_tokens(req.max_new_tokens, ids.len(), context)?;
    let greedy = req.temperature == 0.0;
    let params = SamplingParams {
        greedy,
        temperature: if greedy { 1.0 } else { req.temperature },
        top_k: req.top_k,
        top_p: req.top_p,
        presence_penalty: 0.0,
    };
    let mut rng = StdRng::seed_from_u64(req.seed);
    let responses = (0..req.n)
        .map(|_| {
            let (tokens, logprobs) = tch::no_grad(|| {
                model.model.generate(
                    &ids,
                    vision.as_ref(),
                    max_new,
                    tok.eos_ids(),
                    &params,
                    &mut rng,
                )
            })?;
            Ok(GeneratedText {
                text: tok.decode(&tokens, true)?,
                tokens: tokens.len(),
                stopped_on_eos: tokens.last().is_some_and(|t| tok.eos_ids().contains(t)),
                logprob: logprobs.iter().map(|&x| f64::from(x)).sum(),
                ids: tokens,
                logprobs,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Generated {
        prompt_ids: ids,
        responses,
    })
}

/// `rlsd generate` with a vision-language model: load it, sample, print each
/// response as the text models' `generate` does (with `json`, the same JSON
/// object: prompt ids, with the image pads expanded, and each response's ids
/// and per-token log-probs).
pub fn generate_vl(
    cfg: &crate::config::RunConfig,
    choice: &super::ModelChoice,
    req: &GenerateRequest,
    images: &[PathBuf],
    json: bool,
) -> Result<()> {
    let dir = choice.model_dir(cfg)?;
    let device = crate::device::parse_device(&cfg.runtime.sampler_device)?;
    let kind = crate::model::parse_kind(&cfg.model.dtype)?;
    let model = LoadedVlModel::load(&dir, device, kind)?;
    super::console::print_generated(&generate_vl_tokens(&model, &dir, req, images)?, json)
}

/// Whether the model folder `dir` holds a vision-language checkpoint.
pub fn is_vl_model(dir: &Path) -> bool {
    crate::model::vision::VlConfig::is_vl_file(&dir.join("config.json"))
}
