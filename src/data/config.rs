//! `[data]` section of a run config: where the prompts come from and how they
//! are read, ordered and repeated.

use super::task::TaskConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Default student template: the dataset's prompt as it is.
pub const DEFAULT_STUDENT_TEMPLATE: &str = "{prompt}";

/// Default teacher context (RLSD-SPEC.md, "The teacher prompt"): the question,
/// a line with the reference solution, then an instruction to solve it in the
/// model's own way.
pub const DEFAULT_TEACHER_TEMPLATE: &str = "{question}\n\nHere is a reference solution: {answer}\n\nWith the reference solution in mind, solve the problem your own way.";

/// Schema of a dataset: which columns hold the prompt and the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// Detected from the first row: `verl` when it has
    /// `reward_model.ground_truth`, `trl` when it has a `completion`,
    /// `solution` or `ground_truth` column, a chat-message `prompt` or a
    /// `messages` conversation,
    /// otherwise `plain`.
    #[default]
    Auto,
    /// veRL's RL Parquet schema: `prompt` (chat messages), `data_source`,
    /// `reward_model.ground_truth` (the answer), `extra_info.index` (the id).
    Verl,
    /// TRL's prompt-only / prompt-completion datasets, standard (`prompt` a
    /// string) or conversational (`prompt` a message list); the answer is the
    /// first of `answer`, `solution`, `ground_truth`, `completion` present.
    /// Rows with a `messages` conversation and no `prompt`: the prompt is the
    /// conversation up to its last user turn, the answer (without one of
    /// those columns) its last assistant message.
    Trl,
    /// The columns `prompt`, `answer`, `privileged`, `id`.
    Plain,
}

/// File type of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
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

/// Concrete column paths (dotted for nested columns) that one file is read
/// with: the format's defaults with the config's overrides applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Columns {
    /// The user prompt: a string, or a list of chat messages `{role,
    /// content}` whose last one is the user's turn. Required in every row.
    pub prompt: String,
    /// The gold answer: a string, a number, or a message list (its last
    /// message). Required in every row.
    pub answer: String,
    /// The text only the teacher sees; a row without it (or with null) uses
    /// the answer.
    pub privileged: String,
    /// A stable id (a string or an integer); a row without it gets
    /// `<file name>:<line or row>`.
    pub id: String,
}

impl Default for Columns {
    /// The `plain` format's columns.
    fn default() -> Self {
        Columns {
            prompt: "prompt".into(),
            answer: "answer".into(),
            privileged: "privileged".into(),
            id: "id".into(),
        }
    }
}

/// `[data.columns]`: column names or dotted paths that replace the format's
/// defaults; unset keys keep them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColumnNames {
    /// Prompt column (default `prompt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Answer column (default: `answer`; veRL `reward_model.ground_truth`;
    /// TRL the first of `answer`, `solution`, `ground_truth`, `completion`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Privileged-text column (default `privileged`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileged: Option<String>,
    /// Id column (default `id`; veRL `extra_info.index`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Images column: paths, bytes or `{bytes, path}` structs, one per
    /// `<image>` placeholder of the prompt (default `images`; TRL rows
    /// without one: `image`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<String>,
}

/// Where training prompts come from and in what order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Dataset file (JSONL or Parquet), or a Hugging Face dataset id
    /// (`openai/gsm8k`: its Parquet files, from the Hub cache first; see
    /// [`super::hub`]). Unset: the built-in arithmetic task.
    pub path: Option<PathBuf>,
    /// Hub datasets: the subset (Hugging Face's "config name", e.g. gsm8k's
    /// `main`). Unset: the repo's only subset, or `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// Hub datasets: the split to read.
    pub split: String,
    /// Hub datasets: branch, tag or commit. Unset: `main`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Schema (`auto`, `verl`, `trl`, `plain`); `auto` detects it from the first row.
    pub format: DataFormat,
    /// File type; `auto` picks it from the extension.
    pub file_type: FileType,
    /// Column names replacing the format's defaults.
    pub columns: ColumnNames,
    /// System message put before every prompt that has none of its own
    /// (unset: none; a dataset's own system message wins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// The student's user message, with a `{prompt}` placeholder for the
    /// dataset's prompt, e.g. `"{prompt}\n\nPut the final answer in \\boxed{}."`.
    /// The teacher's `{question}` is this rendered text too, unless
    /// `teacher_question = "raw"`.
    pub student_template: String,
    /// What the teacher template's `{question}` receives: `"student"`
    /// (default: the student's rendered message, format instruction included)
    /// or `"raw"` (the dataset's prompt alone, as the reference renders its
    /// teacher prompt from the raw problem: iie-ycx/RLSD
    /// `examples/visual_rl/format_prompt/teacher_hint_self_distill.jinja`).
    pub teacher_question: TeacherQuestion,
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

/// What the teacher's `{question}` is (`data.teacher_question`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeacherQuestion {
    /// The student's message (the student template applied).
    #[default]
    Student,
    /// The dataset's prompt without the student template (the reference's).
    Raw,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            path: None,
            subset: None,
            split: "train".into(),
            revision: None,
            format: DataFormat::Auto,
            file_type: FileType::Auto,
            columns: ColumnNames::default(),
            system_prompt: None,
            student_template: DEFAULT_STUDENT_TEMPLATE.to_string(),
            shuffle: true,
            seed: 0,
            epochs: 0,
            on_bad_row: OnBadRow::Stop,
            teacher_template: DEFAULT_TEACHER_TEMPLATE.to_string(),
            teacher_question: TeacherQuestion::Student,
            task: TaskConfig::default(),
        }
    }
}
