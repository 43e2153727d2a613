//! Turning one dataset row into an [`Example`], whatever the file format.
//!
//! Readers translate their cells into [`Cell`] values; [`example_from_row`]
//! applies the column mapping and the type rules once for every format:
//! the prompt must be a string, the answer a string or a number, the id a
//! string or an integer, the privileged text a string (absent or null means
//! "use the answer").

use super::config::Columns;
use super::Example;
use crate::error::{Error, Result};
use std::path::Path;

/// One cell of a row, reduced to what an [`Example`] can be built from.
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
    /// Bytes that are not valid UTF-8 (kept for the error message).
    BadUtf8(String),
    /// Any other type (booleans, lists, objects...), named for the message.
    Other(&'static str),
}

impl Cell {
    fn type_name(&self) -> &'static str {
        match self {
            Cell::Missing => "missing",
            Cell::Null => "null",
            Cell::Str(_) => "string",
            Cell::Int(_) => "integer",
            Cell::Float(_) => "number",
            Cell::BadUtf8(_) => "bytes",
            Cell::Other(t) => t,
        }
    }
}

/// Build an example from a row; `cell(name)` looks a column up.
/// `line` is the 1-based line (JSONL) or row (Parquet) number used in errors
/// and in the fallback id.
pub(crate) fn example_from_row(
    columns: &Columns,
    path: &Path,
    line: usize,
    cell: impl Fn(&str) -> Cell,
) -> Result<Example> {
    let bad = |msg: String| Error::Data {
        path: path.to_path_buf(),
        line,
        msg,
    };
    let text = |col: &str, value: Cell, numbers_ok: bool| -> Result<Option<String>> {
        match value {
            Cell::Missing | Cell::Null => Ok(None),
            Cell::Str(s) => Ok(Some(s)),
            Cell::Int(i) if numbers_ok => Ok(Some(i.to_string())),
            Cell::Float(f) if numbers_ok && f.is_finite() => Ok(Some(f.to_string())),
            Cell::BadUtf8(e) => Err(bad(format!("column `{col}`: invalid UTF-8 ({e})"))),
            other => Err(bad(format!(
                "column `{col}`: expected a string{}, found {}",
                if numbers_ok { " or a number" } else { "" },
                other.type_name()
            ))),
        }
    };
    let required = |col: &str, numbers_ok: bool| -> Result<String> {
        let value = cell(col);
        let kind = value.type_name();
        text(col, value, numbers_ok)?
            .ok_or_else(|| bad(format!("column `{col}` is required but is {kind}")))
    };
    let prompt = required(&columns.prompt, false)?;
    let answer = required(&columns.answer, true)?;
    let privileged = text(&columns.privileged, cell(&columns.privileged), false)?
        .unwrap_or_else(|| answer.clone());
    let id_cell = match cell(&columns.id) {
        Cell::Float(_) => Cell::Other("number"),
        c => c,
    };
    let id = match text(&columns.id, id_cell, true)? {
        Some(id) => id,
        None => format!(
            "{}:{line}",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
    };
    Ok(Example {
        id,
        prompt,
        answer,
        privileged,
    })
}
