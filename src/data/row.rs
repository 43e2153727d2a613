//! Turning one dataset row into an [`Example`], whatever the file format.
//!
//! Readers translate each row into a tree of [`Cell`]s (a [`RawRow`]);
//! [`example_from_row`] then applies the column mapping and the type rules
//! once for every file type: the prompt is a string or a list of chat
//! messages, the answer a string, a number or a message list (its last
//! message), the id a string or an integer, the privileged text a string
//! (absent or null means "use the answer"). Column names may be dotted paths
//! into nested columns (`reward_model.ground_truth`). Every other top-level
//! column travels with the example as JSON ([`Example::extra`]).

use super::config::Columns;
use super::{Example, IMAGE_PLACEHOLDER};
use crate::error::{Error, Result};
use crate::model::ChatMessage;
use std::path::Path;

/// TRL's conversational column that holds whole conversations
/// (`{"messages": [{role, content}, ...]}`): read as the prompt up to the
/// last user turn, and as the answer from the last assistant message after it.
pub(crate) const MESSAGES: &str = "messages";

/// One cell of a row: a scalar, or a list/struct of cells (nested columns).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    /// The row has no such column.
    Missing,
    /// The column is present with a null value.
    Null,
    /// Text.
    Str(String),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// Bytes that are not valid UTF-8 (an image's bytes; text columns
    /// refuse them with the UTF-8 error).
    Binary(Vec<u8>),
    /// A list (JSON array, Parquet LIST).
    List(Vec<Cell>),
    /// A struct (JSON object, Parquet group), fields in order.
    Struct(Vec<(String, Cell)>),
    /// Any other type (booleans, maps...), named for the message.
    Other(&'static str),
}

impl Cell {
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Cell::Missing => "missing",
            Cell::Null => "null",
            Cell::Str(_) => "string",
            Cell::Int(_) => "integer",
            Cell::Float(_) => "number",
            Cell::Bool(_) => "boolean",
            Cell::Binary(_) => "bytes",
            Cell::List(_) => "list",
            Cell::Struct(_) => "struct",
            Cell::Other(t) => t,
        }
    }

    /// The cell as JSON, for [`Example::extra`]: a missing cell, bytes that
    /// are not UTF-8, a map or any other type without a JSON form is `null`,
    /// as is a non-finite number.
    fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Cell::Str(s) => Value::String(s.clone()),
            Cell::Int(i) => Value::from(*i),
            Cell::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Cell::Bool(b) => Value::Bool(*b),
            Cell::List(items) => Value::Array(items.iter().map(Cell::to_json).collect()),
            Cell::Struct(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(n, c)| (n.clone(), c.to_json()))
                    .collect(),
            ),
            Cell::Missing | Cell::Null | Cell::Binary(_) | Cell::Other(_) => Value::Null,
        }
    }

    /// A field of a struct cell.
    pub(crate) fn field(&self, name: &str) -> Option<&Cell> {
        match self {
            Cell::Struct(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, c)| c),
            _ => None,
        }
    }
}

/// One row of a file as a tree of cells, with its 1-based line (JSONL) or
/// row (Parquet) number.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawRow {
    /// Line or row number, for errors and fallback ids.
    pub(crate) line: usize,
    /// Top-level columns in file order.
    pub(crate) cells: Vec<(String, Cell)>,
}

impl RawRow {
    /// The cell at a column name or dotted path. An exact top-level name wins
    /// (a column may itself contain dots); otherwise the path is followed
    /// through struct fields.
    pub(crate) fn get(&self, path: &str) -> &Cell {
        if let Some((_, c)) = self.cells.iter().find(|(n, _)| n == path) {
            return c;
        }
        let mut parts = path.split('.');
        let first = parts.next().unwrap_or_default();
        let Some((_, top)) = self.cells.iter().find(|(n, _)| n == first) else {
            return &Cell::Missing;
        };
        let mut cur = top;
        for part in parts {
            match cur.field(part) {
                Some(next) => cur = next,
                None => return &Cell::Missing,
            }
        }
        cur
    }

