//! Prompt building: the student sees the question; the teacher sees the
//! question plus the privileged text, through a configurable template.
//!
//! Both produce the *user-message text*; the example's chat context (a
//! system prompt, earlier turns) goes before it, and the chat template of the
//! model's tokenizer turns the conversation into tokens
//! (`model::Tokenizer::apply_chat_template`), so a real model and the
//! built-in one go through the same code.
//!
//! The student's text is made once, when the data is loaded
//! ([`StudentPrompt::apply`]): the student template wraps the dataset's
//! prompt, and `data.system_prompt` becomes the first context message.

use super::Example;
use crate::error::{Error, Result};
use crate::model::{ChatMessage, Tokenizer};

/// Placeholder replaced by the example's prompt.
pub const QUESTION_PLACEHOLDER: &str = "{question}";
/// Placeholder replaced by the example's privileged text (the reference answer
/// unless the dataset gives something else).
pub const ANSWER_PLACEHOLDER: &str = "{answer}";

/// Placeholder of the student template, replaced by the dataset's prompt.
pub const PROMPT_PLACEHOLDER: &str = "{prompt}";

pub use super::config::{DEFAULT_STUDENT_TEMPLATE, DEFAULT_TEACHER_TEMPLATE};

/// The teacher prompt template, checked once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeacherPrompt {
    /// Template text with `{question}` and `{answer}` placeholders.
    template: String,
    /// `data.teacher_question = "raw"`: the text the student template puts
    /// before and after `{prompt}`, removed from the student's message to
    /// give `{question}` the dataset's own prompt.
    strip: Option<(String, String)>,
}

impl Default for TeacherPrompt {
    fn default() -> Self {
        TeacherPrompt {
            template: DEFAULT_TEACHER_TEMPLATE.to_string(),
            strip: None,
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
        Ok(TeacherPrompt {
            template,
            strip: None,
        })
    }

    /// The teacher prompt of a run's data: `data.teacher_template`, its
    /// `{question}` the dataset's own prompt where `data.teacher_question =
    /// "raw"` ([`TeacherPrompt::with_raw_question`]).
    pub fn for_data(cfg: &super::DataConfig) -> Result<Self> {
        let t = TeacherPrompt::new(cfg.teacher_template.clone())?;
        match cfg.teacher_question {
            super::config::TeacherQuestion::Student => Ok(t),
            super::config::TeacherQuestion::Raw => t.with_raw_question(&cfg.student_template),
        }
    }

    /// Give `{question}` the dataset's prompt instead of the student's
    /// message: the text `student_template` puts around its one `{prompt}`
    /// is removed again (an example whose prompt does not carry it, e.g. a
    /// chat dataset's own turn, keeps its prompt). A template with more than
    /// one `{prompt}` is refused, naming `data.teacher_question`.
    pub fn with_raw_question(mut self, student_template: &str) -> Result<Self> {
        let mut parts = student_template.split(PROMPT_PLACEHOLDER);
        let (Some(pre), Some(post), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::config(
                "data.teacher_question",
                format!("\"raw\" needs a student template with exactly one `{PROMPT_PLACEHOLDER}`"),
            ));
        };
        self.strip = Some((pre.to_string(), post.to_string()));
        Ok(self)
    }

    /// What `{question}` receives for an example.
    fn question<'a>(&self, example: &'a Example) -> &'a str {
        let p = example.prompt.as_str();
        match &self.strip {
            Some((pre, post)) => p
                .strip_prefix(pre.as_str())
                .and_then(|q| q.strip_suffix(post.as_str()))
                .unwrap_or(p),
            None => p,
        }
    }

    /// Token ids of the teacher context for an example: its chat context,
    /// then the rendered template as the user turn, through
    /// [`chat_context_ids`].
    pub fn ids(&self, tokenizer: &Tokenizer, example: &Example) -> Result<Vec<i64>> {
        chat_context_ids(tokenizer, &example.context, &self.render(example))
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
                out.push_str(self.question(example));
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

/// The student template and the system prompt, applied to examples as
/// they are loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudentPrompt {
    /// Template with one or more `{prompt}` placeholders.
    template: String,
    /// System message for examples without one.
    system: Option<String>,
}

