//! JSONL reader: one JSON object per line, blank lines ignored.
//!
//! Each line is decoded on its own, so a broken line is reported with its
//! 1-based line number and (in skip mode) does not hide the rows after it.

use super::config::Columns;
use super::images::IMAGES;
use super::row::{example_from_row, Cell, RawRow};
use super::Example;
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// Read every row of a JSONL file with the given columns: one result per
/// non-blank line, in order. The outer error is for an unreadable file; the
/// inner ones are per row.
/// Images come from the `images` column ([`super::images`]).
pub fn read_jsonl(path: &Path, columns: &Columns) -> Result<Vec<Result<Example>>> {
    Ok(jsonl_rows(path)?
        .into_iter()
        .map(|row| row.and_then(|r| example_from_row(columns, IMAGES, path, &r)))
        .collect())
}

/// Every non-blank line of a JSONL file as a row of cells.
pub(crate) fn jsonl_rows(path: &Path) -> Result<Vec<Result<RawRow>>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut rows = Vec::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        rows.push(parse_line(path, line, raw));
    }
    Ok(rows)
}

fn parse_line(path: &Path, line: usize, raw: &[u8]) -> Result<RawRow> {
    let bad = |msg: String| Error::Data {
        path: path.to_path_buf(),
        line,
        msg,
    };
    let text = std::str::from_utf8(raw).map_err(|e| bad(format!("invalid UTF-8: {e}")))?;
    let value: Value = serde_json::from_str(text).map_err(|e| bad(format!("broken JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(bad(format!(
            "expected a JSON object, found {}",
            json_type(&value)
        )));
    };
    Ok(RawRow {
        line,
        cells: object
            .iter()
            .map(|(k, v)| (k.clone(), json_cell(v)))
            .collect(),
    })
}

fn json_cell(value: &Value) -> Cell {
    match value {
        Value::Null => Cell::Null,
        Value::String(s) => Cell::Str(s.clone()),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Cell::Int(i),
            None => n.as_f64().map(Cell::Float).unwrap_or(Cell::Other("number")),
        },
        Value::Array(items) => Cell::List(items.iter().map(json_cell).collect()),
        Value::Object(fields) => Cell::Struct(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), json_cell(v)))
                .collect(),
        ),
        Value::Bool(b) => Cell::Bool(*b),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
