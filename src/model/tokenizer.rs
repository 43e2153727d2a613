//! The tokenizer of a checkpoint: `tokenizer.json` through the `tokenizers`
//! crate, the chat template, and the EOS / pad ids resolved from
//! `generation_config.json`, `config.json` and `tokenizer_config.json`.

use super::chat_template::{ChatMessage, ChatTemplate};
use super::config::ids_from_json;
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// Files of a tokenizer folder that are saved back unchanged.
const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// Text <-> token ids, chat formatting and special ids.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: Option<ChatTemplate>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    eos_ids: Vec<i64>,
    pad_id: Option<i64>,
    /// `(file name, bytes)` of the tokenizer files, written back by `save`.
    files: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .field("eos_ids", &self.eos_ids)
            .field("pad_id", &self.pad_id)
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Model {
            path: path.to_path_buf(),
            msg: format!("not valid JSON: {e}"),
        })
}

/// A special token in `tokenizer_config.json`: a string or `{"content": ..}`.
fn special_token(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl Tokenizer {
    /// Wrap a `tokenizers` tokenizer (no chat template) with the given special ids.
    pub fn from_tokenizers(
        inner: tokenizers::Tokenizer,
        eos_ids: Vec<i64>,
        pad_id: Option<i64>,
    ) -> Tokenizer {
        Tokenizer {
            inner,
            chat_template: None,
            bos_token: None,
            eos_token: None,
            eos_ids,
            pad_id,
            files: vec![],
        }
    }

    /// Load from a checkpoint folder; `None` when it has no `tokenizer.json`.
    ///
    /// EOS ids are the union, in this order, of `generation_config.json`'s
    /// `eos_token_id`, `config_eos` (from `config.json`) and the id of
    /// `tokenizer_config.json`'s `eos_token`. The pad id is the first of
    /// `generation_config.json`'s `pad_token_id`, `config_pad` and
    /// `tokenizer_config.json`'s `pad_token`.
    pub fn from_dir(
        dir: &Path,
        config_eos: &[i64],
        config_pad: Option<i64>,
    ) -> Result<Option<Tokenizer>> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Ok(None);
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| Error::Model {
            path: path.clone(),
            msg: format!("cannot load tokenizer: {e}"),
        })?;
        let tc = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let gen = read_json(&dir.join("generation_config.json"))?.unwrap_or(Value::Null);
        let bos_token = special_token(tc.get("bos_token"));
        let eos_token = special_token(tc.get("eos_token"));
        let pad_token = special_token(tc.get("pad_token"));
        let id_of = |t: &Option<String>| {
            t.as_deref()
                .and_then(|t| inner.token_to_id(t))
                .map(i64::from)
        };

        let mut eos_ids: Vec<i64> = vec![];
        let gen_eos = gen
            .get("eos_token_id")
            .and_then(ids_from_json)
            .unwrap_or_default();
        for id in gen_eos
            .into_iter()
            .chain(config_eos.iter().copied())
            .chain(id_of(&eos_token))
        {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
        let pad_id = gen
            .get("pad_token_id")
            .and_then(Value::as_i64)
            .or(config_pad)
            .or_else(|| id_of(&pad_token));

        let mut files = vec![];
        for name in TOKENIZER_FILES {
            let p = dir.join(name);
            if p.exists() {
                files.push((
                    name.to_string(),
                    std::fs::read(&p).map_err(|e| Error::io(&p, e))?,
                ));
            }
        }
        Ok(Some(Tokenizer {
            inner,
            chat_template: ChatTemplate::from_dir(dir)?,
            bos_token,
            eos_token,
            eos_ids,
            pad_id,
            files,
        }))
    }

    /// Token ids of `text`; `add_special_tokens` applies the post-processor (e.g. BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::InvalidInput(format!("tokenizer encode: {e}")))?;
        Ok(enc.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    /// Text of `ids`; `skip_special_tokens` drops EOS, padding and the like.
    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String> {
        let ids = ids
            .iter()
            .map(|&i| {
                u32::try_from(i).map_err(|_| Error::InvalidInput(format!("bad token id {i}")))
            })
            .collect::<Result<Vec<u32>>>()?;
        self.inner
            .decode(&ids, skip_special_tokens)
            .map_err(|e| Error::InvalidInput(format!("tokenizer decode: {e}")))
    }

    /// Render a conversation with the chat template. Errors when the tokenizer
    /// has no template.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let t = self
            .chat_template
            .as_ref()
            .ok_or_else(|| Error::InvalidInput("this tokenizer has no chat template".into()))?;
        t.render(
            messages,
            add_generation_prompt,
            self.bos_token.as_deref(),
            self.eos_token.as_deref(),
        )
    }

    /// True when a chat template was found.
    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// The chat template, when `tokenizer_config.json` has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// The BOS and EOS token texts the chat template is given.
    pub fn bos_eos_text(&self) -> (Option<&str>, Option<&str>) {
        (self.bos_token.as_deref(), self.eos_token.as_deref())
    }

    /// Tokens that end a generation.
    pub fn eos_ids(&self) -> &[i64] {
        &self.eos_ids
    }

    /// The padding id (falls back to the first EOS id).
    pub fn pad_id(&self) -> Option<i64> {
        self.pad_id.or_else(|| self.eos_ids.first().copied())
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Write the tokenizer files into `dir` (the originals when loaded from a
    /// folder, else a serialised `tokenizer.json`).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut wrote_json = false;
        for (name, bytes) in &self.files {
            let p = dir.join(name);
            std::fs::write(&p, bytes).map_err(|e| Error::io(&p, e))?;
            wrote_json |= name == "tokenizer.json";
        }
        if !wrote_json {
            let p = dir.join("tokenizer.json");
            self.inner.save(&p, false).map_err(|e| Error::Model {
                path: p.clone(),
                msg: format!("cannot save tokenizer: {e}"),
            })?;
        }
        Ok(())
    }
}
