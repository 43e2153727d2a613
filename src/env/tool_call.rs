//! Tool calls in the model's own format.
//!
//! Two conventions, as the models' chat templates write them:
//! - [`ToolFormat::Hermes`] (Qwen2.5, Qwen3, Hermes): each call is a JSON
//!   object `{"name": ..., "arguments": {...}}` between `<tool_call>` and
//!   `</tool_call>`; text around the calls is the turn's content.
//! - [`ToolFormat::Llama3Json`] (Llama 3.1 / 3.2 JSON tool calling): the whole
//!   turn is one JSON object `{"name": ..., "parameters": {...}}` (optionally
//!   after `<|python_tag|>`), or several separated by `;`.
//!
//! A call that cannot be read is kept as an error (the environment shows it to
//! the model as a tool result, so the model learns the format), never a panic.

use serde::{Deserialize, Serialize};

use super::environment::Message;

/// Which tool-call convention the model writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolFormat {
    /// `<tool_call>{json}</tool_call>` (Qwen2.5 / Qwen3 / Hermes templates).
    #[default]
    Hermes,
    /// A bare JSON object `{"name", "parameters"}` (Llama 3.1 JSON tool calling).
    Llama3Json,
}

/// One call the model made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The tool's name.
    pub name: String,
    /// Its arguments (a JSON object).
    pub arguments: serde_json::Value,
}

impl ToolCall {
    /// The call as transformers writes it in an assistant message's `tool_calls`.
    pub fn to_message_json(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        })
    }
}

/// A model turn split into its text and its tool calls.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedTurn {
    /// The text outside the calls, trimmed.
    pub content: String,
    /// The calls, in order.
    pub calls: Vec<ToolCall>,
    /// Calls that could not be read, with the reason.
    pub errors: Vec<String>,
}

impl ParsedTurn {
    /// The turn as an assistant [`Message`] (content plus `tool_calls`), the
    /// shape the chat template renders back.
    pub fn to_message(&self) -> Message {
        Message {
            role: "assistant".into(),
            content: self.content.clone(),
            tool_calls: self.calls.iter().map(ToolCall::to_message_json).collect(),
            name: None,
        }
    }
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const LLAMA_PYTHON_TAG: &str = "<|python_tag|>";

impl ToolFormat {
    /// Stop strings that end a model turn at a complete tool call, so the
    /// environment can answer before the model writes on (Llama's calls end on
    /// the `<|eom_id|>` / `<|eot_id|>` tokens, which are EOS ids instead).
    pub fn stop_strings(self) -> Vec<String> {
        match self {
            ToolFormat::Hermes => vec![HERMES_CLOSE.to_string()],
            ToolFormat::Llama3Json => Vec::new(),
        }
    }

