//! The `command` environment: a long-lived process plays the episodes.
//!
//! Over the JSON-lines worker protocol (`super::worker`; documented in
//! docs/AGENTS.md, with a complete Python example in examples/python_env/):
//!
//! - `{"type": "start", "episode": n, "example": {"id", "prompt", "answer",
//!   "privileged", "extra"}}` -> `{"messages": [...], "tools": [...], "privileged": str?}`
//! - `{"type": "step", "episode": n, "turn": "<model text>"}` ->
//!   `{"messages": [...]}` to go on, or `{"done": true, "reward": x,
//!   "correct": bool?, "reason": str?, "components": {name: x}?}` to end
//! - `{"type": "finish", "episode": n}` (turn limit reached) -> the `done` reply
//!
//! The process keeps each episode's state under its `episode` number. A
//! crash, a timeout or an `"error"` reply fails the call, which the episode
//! loop scores 0 and counts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::environment::{
    BoxFuture, Environment, Message, Opening, Outcome, Reply, Session, Started,
};
use crate::data::Example;
use crate::error::{Error, Result};
use crate::verify::Verdict;
use crate::worker::{Worker, WorkerConfig, WorkerError};

/// An [`Environment`] served by a worker process.
#[derive(Debug, Clone)]
pub struct CommandEnvironment {
    worker: Worker,
    next_episode: std::sync::Arc<AtomicU64>,
}

impl CommandEnvironment {
    /// Check the settings (`key` names the config section in errors); the
    /// process starts with the first episode.
    pub fn new(cfg: WorkerConfig, key: &str) -> Result<CommandEnvironment> {
        Ok(CommandEnvironment {
            worker: Worker::new(cfg, key)?,
            next_episode: std::sync::Arc::new(AtomicU64::new(0)),
        })
    }

    /// The worker process (restarts are counted there).
    pub fn worker(&self) -> &Worker {
        &self.worker
    }
}

async fn call(worker: &Worker, req: Map<String, Value>) -> Result<Value> {
    worker.call(req).await.map_err(|e| match e {
        WorkerError::TimedOut { .. } => Error::EnvironmentTimeout(e.to_string()),
        e => Error::Environment(e.to_string()),
    })
}

fn request(kind: &str, episode: u64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), kind.into());
    m.insert("episode".into(), episode.into());
    m
}

/// A `done` reply.
#[derive(Debug, Deserialize)]
struct DoneReply {
    reward: f64,
    correct: Option<bool>,
    reason: Option<String>,
    #[serde(default)]
    components: BTreeMap<String, f32>,
}

fn outcome_of(v: Value) -> Result<Outcome> {
    let d: DoneReply =
        serde_json::from_value(v).map_err(|e| Error::Environment(format!("`done` reply: {e}")))?;
    if !d.reward.is_finite() {
        return Err(Error::Environment(format!(
            "reward is not finite: {}",
            d.reward
        )));
    }
    Ok(Outcome {
        verdict: Verdict {
            reward: d.reward as f32,
            correct: d.correct.unwrap_or(d.reward >= 1.0),
            reason: d.reason.unwrap_or_else(|| "command environment".into()),
        },
        components: d.components,
    })
}

fn messages_of(v: &Value) -> Result<Vec<Message>> {
    match v.get("messages") {
        None => Ok(Vec::new()),
        Some(m) => serde_json::from_value(m.clone())
            .map_err(|e| Error::Environment(format!("`messages`: {e}"))),
    }
}

struct CommandSession {
    worker: Worker,
    episode: u64,
}

impl Session for CommandSession {
    fn step<'a>(&'a mut self, model_turn: &'a str) -> BoxFuture<'a, Result<Reply>> {
        Box::pin(async move {
            let mut req = request("step", self.episode);
            req.insert("turn".into(), model_turn.into());
            let v = call(&self.worker, req).await?;
            if v.get("done").and_then(Value::as_bool) == Some(true) {
                Ok(Reply::Done(outcome_of(v)?))
            } else {
                Ok(Reply::Continue(messages_of(&v)?))
            }
        })
    }

    fn finish<'a>(&'a mut self) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(
            async move { outcome_of(call(&self.worker, request("finish", self.episode)).await?) },
        )
    }
}

impl Environment for CommandEnvironment {
    fn start<'a>(&'a self, example: &'a Example) -> BoxFuture<'a, Result<Started>> {
        Box::pin(async move {
            let episode = self.next_episode.fetch_add(1, Ordering::Relaxed);
            let mut req = request("start", episode);
            req.insert("example".into(), example.protocol_json());
            let v = call(&self.worker, req).await?;
            let tools = match v.get("tools") {
                None => Vec::new(),
                Some(Value::Array(t)) => t.clone(),
                Some(_) => return Err(Error::Environment("`tools` is not a list".into())),
            };
            let privileged = v
                .get("privileged")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| example.privileged.clone());
            Ok(Started {
                opening: Opening {
                    messages: messages_of(&v)?,
                    tools,
                    privileged,
                },
                session: Box::new(CommandSession {
                    worker: self.worker.clone(),
                    episode,
                }),
            })
        })
    }
}
