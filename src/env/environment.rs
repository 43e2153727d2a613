//! The [`Environment`] trait: multi-turn episodes the model plays.
//!
//! An environment starts an episode from an [`Example`] (the opening chat
//! messages, the tools the model may call, the privileged context the teacher
//! sees), then answers each model turn: with more messages (tool results,
//! observations) for the model to read, or by ending the episode with a
//! reward. Calls are async so an environment can wait on a process, a
//! sandbox or a service without holding a thread; [`step_with_timeout`] puts
//! a limit on each call, and a call that runs past it ends the episode with
//! reward 0, counted in [`EnvCounters`] (as verifiers' timeouts are).
//!
//! [`play_text`] is the turn loop at the text level: it drives one episode
//! with any async turn generator (the sampler, or a script in tests).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::data::Example;
use crate::error::Result;
use crate::verify::Verdict;

/// A boxed, sendable future: the return type of the object-safe async traits here.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One chat message as the chat template reads it (transformers' shape):
/// `role` is `system`, `user`, `assistant` or `tool`; an assistant message may
/// carry `tool_calls`, a tool message may name the call it answers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: String,
    /// The text of the turn.
    #[serde(default)]
    pub content: String,
    /// Tool calls of an assistant turn, as `{"type": "function", "function": {"name", "arguments"}}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<serde_json::Value>,
    /// For a `tool` message: the name of the tool that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Message {
    /// A message with `role` and `content` and no tool calls.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
            ..Message::default()
        }
    }
}

/// How an episode opens.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Opening {
    /// The chat before the model's first turn (system, user, earlier turns).
    pub messages: Vec<Message>,
    /// JSON schemas of the tools the model may call, passed to the chat
    /// template as `tools` (transformers' convention).
    #[serde(default)]
    pub tools: Vec<serde_json::Value>,
    /// Text only the teacher sees (RLSD's privileged context).
    #[serde(default)]
    pub privileged: String,
}

/// The environment's answer to one model turn.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Show the model these messages (tool results, observations) and let it go on.
    Continue(Vec<Message>),
    /// The episode is over.
    Done(Outcome),
}

/// How an episode ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The episode's reward and correctness.
    pub verdict: Verdict,
    /// Named parts of the reward (logged as `reward/<name>`), may be empty.
    pub components: BTreeMap<String, f32>,
}

impl Outcome {
    /// An outcome with no named components.
    pub fn new(verdict: Verdict) -> Outcome {
        Outcome {
            verdict,
            components: BTreeMap::new(),
        }
    }
}

/// One running episode of an environment: its state lives here.
pub trait Session: Send {
    /// Answer the model's latest turn (its full text, tool calls included).
    fn step<'a>(&'a mut self, model_turn: &'a str) -> BoxFuture<'a, Result<Reply>>;

    /// The episode was cut short (turn or token limit): score what there is.
    /// The default scores 0.
    fn finish<'a>(&'a mut self) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async { Ok(Outcome::new(Verdict::wrong("episode cut short"))) })
    }
}

/// A started episode: how it opens, and the session that answers its turns.
pub struct Started {
    /// The opening messages, tools and privileged context.
    pub opening: Opening,
    /// The episode's state.
    pub session: Box<dyn Session>,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("opening", &self.opening)
            .finish_non_exhaustive()
    }
}

/// A multi-turn environment. Implementations must be shareable across the
/// sampler's tasks; per-episode state belongs in the [`Session`].
pub trait Environment: Send + Sync {
    /// Start an episode for `example`.
    fn start<'a>(&'a self, example: &'a Example) -> BoxFuture<'a, Result<Started>>;
}

/// Counts of environment calls that failed or ran out of time (each scored 0).
#[derive(Debug, Default)]
pub struct EnvCounters {
    /// Calls abandoned at their timeout.
    pub timed_out: AtomicU64,
    /// Calls that returned an error.
    pub failed: AtomicU64,
}

impl EnvCounters {
    /// `(timed_out, failed)` so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.timed_out.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Run one environment call with a time limit: past `timeout`, or on an
/// error, the episode ends with reward 0 and the counter says why (an
/// [`crate::Error::EnvironmentTimeout`] from the call itself, e.g. a worker's
/// own timeout, counts as a timeout).
pub async fn with_timeout<T>(
    call: impl Future<Output = Result<T>>,
    timeout: Duration,
    counters: &EnvCounters,
) -> std::result::Result<T, Outcome> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e @ crate::Error::EnvironmentTimeout(_))) => {
            counters.timed_out.fetch_add(1, Ordering::Relaxed);
            Err(Outcome::new(Verdict::wrong(e.to_string())))
        }
        Ok(Err(e)) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            Err(Outcome::new(Verdict::wrong(format!(
                "environment failed: {e}"
            ))))
        }
        Err(_) => {
            counters.timed_out.fetch_add(1, Ordering::Relaxed);
            Err(Outcome::new(Verdict::wrong(format!(
                "environment timed out after {} ms",
                timeout.as_millis()
            ))))
        }
    }
}

/// [`Session::step`] under [`with_timeout`]: a timeout or error is `Done` with reward 0.
pub async fn step_with_timeout(
    session: &mut dyn Session,
    model_turn: &str,
    timeout: Duration,
    counters: &EnvCounters,
) -> Reply {
    match with_timeout(session.step(model_turn), timeout, counters).await {
        Ok(reply) => reply,
        Err(outcome) => Reply::Done(outcome),
    }
}

