//! One training example: a prompt, its gold answer and the privileged text.

use crate::model::ChatMessage;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// An image attached to a prompt, as the dataset gives it. The prompt text
/// holds one `<image>` placeholder per image, in order (veRL's convention;
/// readers of other layouts normalise to it); the model's chat template turns
/// each placeholder into its vision tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageSource {
    /// A file (PNG, JPEG, WebP); readers resolve relative paths against the
    /// dataset file's folder.
    Path(PathBuf),
    /// Encoded image bytes, as a Parquet `images` column stores them.
    Bytes(Vec<u8>),
}

/// The placeholder that marks an image's place in [`Example::prompt`].
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// A prompt with its gold answer, as read from a dataset or made by a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// Stable identifier (dataset id column, or file:line).
    pub id: String,
    /// The user's turn, before the chat template (after the student template).
    pub prompt: String,
    /// The gold answer the verifier compares against.
    pub answer: String,
    /// Text only the teacher sees (defaults to the answer).
    pub privileged: String,
    /// Chat turns before the user's turn: a system prompt, earlier turns of a
    /// conversational dataset. Empty for a plain prompt. Student and teacher
    /// both see them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<ChatMessage>,
    /// The dataset row's other top-level columns (a code task's `tests`, a
    /// veRL row's `extra_info`), as JSON, for verifiers, rewards and
    /// environments; empty for the built-in task.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
    /// The prompt's images, in the order of its [`IMAGE_PLACEHOLDER`]s;
    /// empty for a text-only example.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageSource>,
}

impl Example {
    /// An example with no chat context.
    pub fn new(
        id: impl Into<String>,
        prompt: impl Into<String>,
        answer: impl Into<String>,
        privileged: impl Into<String>,
    ) -> Self {
        Example {
            id: id.into(),
            prompt: prompt.into(),
            answer: answer.into(),
            privileged: privileged.into(),
            context: Vec::new(),
            extra: BTreeMap::new(),
            images: Vec::new(),
        }
    }

    /// An extra column of the dataset row (`None` when the row has none).
    pub fn extra(&self, column: &str) -> Option<&serde_json::Value> {
        self.extra.get(column)
    }

    /// The example as the worker protocol sends it (docs/AGENTS.md):
    /// `{id, prompt, answer, privileged, extra}`.
    pub fn protocol_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "prompt": self.prompt,
            "answer": self.answer,
            "privileged": self.privileged,
            "extra": self.extra,
        })
    }
}
