//! Chat templates: the Jinja text from `tokenizer_config.json`
//! (`chat_template`, a string or a list of named templates) or from
//! `chat_template.jinja` (where transformers 5 writes it), rendered with
//! minijinja the way transformers renders it (trim_blocks, lstrip_blocks,
//! `raise_exception`, Python string methods).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text of the turn.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    /// The Jinja source, kept for saving.
    pub source: String,
    /// Where it came from (named in render errors).
    pub origin: PathBuf,
}

impl ChatTemplate {
    /// Compile `source`; `origin` names the file in errors.
    pub fn new(source: String, origin: &Path) -> Result<ChatTemplate> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        // transformers' `tojson` is Python's `json.dumps` (", " / ": "
        // separators, no HTML escaping); minijinja's own is compact and escapes
        // `<`, `>`, `&`, `'`, which would change the tool schemas the model sees.
        env.add_filter("tojson", python_tojson);
        env.add_template_owned("chat", source.clone())
            .map_err(|e| Error::Model {
                path: origin.to_path_buf(),
                msg: format!("chat template does not compile: {e}"),
            })?;
        Ok(ChatTemplate {
            env,
            source,
            origin: origin.to_path_buf(),
        })
    }

    /// Find the template of a tokenizer folder: `chat_template.jinja` first,
    /// then `tokenizer_config.json`'s `chat_template` (the `default` entry
    /// when it is a list). `None` when the folder has none.
    pub fn from_dir(dir: &Path) -> Result<Option<ChatTemplate>> {
        let jinja = dir.join("chat_template.jinja");
        if jinja.exists() {
            let text = std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?;
            return ChatTemplate::new(text, &jinja).map(Some);
        }
        let tc = dir.join("tokenizer_config.json");
        if !tc.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&tc).map_err(|e| Error::io(&tc, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Model {
            path: tc.clone(),
            msg: format!("not valid JSON: {e}"),
        })?;
        let source = match v.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string),
            _ => None,
        };
        source.map(|s| ChatTemplate::new(s, &tc)).transpose()
    }

    /// Render `messages`; with `add_generation_prompt` the text ends where the
    /// assistant's reply begins.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<String> {
        let tmpl = self.env.get_template("chat").map_err(|e| self.err(e))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token.unwrap_or(""),
            eos_token => eos_token.unwrap_or(""),
        })
        .map_err(|e| self.err(e))
    }

    /// Render `messages` (transformers' message dicts: `role`, `content`,
    /// `tool_calls`, `name`...) with `tools` (JSON schemas) passed to the
    /// template as transformers passes them (`None` when empty).
    pub fn render_with_tools<M: Serialize>(
        &self,
        messages: &[M],
        tools: &[serde_json::Value],
        add_generation_prompt: bool,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<String> {
        let tmpl = self.env.get_template("chat").map_err(|e| self.err(e))?;
        let tools = (!tools.is_empty()).then_some(tools);
        tmpl.render(minijinja::context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token.unwrap_or(""),
            eos_token => eos_token.unwrap_or(""),
        })
        .map_err(|e| self.err(e))
    }

    fn err(&self, e: minijinja::Error) -> Error {
        Error::Model {
            path: self.origin.clone(),
            msg: format!("chat template: {e}"),
        }
    }
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent)`: `", "` and
/// `": "` between items, or one item per line with `indent`.
fn python_tojson(
    value: &minijinja::Value,
    indent: Option<usize>,
) -> std::result::Result<minijinja::Value, minijinja::Error> {
    let mut out = Vec::<u8>::new();
    let res = match indent {
        Some(n) => {
            let pad = " ".repeat(n);
            let fmt = serde_json::ser::PrettyFormatter::with_indent(pad.as_bytes());
            value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, fmt))
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PythonFormatter,
        )),
    };
    res.map_err(|e| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            "cannot serialize to JSON",
        )
        .with_source(e)
    })?;
    let text = String::from_utf8(out).map_err(|e| {
        minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, "JSON is not UTF-8")
            .with_source(e)
    })?;
    Ok(minijinja::Value::from_safe_string(text))
}

/// serde_json's compact output with Python's default separators.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_python_methods_and_raises() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{% if m.role == 'bad' %}{{ raise_exception('no') }}{% endif %}\
             [{{ m.role }}]{{ m.content.strip() }}{{ eos_token }}\n{% endfor %}\
             {% if add_generation_prompt %}[assistant]{% endif %}"
                .into(),
            Path::new("t.jinja"),
        )
        .unwrap();
        let msgs = [ChatMessage::new("user", "  hi  ")];
        let out = t.render(&msgs, true, None, Some("</s>")).unwrap();
        assert_eq!(out, "[user]hi</s>\n[assistant]");
        let e = t
            .render(&[ChatMessage::new("bad", "x")], false, None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.jinja") && e.contains("no"), "{e}");
    }
}