/// A played episode at the text level: the whole conversation and its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// The opening messages, tools and privileged context.
    pub opening: Opening,
    /// Every message after the opening: model turns (`assistant`) and the
    /// environment's answers, in order.
    pub turns: Vec<Message>,
    /// How it ended.
    pub outcome: Outcome,
}

/// Play one episode: `model` writes each assistant turn from the messages so
/// far; the environment answers; at most `max_turns` model turns (then the
/// session's [`Session::finish`] scores it). Every environment call has
/// `timeout`; a timeout or failure ends the episode with reward 0.
pub async fn play_text<F>(
    env: &dyn Environment,
    example: &Example,
    mut model: F,
    max_turns: usize,
    timeout: Duration,
    counters: &EnvCounters,
) -> Result<Transcript>
where
    F: for<'m> FnMut(&'m Opening, &'m [Message]) -> BoxFuture<'m, Result<String>>,
{
    let Started {
        opening,
        mut session,
    } = match with_timeout(env.start(example), timeout, counters).await {
        Ok(s) => s,
        Err(outcome) => {
            return Ok(Transcript {
                opening: Opening::default(),
                turns: Vec::new(),
                outcome,
            })
        }
    };
    let mut turns = Vec::new();
    for _ in 0..max_turns {
        let text = model(&opening, &turns).await?;
        turns.push(Message::new("assistant", text.clone()));
        match step_with_timeout(session.as_mut(), &text, timeout, counters).await {
            Reply::Continue(messages) => turns.extend(messages),
            Reply::Done(outcome) => {
                return Ok(Transcript {
                    opening,
                    turns,
                    outcome,
                })
            }
        }
    }
    let outcome = match with_timeout(session.finish(), timeout, counters).await {
        Ok(o) | Err(o) => o,
    };
    Ok(Transcript {
        opening,
        turns,
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers "ask" with a tool result, "slow" by sleeping, anything else ends
    /// with reward 1 if it contains the answer.
    struct Echo;

    struct EchoSession {
        answer: String,
    }

    impl Session for EchoSession {
        fn step<'a>(&'a mut self, turn: &'a str) -> BoxFuture<'a, Result<Reply>> {
            Box::pin(async move {
                match turn {
                    "ask" => Ok(Reply::Continue(vec![Message::new("tool", "7")])),
                    "slow" => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        Ok(Reply::Continue(vec![]))
                    }
                    "fail" => Err(crate::Error::Runtime("boom".into())),
                    t if t.contains(&self.answer) => {
                        Ok(Reply::Done(Outcome::new(Verdict::correct("found"))))
                    }
                    _ => Ok(Reply::Done(Outcome::new(Verdict::wrong("not found")))),
                }
            })
        }
    }

    impl Environment for Echo {
        fn start<'a>(&'a self, ex: &'a Example) -> BoxFuture<'a, Result<Started>> {
            Box::pin(async move {
                Ok(Started {
                    opening: Opening {
                        messages: vec![Message::new("user", ex.prompt.clone())],
                        tools: vec![],
                        privileged: ex.privileged.clone(),
                    },
                    session: Box::new(EchoSession {
                        answer: ex.answer.clone(),
                    }),
                })
            })
        }
    }

    fn scripted(
        lines: &'static [&'static str],
    ) -> impl for<'m> FnMut(&'m Opening, &'m [Message]) -> BoxFuture<'m, Result<String>> {
        let mut i = 0;
        move |_, _| {
            let line = lines[i.min(lines.len() - 1)];
            i += 1;
            Box::pin(async move { Ok(line.to_string()) })
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn two_turns_with_a_tool_result() {
        let ex = Example::new("q", "3 + 4?", "7", "7");
        let c = EnvCounters::default();
        let t = rt()
            .block_on(play_text(
                &Echo,
                &ex,
                scripted(&["ask", "it is 7"]),
                4,
                Duration::from_secs(1),
                &c,
            ))
            .unwrap();
        let roles: Vec<_> = t.turns.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["assistant", "tool", "assistant"]);
        assert_eq!(t.outcome.verdict.reward, 1.0);
        assert_eq!(c.snapshot(), (0, 0));
    }

    #[test]
    fn timeouts_and_failures_score_zero_and_are_counted() {
        let ex = Example::new("q", "3 + 4?", "7", "7");
        let c = EnvCounters::default();
        let rt = rt();
        let t = rt
            .block_on(play_text(
                &Echo,
                &ex,
                scripted(&["slow"]),
                4,
                Duration::from_millis(50),
                &c,
            ))
            .unwrap();
        assert_eq!(t.outcome.verdict.reward, 0.0);
        assert!(
            t.outcome.verdict.reason.contains("timed out after 50 ms"),
            "{:?}",
            t.outcome
        );
        let t = rt
            .block_on(play_text(
                &Echo,
                &ex,
                scripted(&["fail"]),
                4,
                Duration::from_millis(50),
                &c,
            ))
            .unwrap();
        assert!(t.outcome.verdict.reason.contains("boom"), "{:?}", t.outcome);
        assert_eq!(c.snapshot(), (1, 1));
    }

    #[test]
    fn turn_limit_asks_the_session_to_finish() {
        let ex = Example::new("q", "3 + 4?", "7", "7");
        let c = EnvCounters::default();
        let t = rt()
            .block_on(play_text(
                &Echo,
                &ex,
                scripted(&["ask"]),
                2,
                Duration::from_secs(1),
                &c,
            ))
            .unwrap();
        assert_eq!(t.turns.len(), 4);
        assert_eq!(t.outcome.verdict.reason, "episode cut short");
    }
}
