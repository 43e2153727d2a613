//! One training example: a prompt, its gold answer and the privileged text.

use crate::model::ChatMessage;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
