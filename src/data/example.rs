//! One training example: a prompt, its gold answer and the privileged text.

use serde::{Deserialize, Serialize};

/// A prompt with its gold answer, as read from a dataset or made by a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// Stable identifier (dataset id column, or file:line).
    pub id: String,
    /// The user prompt, before the chat template.
    pub prompt: String,
    /// The gold answer the verifier compares against.
    pub answer: String,
    /// Text only the teacher sees (defaults to the answer).
    pub privileged: String,
}
