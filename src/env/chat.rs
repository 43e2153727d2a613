//! Rendering episodes through the model's chat template, turn by turn.
//!
//! The model's own tokens are never re-rendered (a template may rewrite a
//! turn, e.g. re-serialise a tool call's JSON): after a model turn, the text
//! the environment adds is the template's end-of-turn marker (the part the
//! model did not write itself), then the new messages (tool results,
//! observations) and the next generation prompt. Both pieces are found by
//! rendering a small fixed conversation with and without the new messages and
//! taking the difference, as transformers-based trainers do; a template whose
//! rendering of earlier turns changes when messages are added is refused with
//! a clear error rather than producing misaligned tokens.

use super::environment::{Message, Opening};
use crate::data::{Example, TeacherPrompt};
use crate::error::{Error, Result};
use crate::model::ChatTemplate;

/// Placeholder turns of the fixed conversation the differences are taken on.
const PROBE_USER: &str = "\u{2063}probe-user\u{2063}";
const PROBE_ASSISTANT: &str = "\u{2063}probe-assistant\u{2063}";

/// A chat template with the tools of one episode.
#[derive(Debug, Clone)]
pub struct EpisodeChat<'t> {
    template: &'t ChatTemplate,
    tools: Vec<serde_json::Value>,
    bos: Option<String>,
    eos: Option<String>,
}

impl<'t> EpisodeChat<'t> {
    /// Render with `template`, passing `tools` (and the tokenizer's BOS/EOS text).
    pub fn new(
        template: &'t ChatTemplate,
        tools: Vec<serde_json::Value>,
        bos: Option<String>,
        eos: Option<String>,
    ) -> EpisodeChat<'t> {
        EpisodeChat {
            template,
            tools,
            bos,
            eos,
        }
    }

    /// Render `messages` with these tools.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.template.render_with_tools(
            messages,
            &self.tools,
            add_generation_prompt,
            self.bos.as_deref(),
            self.eos.as_deref(),
        )
    }

    /// The prompt: the opening messages and the first generation prompt.
    pub fn opening_text(&self, opening: &Opening) -> Result<String> {
        self.render(&opening.messages, true)
    }

    /// The teacher's context for an episode: the opening as the student saw
    /// it (system turn, tools, earlier messages) with its last user message
    /// replaced by `teacher`'s template filled with that message (the
    /// question) and the opening's privileged text, then the generation
    /// prompt. An opening without a user message gets one holding the
    /// filled template with an empty question. The teacher then scores the
    /// episode's response tokens (model turns and the environment's answers)
    /// after this context.
    pub fn teacher_opening_text(
        &self,
        opening: &Opening,
        teacher: &TeacherPrompt,
    ) -> Result<String> {
        let mut messages = opening.messages.clone();
        let at = match messages.iter().rposition(|m| m.role == "user") {
            Some(at) => at,
            None => {
                messages.push(Message::new("user", ""));
                messages.len() - 1
            }
        };
        let question = Example::new(
            "teacher",
            messages[at].content.clone(),
            "",
            opening.privileged.clone(),
        );
        messages[at].content = teacher.render(&question);
        self.render(&messages, true)
    }

    /// What the template writes after an assistant turn's content (Qwen's
    /// `<|im_end|>\n`).
    pub fn turn_end(&self) -> Result<String> {
        let base = [Message::new("user", PROBE_USER)];
        let prompt = self.render(&base, true)?;
        let with_turn = self.render(
            &[base[0].clone(), Message::new("assistant", PROBE_ASSISTANT)],
            false,
        )?;
        let turn = self.strip(&with_turn, &prompt, "an assistant turn")?;
        turn.strip_prefix(PROBE_ASSISTANT)
            .map(str::to_string)
            .ok_or_else(|| self.misaligned("the assistant turn does not start with its content"))
    }

    /// The text that follows a closed assistant turn when the environment
    /// answers with `messages`: their rendering and the next generation prompt.
    pub fn continuation(&self, messages: &[Message]) -> Result<String> {
        let mut conv = vec![
            Message::new("user", PROBE_USER),
            Message::new("assistant", PROBE_ASSISTANT),
        ];
        let before = self.render(&conv, false)?;
        conv.extend_from_slice(messages);
        let after = self.render(&conv, true)?;
        self.strip(&after, &before, "the environment's messages")
            .map(str::to_string)
    }

    /// The given text between a model turn and the next: the part of the
    /// turn-end marker `model_text` does not already end with, then
    /// [`EpisodeChat::continuation`] of `messages`.
    pub fn given_after_turn(&self, model_text: &str, messages: &[Message]) -> Result<String> {
        let end = self.turn_end()?;
        let done = (0..=end.len())
            .rev()
            .filter(|&k| end.is_char_boundary(k))
            .find(|&k| model_text.ends_with(&end[..k]))
            .unwrap_or(0);
        Ok(format!("{}{}", &end[done..], self.continuation(messages)?))
    }

    fn strip<'a>(&self, full: &'a str, prefix: &str, what: &str) -> Result<&'a str> {
        full.strip_prefix(prefix).ok_or_else(|| {
            self.misaligned(&format!(
                "adding {what} changes how the earlier turns render, so turns cannot be appended"
            ))
        })
    }

    fn misaligned(&self, msg: &str) -> Error {
        Error::Model {
            path: self.template.origin.clone(),
            msg: format!("chat template: {msg}"),
        }
    }
}
