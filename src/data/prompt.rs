//! Prompt building: the student sees the question; the teacher sees the
//! question plus the privileged text, through a configurable template.
//!
//! Both produce the *user-message text*; the chat template of the model's
//! tokenizer turns that into tokens (`model::Tokenizer::apply_chat_template`),
//! so a real model and the built-in one go through the same code.

use super::Example;
use crate::error::{Error, Result};
use crate::model::{ChatMessage, Tokenizer};

/// Placeholder replaced by the example's prompt.
pub const QUESTION_PLACEHOLDER: &str = "{question}";
/// Placeholder replaced by the example's privileged text (the reference answer
/// unless the dataset gives something else).
pub const ANSWER_PLACEHOLDER: &str = "{answer}";

/// Default teacher context (RLSD-SPEC.md, "The teacher prompt"): the question,
/// a line with the reference solution, then an instruction to solve it in the
/// model's own way.
pub const DEFAULT_TEACHER_TEMPLATE: &str = "{question}\n\nHere is a reference solution: {answer}\n\nWith the reference solution in mind, solve the problem your own way.";

/// The teacher prompt template, checked once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeacherPrompt {
    /// Template text with `{question}` and `{answer}` placeholders.
    template: String,
}

impl Default for TeacherPrompt {
    fn default() -> Self {
        TeacherPrompt {
            template: DEFAULT_TEACHER_TEMPLATE.to_string(),
        }
    }
}

impl TeacherPrompt {
    /// Check a template: it must contain both placeholders, or the teacher
    /// would not see the question or the privileged text.
    pub fn new(template: impl Into<String>) -> Result<Self> {
        let template = template.into();
        for placeholder in [QUESTION_PLACEHOLDER, ANSWER_PLACEHOLDER] {
            if !template.contains(placeholder) {
                return Err(Error::config(
                    "data.teacher_template",
                    format!("the template must contain `{placeholder}`"),
                ));
            }
        }
        Ok(TeacherPrompt { template })
    }

    /// Token ids of the teacher context for an example: the rendered
    /// template as one user turn, through [`chat_prompt_ids`].
    pub fn ids(&self, tokenizer: &Tokenizer, example: &Example) -> Result<Vec<i64>> {
        chat_prompt_ids(tokenizer, &self.render(example))
    }

    /// The template text.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The teacher's user message for an example. Substitution is one pass
    /// over the template, so braces inside the question or the answer (LaTeX,
    /// code) are never themselves treated as placeholders.
    pub fn render(&self, example: &Example) -> String {
        let mut out = String::with_capacity(
            self.template.len() + example.prompt.len() + example.privileged.len(),
        );
        let mut rest = self.template.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let tail = &rest[open..];
            if let Some(after) = tail.strip_prefix(QUESTION_PLACEHOLDER) {
                out.push_str(&example.prompt);
                rest = after;
            } else if let Some(after) = tail.strip_prefix(ANSWER_PLACEHOLDER) {
                out.push_str(&example.privileged);
                rest = after;
            } else {
                out.push('{');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        out
    }
}

/// The student's user message: the example's prompt as it is.
pub fn student_prompt(example: &Example) -> &str {
    &example.prompt
}

/// Token ids of the student prompt for an example (see [`chat_prompt_ids`]).
pub fn student_prompt_ids(tokenizer: &Tokenizer, example: &Example) -> Result<Vec<i64>> {
    chat_prompt_ids(tokenizer, student_prompt(example))
}

/// Token ids of one user message followed by the start of the assistant's
/// turn, through the tokenizer's chat template. A tokenizer without a chat
/// template (a base model) gets the plain text with its special tokens
/// (e.g. BOS) added by its post-processor.
pub fn chat_prompt_ids(tokenizer: &Tokenizer, user_text: &str) -> Result<Vec<i64>> {
    if !tokenizer.has_chat_template() {
        return tokenizer.encode(user_text, true);
    }
    let text = tokenizer.apply_chat_template(&[ChatMessage::new("user", user_text)], true)?;
    // The rendered template already holds every special token it wants.
    tokenizer.encode(&text, false)
}