    /// Split `text` into content and tool calls.
    pub fn parse(self, text: &str) -> ParsedTurn {
        match self {
            ToolFormat::Hermes => parse_hermes(text),
            ToolFormat::Llama3Json => parse_llama3_json(text),
        }
    }
}

/// Read `{"name": str, "arguments"|"parameters": object}`.
fn call_from_json(body: &str, args_key: &str) -> Result<ToolCall, String> {
    let v: serde_json::Value =
        serde_json::from_str(body.trim()).map_err(|e| format!("tool call is not JSON: {e}"))?;
    let name = v
        .get("name")
        .and_then(|n| n.as_str())
        .ok_or("tool call has no string `name`")?
        .to_string();
    let arguments = match v.get(args_key).or_else(|| v.get("arguments")) {
        None => serde_json::json!({}),
        // Some models write the arguments as a JSON string.
        Some(serde_json::Value::String(s)) => serde_json::from_str(s)
            .map_err(|e| format!("tool call `{name}`: arguments string is not JSON: {e}"))?,
        Some(a) => a.clone(),
    };
    if !arguments.is_object() {
        return Err(format!(
            "tool call `{name}`: arguments are not a JSON object"
        ));
    }
    Ok(ToolCall { name, arguments })
}

fn parse_hermes(text: &str) -> ParsedTurn {
    let mut out = ParsedTurn::default();
    let mut content = String::new();
    let mut rest = text;
    while let Some(open) = rest.find(HERMES_OPEN) {
        content.push_str(&rest[..open]);
        let after = &rest[open + HERMES_OPEN.len()..];
        match after.find(HERMES_CLOSE) {
            Some(close) => {
                match call_from_json(&after[..close], "arguments") {
                    Ok(c) => out.calls.push(c),
                    Err(e) => out.errors.push(e),
                }
                rest = &after[close + HERMES_CLOSE.len()..];
            }
            None => {
                out.errors
                    .push("tool call not closed by </tool_call>".to_string());
                rest = "";
            }
        }
    }
    content.push_str(rest);
    out.content = content.trim().to_string();
    out
}

fn parse_llama3_json(text: &str) -> ParsedTurn {
    let body = text.trim();
    let body = body.strip_prefix(LLAMA_PYTHON_TAG).unwrap_or(body).trim();
    if !body.starts_with('{') {
        return ParsedTurn {
            content: text.trim().to_string(),
            ..ParsedTurn::default()
        };
    }
    let mut out = ParsedTurn::default();
    // One object, or several separated by `;` (a `;` inside a JSON string
    // makes a single-object parse succeed first).
    let parts: Vec<&str> = if serde_json::from_str::<serde_json::Value>(body).is_ok() {
        vec![body]
    } else {
        body.split(';').filter(|p| !p.trim().is_empty()).collect()
    };
    for p in parts {
        match call_from_json(p, "parameters") {
            Ok(c) => out.calls.push(c),
            Err(e) => out.errors.push(e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hermes_calls_and_content() {
        let t = "Let me compute.\n<tool_call>\n{\"name\": \"calc\", \"arguments\": {\"expr\": \"3*4\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"calc\", \"arguments\": \"{\\\"expr\\\": \\\"1+1\\\"}\"}\n</tool_call>";
        let p = ToolFormat::Hermes.parse(t);
        assert_eq!(p.content, "Let me compute.");
        assert_eq!(p.errors, Vec::<String>::new());
        assert_eq!(p.calls.len(), 2);
        assert_eq!(p.calls[0].name, "calc");
        assert_eq!(p.calls[0].arguments, json!({"expr": "3*4"}));
        assert_eq!(p.calls[1].arguments, json!({"expr": "1+1"}));
        let m = p.to_message();
        assert_eq!(
            m.tool_calls[0],
            json!({"type": "function", "function": {"name": "calc", "arguments": {"expr": "3*4"}}})
        );
    }

    #[test]
    fn hermes_bad_calls_are_errors_not_calls() {
        let p = ToolFormat::Hermes
            .parse("<tool_call>{not json}</tool_call> then <tool_call>{\"name\": 3}");
        assert!(p.calls.is_empty());
        assert_eq!(p.errors.len(), 2, "{:?}", p.errors);
        assert!(p.errors[0].contains("not JSON"));
        assert!(p.errors[1].contains("not closed"));
        assert_eq!(p.content, "then");
        let p = ToolFormat::Hermes
            .parse("<tool_call>{\"name\": \"f\", \"arguments\": [1]}</tool_call>");
        assert!(p.errors[0].contains("not a JSON object"), "{:?}", p.errors);
        let p = ToolFormat::Hermes.parse("The answer is 12.");
        assert_eq!(
            (p.content.as_str(), p.calls.len()),
            ("The answer is 12.", 0)
        );
    }

    #[test]
    fn llama3_json_calls() {
        let p = ToolFormat::Llama3Json
            .parse("<|python_tag|>{\"name\": \"calc\", \"parameters\": {\"expr\": \"a;b\"}}");
        assert_eq!(
            p.calls,
            vec![ToolCall {
                name: "calc".into(),
                arguments: json!({"expr": "a;b"})
            }]
        );
        let p = ToolFormat::Llama3Json.parse(
            "{\"name\": \"f\", \"parameters\": {}}; {\"name\": \"g\", \"parameters\": {\"x\": 1}}",
        );
        let names: Vec<_> = p.calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["f", "g"]);
        let p = ToolFormat::Llama3Json.parse("The answer is {12}.");
        assert!(p.calls.is_empty() && p.errors.is_empty());
        assert_eq!(p.content, "The answer is {12}.");
        assert!(ToolFormat::Llama3Json.stop_strings().is_empty());
        assert_eq!(ToolFormat::Hermes.stop_strings(), ["</tool_call>"]);
    }
}
