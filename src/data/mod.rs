//! Datasets, prompt building and the built-in task.
//!
//! - [`config`]: the `[data]` config section ([`DataConfig`]).
//! - [`jsonl`], [`parquet`]: file readers; a bad row names its file and line/row.
//! - [`images`]: a row's images (paths, bytes, `{bytes, path}`), matched to
//!   the prompt's `<image>` placeholders and checked at load.
//! - [`hub`]: Hugging Face dataset ids as `data.path`, through the Hub cache.
//! - [`schema`]: veRL, TRL and plain column layouts, and detecting them.
//! - [`dataset`]: [`Dataset`] with seeded per-epoch shuffling and the
//!   [`DataCursor`] a checkpoint saves.
//! - [`prompt`]: the student prompt and the teacher prompt template.
//! - [`task`]: the built-in multi-step arithmetic task; [`task_image`]: the
//!   same problems rendered as pictures (the built-in vision-language task).
//! - [`char_tokenizer`]: the built-in model's character-level `tokenizer.json`;
//!   [`char_tokenizer_vl`]: the same with Qwen's vision tokens.

mod example;
pub use example::{Example, ImageSource, IMAGE_PLACEHOLDER};

pub mod char_tokenizer;
pub mod char_tokenizer_vl;
pub mod config;
pub mod dataset;
pub mod hub;
pub mod images;
pub mod jsonl;
pub mod parquet;
pub mod prompt;
mod row;
pub mod schema;
pub mod task;
pub mod task_image;
pub mod vl_prompt;

pub use config::{
    ColumnNames, Columns, DataConfig, DataFormat, FileType, OnBadRow, TeacherQuestion,
};
pub use dataset::{DataCursor, Dataset};
pub use prompt::{
    StudentPrompt, TeacherPrompt, DEFAULT_STUDENT_TEMPLATE, DEFAULT_TEACHER_TEMPLATE,
};
pub use task::{ArithmeticTask, TaskConfig};
pub use task_image::TaskImage;