    /// Whether the row has a value (possibly null) at `path`.
    pub(crate) fn has(&self, path: &str) -> bool {
        !matches!(self.get(path), Cell::Missing)
    }

    /// Every column path of the row, nested struct fields dotted
    /// (`reward_model.ground_truth`), for "which columns exist" messages.
    pub(crate) fn column_paths(&self) -> Vec<String> {
        fn walk(prefix: &str, cell: &Cell, out: &mut Vec<String>) {
            match cell {
                Cell::Struct(fields) if !fields.is_empty() => {
                    for (name, c) in fields {
                        walk(&format!("{prefix}.{name}"), c, out);
                    }
                }
                _ => out.push(prefix.to_string()),
            }
        }
        let mut out = Vec::new();
        for (name, cell) in &self.cells {
            walk(name, cell, &mut out);
        }
        out
    }
}

/// Build an example from a row with concrete column paths; `images` is the
/// images column ([`super::images`]); `path` is the file, named in errors and
/// in the fallback id, and the folder relative image paths start from.
pub(crate) fn example_from_row(
    columns: &Columns,
    images: &str,
    path: &Path,
    row: &RawRow,
) -> Result<Example> {
    let line = row.line;
    let bad = |msg: String| Error::Data {
        path: path.to_path_buf(),
        line,
        msg,
    };
    let missing = |col: &str, kind: &str| {
        bad(format!(
            "column `{col}` is required but is {kind}; the row has columns: {}",
            row.column_paths().join(", ")
        ))
    };
    let text = |col: &str, value: &Cell, numbers_ok: bool| -> Result<Option<String>> {
        match value {
            Cell::Missing | Cell::Null => Ok(None),
            Cell::Str(s) => Ok(Some(s.clone())),
            Cell::Int(i) if numbers_ok => Ok(Some(i.to_string())),
            Cell::Float(f) if numbers_ok && f.is_finite() => Ok(Some(f.to_string())),
            Cell::Binary(b) => Err(bad(format!(
                "column `{col}`: invalid UTF-8 ({})",
                utf8_error(b)
            ))),
            other => Err(bad(format!(
                "column `{col}`: expected a string{}, found {}",
                if numbers_ok { " or a number" } else { "" },
                other.type_name()
            ))),
        }
    };

    // The prompt: a string, or chat messages ending in the user's turn.
    let prompt_cell = row.get(&columns.prompt);
    let (context, prompt) = match prompt_cell {
        Cell::List(items) => {
            let mut messages =
                messages_of(items).map_err(|m| bad(format!("column `{}`: {m}", columns.prompt)))?;
            if columns.prompt == MESSAGES {
                // A whole conversation: the prompt ends at the last user turn.
                if let Some(last_user) = messages.iter().rposition(|m| m.role == "user") {
                    messages.truncate(last_user + 1);
                }
            }
            match messages.pop() {
                Some(last) if last.role == "user" => (messages, last.content),
                Some(last) => {
                    return Err(bad(format!(
                        "column `{}`: the last message must be the user's turn, found role `{}`",
                        columns.prompt, last.role
                    )))
                }
                None => {
                    return Err(bad(format!(
                        "column `{}`: the message list is empty",
                        columns.prompt
                    )))
                }
            }
        }
        other => {
            let kind = other.type_name();
            let p = text(&columns.prompt, other, false)?
                .ok_or_else(|| missing(&columns.prompt, kind))?;
            (Vec::new(), p)
        }
    };

    // The answer: a scalar, or the last message of a message list (TRL's
    // conversational `completion`); from the conversation the prompt came
    // from (`messages`), its last assistant message after the last user turn.
    let answer_cell = row.get(&columns.answer);
    let answer = match answer_cell {
        Cell::List(items) => {
            let messages =
                messages_of(items).map_err(|m| bad(format!("column `{}`: {m}", columns.answer)))?;
            if columns.answer == columns.prompt {
                let after = messages
                    .iter()
                    .rposition(|m| m.role == "user")
                    .map_or(0, |i| i + 1);
                messages[after..]
                    .iter()
                    .rev()
                    .find(|m| m.role == "assistant")
                    .map(|m| m.content.clone())
                    .ok_or_else(|| {
                        bad(format!(
                            "column `{}`: no assistant message after the last user turn to take the answer from; name the answer column with data.columns.answer",
                            columns.answer
                        ))
                    })?
            } else {
                messages.last().map(|m| m.content.clone()).ok_or_else(|| {
                    bad(format!(
                        "column `{}`: the message list is empty",
                        columns.answer
                    ))
                })?
            }
        }
        other => {
            let kind = other.type_name();
            text(&columns.answer, other, true)?.ok_or_else(|| missing(&columns.answer, kind))?
        }
    };
    let privileged = text(&columns.privileged, row.get(&columns.privileged), false)?
        .unwrap_or_else(|| answer.clone());
    let id_cell = match row.get(&columns.id) {
        Cell::Float(_) => Cell::Other("number"),
        c => c.clone(),
    };
    let id = match text(&columns.id, &id_cell, true)? {
        Some(id) => id,
        None => format!(
            "{}:{line}",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
    };
    let image_sources = super::images::row_images(row, images, path).map_err(&bad)?;
    super::images::check_images(&prompt, &context, &image_sources).map_err(bad)?;
    Ok(Example {
        id,
        prompt,
        answer,
        privileged,
        context,
        extra: extra_columns(columns, images, row),
        images: image_sources,
    })
}

/// The row's top-level columns other than the four the example is made of
/// and its images (a nested column such as veRL's `reward_model` is kept
/// whole), as JSON.
fn extra_columns(
    columns: &Columns,
    images: &str,
    row: &RawRow,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let used = [
        columns.prompt.as_str(),
        columns.answer.as_str(),
        columns.privileged.as_str(),
        columns.id.as_str(),
        images,
    ];
    row.cells
        .iter()
        .filter(|(name, _)| !used.contains(&name.as_str()))
        .map(|(name, cell)| (name.clone(), cell.to_json()))
        .collect()
}

/// Chat messages from a list cell: each item a struct with string `role` and
/// `content` (content may also be a list of `{type, text}` parts, whose texts
/// are joined; an `{type: "image"}` part, TRL's vision format, becomes an
/// [`IMAGE_PLACEHOLDER`] in its place).
fn messages_of(items: &[Cell]) -> std::result::Result<Vec<ChatMessage>, String> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let Cell::Struct(_) = item else {
                return Err(format!(
                    "expected a list of chat messages ({{role, content}}), item {i} is a {}",
                    item.type_name()
                ));
            };
            let role = match item.field("role") {
                Some(Cell::Str(r)) => r.clone(),
                _ => return Err(format!("message {i} has no string `role`")),
            };
            let content = match item.field("content") {
                Some(Cell::Str(c)) => c.clone(),
                Some(Cell::List(parts)) => {
                    content_parts(parts).map_err(|m| format!("message {i} (role `{role}`): {m}"))?
                }
                _ => {
                    return Err(format!(
                        "message {i} (role `{role}`) has no string `content`"
                    ))
                }
            };
            Ok(ChatMessage::new(role, content))
        })
        .collect()
}

/// The text of a message's content parts: texts joined, each image part an
/// [`IMAGE_PLACEHOLDER`]; a video part is refused by name, parts of other
/// types without text are skipped.
fn content_parts(parts: &[Cell]) -> std::result::Result<String, String> {
    let mut out = String::new();
    for part in parts {
        match part.field("type") {
            Some(Cell::Str(t)) if t == "image" => out.push_str(IMAGE_PLACEHOLDER),
            Some(Cell::Str(t)) if t == "video" => {
                return Err("video content parts are not supported".into())
            }
            _ => {
                if let Some(Cell::Str(t)) = part.field("text") {
                    out.push_str(t);
                }
            }
        }
    }
    Ok(out)
}

/// The UTF-8 error of bytes, in words.
fn utf8_error(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Err(e) => e.to_string(),
        Ok(_) => "bytes column".into(),
    }
}