impl StudentPrompt {
    /// Check the template (it must contain `{prompt}`, or the student would
    /// never see the question).
    pub fn new(template: impl Into<String>, system: Option<String>) -> Result<Self> {
        let template = template.into();
        if !template.contains(PROMPT_PLACEHOLDER) {
            return Err(Error::config(
                "data.student_template",
                format!("the template must contain `{PROMPT_PLACEHOLDER}`"),
            ));
        }
        Ok(StudentPrompt { template, system })
    }

    /// Whether applying changes nothing (the default template, no system prompt).
    pub fn is_identity(&self) -> bool {
        self.template == PROMPT_PLACEHOLDER && self.system.is_none()
    }

    /// Wrap the example's prompt in the template (one pass: braces in the
    /// prompt are left alone) and put the system prompt first in its context
    /// unless it already starts with a system message.
    pub fn apply(&self, example: &mut Example) {
        if self.template != PROMPT_PLACEHOLDER {
            example.prompt = self.template.replace(PROMPT_PLACEHOLDER, &example.prompt);
        }
        if let Some(system) = &self.system {
            if example.context.first().map(|m| m.role.as_str()) != Some("system") {
                example
                    .context
                    .insert(0, ChatMessage::new("system", system.clone()));
            }
        }
    }
}

/// The student's user message: the example's prompt (already through the
/// student template).
pub fn student_prompt(example: &Example) -> &str {
    &example.prompt
}

/// Token ids of the student prompt for an example: its chat context, then
/// its prompt as the user turn (see [`chat_context_ids`]).
pub fn student_prompt_ids(tokenizer: &Tokenizer, example: &Example) -> Result<Vec<i64>> {
    chat_context_ids(tokenizer, &example.context, student_prompt(example))
}

/// Token ids of one user message followed by the start of the assistant's
/// turn, through the tokenizer's chat template. A tokenizer without a chat
/// template (a base model) gets the plain text with its special tokens
/// (e.g. BOS) added by its post-processor.
pub fn chat_prompt_ids(tokenizer: &Tokenizer, user_text: &str) -> Result<Vec<i64>> {
    chat_context_ids(tokenizer, &[], user_text)
}

/// Token ids of a conversation (`context`, then `user_text` as the user's
/// turn) followed by the start of the assistant's turn. Without a chat
/// template the context messages' texts and the user text are joined by
/// blank lines.
pub fn chat_context_ids(
    tokenizer: &Tokenizer,
    context: &[ChatMessage],
    user_text: &str,
) -> Result<Vec<i64>> {
    if !tokenizer.has_chat_template() {
        if context.is_empty() {
            return tokenizer.encode(user_text, true);
        }
        let mut text = String::new();
        for m in context {
            text.push_str(&m.content);
            text.push_str("\n\n");
        }
        text.push_str(user_text);
        return tokenizer.encode(&text, true);
    }
    let mut messages = context.to_vec();
    messages.push(ChatMessage::new("user", user_text));
    let text = tokenizer.apply_chat_template(&messages, true)?;
    // The rendered template already holds every special token it wants.
    tokenizer.encode(&text, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn student_template_wraps_once_and_system_prompt_goes_first() {
        let sp = StudentPrompt::new(
            "{prompt}\n\nPut the final answer in \\boxed{}.",
            Some("Be brief.".into()),
        )
        .unwrap();
        let mut ex = Example::new("1", "What is {prompt}?", "4", "4");
        sp.apply(&mut ex);
        assert_eq!(
            ex.prompt,
            "What is {prompt}?\n\nPut the final answer in \\boxed{}."
        );
        assert_eq!(ex.context, vec![ChatMessage::new("system", "Be brief.")]);
        // A row's own system message is kept.
        let mut own = Example::new("2", "q", "a", "a");
        own.context.push(ChatMessage::new("system", "Mine."));
        sp.apply(&mut own);
        assert_eq!(own.context, vec![ChatMessage::new("system", "Mine.")]);
        assert!(StudentPrompt::new("no placeholder", None).is_err());
        assert!(StudentPrompt::new("{prompt}", None).unwrap().is_identity());
    }
}
