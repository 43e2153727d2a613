//! One generated continuation, and when generation stops: the EOS token or
//! a stop string found in the decoded text.

use super::tokenizer::Tokenizer;
use crate::error::Result;

/// One generated continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Generated token ids (the EOS included when it stopped on one; the
    /// token completing the stop string when it stopped on one).
    pub tokens: Vec<i64>,
    /// `log_softmax(logits / temperature)` at each generated token, full vocabulary.
    pub logprobs: Vec<f32>,
    /// True when the last token is an EOS id.
    pub stopped_on_eos: bool,
    /// Index into [`super::GenerateOptions::stop`] of the stop string that ended it.
    pub stop_string: Option<usize>,
}

impl Generation {
    /// True when the model ended the response (EOS or a stop string) rather
    /// than the token limit.
    pub fn finished(&self) -> bool {
        self.stopped_on_eos || self.stop_string.is_some()
    }
}

/// Turns response token ids back into text, for stop strings.
pub trait Detokenize {
    /// The text of `ids` (special tokens skipped).
    fn detokenize(&self, ids: &[i64]) -> Result<String>;
}

impl Detokenize for Tokenizer {
    fn detokenize(&self, ids: &[i64]) -> Result<String> {
        self.decode(ids, true)
    }
}

impl<F: Fn(&[i64]) -> String> Detokenize for F {
    fn detokenize(&self, ids: &[i64]) -> Result<String> {
        Ok(self(ids))
    }
}

/// `text` cut just after the earliest occurrence of any stop string (the stop
/// string kept, as the EOS token is), and which one; `text` and `None` when
/// none occurs.
pub fn cut_at_stop<'t>(text: &'t str, stop: &[String]) -> (&'t str, Option<usize>) {
    let hit = stop
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .filter_map(|(i, s)| text.find(s.as_str()).map(|at| (at + s.len(), i)))
        .min();
    match hit {
        Some((end, i)) => (&text[..end], Some(i)),
        None => (text, None),
    }
}

/// Decoded-text stop strings, checked after every token on a window of the
/// response's last tokens long enough to hold any stop string.
pub(crate) struct StopCheck<'a> {
    pub(crate) strings: &'a [String],
    decoder: &'a dyn Detokenize,
    /// Tokens decoded per check: the longest stop string in bytes plus 4 (a
    /// token decodes to at least one byte, except special tokens; the slack
    /// covers characters split across tokens).
    pub(crate) window: usize,
}

impl<'a> StopCheck<'a> {
    pub(crate) fn new(strings: &'a [String], decoder: &'a dyn Detokenize) -> StopCheck<'a> {
        let window = strings.iter().map(String::len).max().unwrap_or(0) + 4;
        StopCheck {
            strings,
            decoder,
            window,
        }
    }

    /// The stop string that `tokens` (a response so far) now contains.
    pub(crate) fn hit(&self, tokens: &[i64]) -> Result<Option<usize>> {
        let tail = &tokens[tokens.len().saturating_sub(self.window)..];
        let text = self.decoder.detokenize(tail)?;
        Ok(cut_at_stop(&text, self.strings).1)
    }
}
