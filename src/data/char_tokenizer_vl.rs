//! The character-level tokenizer with Qwen's vision tokens, for a tiny
//! vision-language model of the built-in task (`assets/tiny-arith-vl/`).
//!
//! The text vocabulary is [`super::char_tokenizer`]'s 102 tokens, unchanged
//! (a text base model's embedding rows carry over by id); four special
//! tokens follow: `<|vision_start|>` (102), `<|vision_end|>` (103),
//! `<|image_pad|>` (104) and `<|video_pad|>` (105), 106 ids in all. The chat
//! template is the text one with each `<image>` placeholder of a message
//! written as `<|vision_start|><|image_pad|><|vision_end|>`, as Qwen's
//! templates write an image part; the processor then expands each pad to
//! the image's token count (`model::vision::placeholder`).

use super::char_tokenizer::{generation_config_json, tokenizer_config_json, tokenizer_json};
use super::IMAGE_PLACEHOLDER;
use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::path::Path;

/// Opens an image's tokens.
pub const VISION_START_TOKEN: &str = "<|vision_start|>";
/// Closes an image's tokens.
pub const VISION_END_TOKEN: &str = "<|vision_end|>";
/// The placeholder each image's features replace (`image_token_id`).
pub const IMAGE_PAD_TOKEN: &str = "<|image_pad|>";
/// Reserved for video (`video_token_id`); videos are not supported.
pub const VIDEO_PAD_TOKEN: &str = "<|video_pad|>";

/// The vision tokens in id order, after the text vocabulary.
pub const VISION_TOKENS: [&str; 4] = [
    VISION_START_TOKEN,
    VISION_END_TOKEN,
    IMAGE_PAD_TOKEN,
    VIDEO_PAD_TOKEN,
];

/// Id of [`VISION_START_TOKEN`] (`vision_start_token_id`).
pub const VISION_START_ID: i64 = 102;
/// Id of [`VISION_END_TOKEN`] (`vision_end_token_id`).
pub const VISION_END_ID: i64 = 103;
/// Id of [`IMAGE_PAD_TOKEN`] (`image_token_id`).
pub const IMAGE_PAD_ID: i64 = 104;
/// Id of [`VIDEO_PAD_TOKEN`] (`video_token_id`).
pub const VIDEO_PAD_ID: i64 = 105;

/// Number of ids: the text vocabulary and the vision tokens (106).
pub fn vocab_size() -> usize {
    super::char_tokenizer::vocab_size() + VISION_TOKENS.len()
}

/// What the chat template writes for one `<image>`.
pub use super::vl_prompt::IMAGE_PART;

/// The chat template: [`super::char_tokenizer::CHAT_TEMPLATE`] with each
/// message's placeholders written as [`IMAGE_PART`].
pub fn chat_template() -> String {
    super::char_tokenizer::CHAT_TEMPLATE.replace(
        "{{ message['content'] }}",
        &format!("{{{{ message['content'] | replace('{IMAGE_PLACEHOLDER}', '{IMAGE_PART}') }}}}"),
    )
}

/// The `tokenizer.json` document: the text one with the vision tokens added
/// as special tokens (in the vocabulary and in `added_tokens`).
pub fn tokenizer_json_vl() -> Result<Value> {
    let mut doc = tokenizer_json();
    let first = super::char_tokenizer::vocab_size();
    let malformed = || Error::InvalidInput("char tokenizer.json lacks its vocabulary".into());
    let vocab = doc
        .pointer_mut("/model/vocab")
        .and_then(Value::as_object_mut)
        .ok_or_else(malformed)?;
    for (i, token) in VISION_TOKENS.iter().enumerate() {
        vocab.insert(token.to_string(), json!(first + i));
    }
    let added = doc
        .get_mut("added_tokens")
        .and_then(Value::as_array_mut)
        .ok_or_else(malformed)?;
    for (i, token) in VISION_TOKENS.iter().enumerate() {
        added.push(json!({
            "id": first + i,
            "content": token,
            "single_word": false,
            "lstrip": false,
            "rstrip": false,
            "normalized": false,
            "special": true
        }));
    }
    Ok(doc)
}

/// Write the VL `tokenizer.json`, `tokenizer_config.json` (with the VL chat
/// template) and `generation_config.json` into `dir` (created if needed).
pub fn write_char_tokenizer_vl(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut config = tokenizer_config_json();
    config["chat_template"] = json!(chat_template());
    for (name, doc) in [
        ("tokenizer.json", tokenizer_json_vl()?),
        ("tokenizer_config.json", config),
        ("generation_config.json", generation_config_json()),
    ] {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| Error::InvalidInput(format!("serialising {name}: {e}")))?;
        std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}
