//! Parquet reader (the format Hugging Face datasets are stored in), through
//! the `parquet` crate's row API.
//!
//! Rows are numbered from 1 across all row groups. String columns become
//! text; binary columns are text when their bytes are valid UTF-8, else
//! bytes (images; a text column refuses them); structs and lists (veRL's `reward_model`, chat-message prompts) become
//! nested cells.

use super::config::Columns;
use super::images::IMAGES;
use super::row::{example_from_row, Cell, RawRow};
use super::Example;
use crate::error::{Error, Result};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use std::fs::File;
use std::path::Path;

/// Read every row of a Parquet file with the given columns, one result per
/// row, in order. The outer error is for an unreadable file; the inner ones
/// are per row.
/// Images come from the `images` column ([`super::images`]).
pub fn read_parquet(path: &Path, columns: &Columns) -> Result<Vec<Result<Example>>> {
    Ok(parquet_rows(path)?
        .into_iter()
        .map(|row| row.and_then(|r| example_from_row(columns, IMAGES, path, &r)))
        .collect())
}

/// Every row of a Parquet file as a row of cells.
pub(crate) fn parquet_rows(path: &Path) -> Result<Vec<Result<RawRow>>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        line: 0,
        msg: format!("not a readable Parquet file: {e}"),
    })?;
    let meta = reader.metadata();
    let expected = usize::try_from(meta.file_metadata().num_rows()).unwrap_or(0);
    let mut rows = Vec::with_capacity(expected);
    // Row groups are read one at a time: after a row fails to decode, the
    // row iterator of its group cannot move past it, so the rest of that group
    // is reported as unreadable and reading resumes at the next group.
    for group in 0..reader.num_row_groups() {
        let group_rows = usize::try_from(meta.row_group(group).num_rows()).unwrap_or(0);
        let first = rows.len() + 1;
        let unreadable = |line: usize, msg: String| Error::Data {
            path: path.to_path_buf(),
            line,
            msg,
        };
        let group_reader = reader
            .get_row_group(group)
            .map_err(|e| unreadable(first, format!("cannot read row group {group}: {e}")))?;
        let iter = group_reader
            .get_row_iter(None)
            .map_err(|e| unreadable(first, format!("cannot read row group {group}: {e}")))?;
        let mut failed_at = None;
        for row in iter {
            let line = rows.len() + 1;
            match row {
                Ok(row) => rows.push(Ok(RawRow {
                    line,
                    cells: row
                        .get_column_iter()
                        .map(|(name, field)| (name.clone(), cell(field)))
                        .collect(),
                })),
                Err(e) => {
                    rows.push(Err(unreadable(line, describe(&e))));
                    failed_at = Some(line);
                    break;
                }
            }
        }
        if let Some(bad) = failed_at {
            for line in rows.len() + 1..first + group_rows {
                rows.push(Err(unreadable(
                    line,
                    format!("not readable after the error at row {bad} in the same row group"),
                )));
            }
        }
    }
    Ok(rows)
}

/// A row-decoding error in words a dataset author recognises.
fn describe(e: &parquet::errors::ParquetError) -> String {
    let text = e.to_string();
    if text.contains("as String") {
        "invalid UTF-8 in a string column".to_string()
    } else {
        format!("unreadable row: {text}")
    }
}

fn cell(field: &Field) -> Cell {
    match field {
        Field::Null => Cell::Null,
        Field::Str(s) => Cell::Str(s.clone()),
        Field::Bytes(b) => match std::str::from_utf8(b.data()) {
            Ok(s) => Cell::Str(s.to_string()),
            Err(_) => Cell::Binary(b.data().to_vec()),
        },
        Field::Byte(v) => Cell::Int(i64::from(*v)),
        Field::Short(v) => Cell::Int(i64::from(*v)),
        Field::Int(v) => Cell::Int(i64::from(*v)),
        Field::Long(v) => Cell::Int(*v),
        Field::UByte(v) => Cell::Int(i64::from(*v)),
        Field::UShort(v) => Cell::Int(i64::from(*v)),
        Field::UInt(v) => Cell::Int(i64::from(*v)),
        Field::ULong(v) => i64::try_from(*v)
            .map(Cell::Int)
            .unwrap_or(Cell::Other("unsigned 64-bit integer")),
        Field::Float(v) => Cell::Float(f64::from(*v)),
        Field::Double(v) => Cell::Float(*v),
        Field::Bool(b) => Cell::Bool(*b),
        Field::Group(row) => Cell::Struct(
            row.get_column_iter()
                .map(|(name, f)| (name.clone(), cell(f)))
                .collect(),
        ),
        Field::ListInternal(list) => Cell::List(list.elements().iter().map(cell).collect()),
        Field::MapInternal(_) => Cell::Other("map"),
        _ => Cell::Other("non-text value"),
    }
}
