//! A character-level tokenizer for the built-in task, written in the Hugging
//! Face `tokenizer.json` format so that the tiny model is loaded through the
//! same `tokenizers` + chat-template code path as any real model.
//!
//! The vocabulary is six special tokens followed by `\n` and the 95 printable
//! ASCII characters, one token each (a BPE model with no merges); other
//! characters map to `<|unk|>`. The `Fuse` decoder joins tokens back without
//! separators, so `decode(encode(s)) == s` for printable ASCII text.

use crate::error::{Error, Result};
use serde_json::{json, Map, Value};
use std::path::Path;

/// Padding token.
pub const PAD_TOKEN: &str = "<|pad|>";
/// End of an assistant turn; the EOS token.
pub const EOS_TOKEN: &str = "<|end|>";
/// Starts a user turn.
pub const USER_TOKEN: &str = "<|user|>";
/// Starts an assistant turn.
pub const ASSISTANT_TOKEN: &str = "<|assistant|>";
/// Starts a system turn.
pub const SYSTEM_TOKEN: &str = "<|system|>";
/// Stands for any character outside the vocabulary.
pub const UNK_TOKEN: &str = "<|unk|>";

/// Special tokens, in id order (ids 0..6).
pub const SPECIAL_TOKENS: [&str; 6] = [
    PAD_TOKEN,
    EOS_TOKEN,
    USER_TOKEN,
    ASSISTANT_TOKEN,
    SYSTEM_TOKEN,
    UNK_TOKEN,
];
/// Id of [`PAD_TOKEN`].
pub const PAD_ID: i64 = 0;
/// Id of [`EOS_TOKEN`].
pub const EOS_ID: i64 = 1;

/// Chat template (Jinja) rendering `<|user|>question<|assistant|>answer<|end|>`.
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}\
{% if message['role'] == 'system' %}<|system|>{{ message['content'] }}\
{% elif message['role'] == 'user' %}<|user|>{{ message['content'] }}\
{% elif message['role'] == 'assistant' %}<|assistant|>{{ message['content'] }}<|end|>\
{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";

/// Chat template of the agent base model (`assets/tiny-arith-agent`):
/// [`CHAT_TEMPLATE`] plus a tool turn. A `tool` message renders as a user
/// turn starting `Tool: ` (`<|user|>Tool: 21`); an assistant message's
/// `tool_calls` render after its content in the Hermes form
/// `<tool_call>{"name": .., "arguments": ..}</tool_call>`. The tools' schemas
/// are left implicit: every character is a token of this model, and it knows
/// its one tool from pretraining.
pub const AGENT_CHAT_TEMPLATE: &str = "{% for message in messages %}\
{% if message['role'] == 'system' %}<|system|>{{ message['content'] }}\
{% elif message['role'] == 'user' %}<|user|>{{ message['content'] }}\
{% elif message['role'] == 'tool' %}<|user|>Tool: {{ message['content'] }}\
{% elif message['role'] == 'assistant' %}<|assistant|>{{ message['content'] }}\
{% for call in message['tool_calls'] or [] %}<tool_call>{\"name\": \"{{ call['function']['name'] }}\", \"arguments\": {{ call['function']['arguments'] | tojson }}}</tool_call>{% endfor %}<|end|>\
{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";

/// Every token in id order: the special tokens, `\n`, then `' '..='~'`.
pub fn vocab() -> Vec<String> {
    let mut tokens: Vec<String> = SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect();
    tokens.push("\n".into());
    tokens.extend((b' '..=b'~').map(|b| char::from(b).to_string()));
    tokens
}

/// Number of tokens in the vocabulary (102).
pub fn vocab_size() -> usize {
    SPECIAL_TOKENS.len() + 1 + usize::from(b'~' - b' ') + 1
}

/// The `tokenizer.json` document.
pub fn tokenizer_json() -> Value {
    let tokens = vocab();
    let mut map = Map::new();
    for (id, token) in tokens.iter().enumerate() {
        map.insert(token.clone(), json!(id));
    }
    let added: Vec<Value> = SPECIAL_TOKENS
        .iter()
        .enumerate()
        .map(|(id, content)| {
            json!({
                "id": id,
                "content": content,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": true
            })
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": { "type": "Fuse" },
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": UNK_TOKEN,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": map,
            "merges": []
        }
    })
}

/// The `tokenizer_config.json` document, with the chat template.
pub fn tokenizer_config_json() -> Value {
    tokenizer_config_json_with(CHAT_TEMPLATE)
}

/// [`tokenizer_config_json`] with another chat template (e.g.
/// [`AGENT_CHAT_TEMPLATE`]).
pub fn tokenizer_config_json_with(chat_template: &str) -> Value {
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": chat_template,
        "bos_token": null,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": UNK_TOKEN,
        "model_max_length": 512,
        "clean_up_tokenization_spaces": false
    })
}

/// The `generation_config.json` document (EOS and pad ids).
pub fn generation_config_json() -> Value {
    json!({
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "do_sample": false
    })
}

/// Write `tokenizer.json`, `tokenizer_config.json` and
/// `generation_config.json` into `dir` (created if needed).
pub fn write_char_tokenizer(dir: &Path) -> Result<()> {
    write_char_tokenizer_with(dir, CHAT_TEMPLATE)
}

/// [`write_char_tokenizer`] with another chat template.
pub fn write_char_tokenizer_with(dir: &Path, chat_template: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (name, doc) in [
        ("tokenizer.json", tokenizer_json()),
        (
            "tokenizer_config.json",
            tokenizer_config_json_with(chat_template),
        ),
        ("generation_config.json", generation_config_json()),
    ] {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| Error::InvalidInput(format!("serialising {name}: {e}")))?;
        std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}
