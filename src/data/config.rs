//! `[data]` section of a run config: where the prompts come from and how they
//! are read, ordered and repeated.

use super::prompt::DEFAULT_TEACHER_TEMPLATE;
use super::task::TaskConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// File format of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// Chosen from the file extension (`.jsonl`/`.json`/`.ndjson` or `.parquet`/`.pq`).
    #[default]
    Auto,
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet (how Hugging Face datasets are stored).
    Parquet,
}

/// What to do with a malformed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnBadRow {
    /// Fail loading with an error naming the file and line/row.
    #[default]
    Stop,
    /// Log the row's error, count it and go on.
    Skip,
}

/// Which dataset columns hold the prompt, the gold answer, the privileged text and the id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Columns {
    /// Column with the user prompt (a string). Required in every row.
    pub prompt: String,
    /// Column with the gold answer (a string or a number). Required in every row.
    pub answer: String,
    /// Column with the text only the teacher sees; a row without it (or with
    /// null) uses the answer.
    pub privileged: String,
    /// Column with a stable id (a string or an integer); a row without it gets
    /// `<file name>:<line or row>`.
    pub id: String,
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            prompt: "prompt".into(),
            answer: "answer".into(),
            privileged: "privileged".into(),
            id: "id".into(),
        }
    }
}

/// Where training prompts come from and in what order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Dataset file (JSONL or Parquet). Unset: the built-in arithmetic task.
    pub path: Option<PathBuf>,
    /// File format; `auto` picks it from the extension.
    pub format: DataFormat,
    /// Column names.
    pub columns: Columns,
    /// Shuffle the examples anew every epoch (seeded).
    pub shuffle: bool,
    /// Seed of the per-epoch shuffle.
    pub seed: u64,
    /// Passes over the data; 0 repeats forever (the run's step budget stops it).
    pub epochs: u64,
    /// Stop at the first malformed row, or skip (and count) malformed rows.
    pub on_bad_row: OnBadRow,
    /// Teacher prompt template with `{question}` and `{answer}` placeholders;
    /// `{answer}` receives the privileged text.
    pub teacher_template: String,
    /// The built-in task, used when `path` is unset.
    pub task: TaskConfig,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            path: None,
            format: DataFormat::Auto,
            columns: Columns::default(),
            shuffle: true,
            seed: 0,
            epochs: 0,
            on_bad_row: OnBadRow::Stop,
            teacher_template: DEFAULT_TEACHER_TEMPLATE.to_string(),
            task: TaskConfig::default(),
        }
    }
}
