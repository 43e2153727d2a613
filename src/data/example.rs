//! One training example: a prompt, its gold answer and the privileged text.

use crate::model::ChatMessage;
use serde::{Deserialize, Serialize};

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
        }
    }
}
