//! The `command` verifier: an external process judges each response.
//!
//! Protocol (one process per response, documented in docs/VERIFIERS.md):
//! stdin receives one JSON object
//! `{"id", "prompt", "answer", "privileged", "extra", "response"}` (`extra`:
//! the dataset row's other columns) and is then closed;
//! the process writes one JSON object `{"reward": <number>, "correct": <bool,
//! optional>, "reason": <string, optional>}` to stdout and exits 0. A failure
//! to start, a non-zero exit, a reply that is not such JSON, a non-finite
//! reward, or running past `timeout_ms` scores 0 with the cause as the reason;
//! the process (and its process group) is killed on timeout.
//!
//! With `worker = true` one long-lived process serves every response over
//! JSON lines instead (`crate::worker`; protocol in docs/AGENTS.md):
//! each request is `{"id", "type": "verify", "example": {"id", "prompt",
//! "answer", "privileged", "extra"}, "response"}` and the reply carries the same
//! `reward` / `correct` / `reason` fields. A crash or a timeout scores the
//! requests in flight 0 and the worker is restarted.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Verdict, Verifier};
use crate::data::Example;
use crate::worker::{Worker, WorkerConfig, WorkerError};
use crate::{Error, Result};

/// Settings of the `command` verifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandConfig {
    /// Program to run (looked up in `PATH` when it has no slash).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Wall-clock limit per response, in milliseconds.
    pub timeout_ms: u64,
    /// Keep one process running and send it every response as a JSON line
    /// (the worker protocol) instead of starting a process per response.
    pub worker: bool,
}

impl Default for CommandConfig {
    fn default() -> Self {
        CommandConfig {
            program: String::new(),
            args: Vec::new(),
            timeout_ms: 10_000,
            worker: false,
        }
    }
}

/// Verifier that delegates to an external process.
#[derive(Debug, Clone)]
pub struct CommandVerifier {
    cfg: CommandConfig,
    /// The long-lived process, when `worker = true`.
    worker: Option<Worker>,
}

/// What the process must print.
#[derive(Debug, Deserialize)]
struct Reply {
    reward: f64,
    correct: Option<bool>,
    reason: Option<String>,
}

/// Most bytes read from the process's stdout or stderr.
const MAX_OUTPUT: u64 = 1 << 20;

impl CommandVerifier {
    /// Check the settings; the program itself is only run per response.
    pub fn new(cfg: CommandConfig) -> Result<Self> {
        if cfg.program.trim().is_empty() {
            return Err(Error::config("verifier.command.program", "empty program"));
        }
        if cfg.timeout_ms == 0 {
            return Err(Error::config("verifier.command.timeout_ms", "must be > 0"));
        }
        let worker = if cfg.worker {
            let w = WorkerConfig {
                program: cfg.program.clone(),
                args: cfg.args.clone(),
                timeout_ms: cfg.timeout_ms,
            };
            Some(Worker::new(w, "verifier.command")?)
        } else {
            None
        };
        Ok(CommandVerifier { cfg, worker })
    }

    /// The worker process, when `worker = true` (its restarts are counted there).
    pub fn worker(&self) -> Option<&Worker> {
        self.worker.as_ref()
    }

    fn spawn(&self) -> std::io::Result<Child> {
        let mut cmd = Command::new(&self.cfg.program);
        cmd.args(&self.cfg.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // Its own process group, so a timeout can kill what it started too.
            cmd.process_group(0);
        }
        cmd.spawn()
    }

    fn run(&self, input: String) -> Verdict {
        let mut child = match self.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Verdict::wrong(format!(
                    "command `{}` failed to start: {e}",
                    self.cfg.program
                ))
            }
        };
        if let Some(mut stdin) = child.stdin.take() {
            // A process that exits without reading its input is not an error here.
            std::thread::spawn(move || {
                let _ = stdin.write_all(input.as_bytes());
            });
        }
        let stdout = collect(child.stdout.take());
        let stderr = collect(child.stderr.take());
        let timeout = Duration::from_millis(self.cfg.timeout_ms);
        let start = Instant::now();
        let mut nap = Duration::from_millis(1);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if start.elapsed() >= timeout => {
                    kill(&mut child);
                    return Verdict::wrong(format!("timed out after {} ms", self.cfg.timeout_ms));
                }
                Ok(None) => {
                    std::thread::sleep(nap);
                    nap = (nap * 2).min(Duration::from_millis(10));
                }
                Err(e) => {
                    kill(&mut child);
                    return Verdict::wrong(format!("waiting for command failed: {e}"));
                }
            }
        };
        // The pipes close when the process exits, unless a child of it holds them.
        let grace = timeout.saturating_sub(start.elapsed()) + Duration::from_millis(100);
        let out = stdout.recv_timeout(grace).unwrap_or_default();
        if !status.success() {
            let err = stderr
                .recv_timeout(Duration::from_millis(100))
                .unwrap_or_default();
            let tail: String = err.trim().chars().rev().take(200).collect();
            let tail: String = tail.chars().rev().collect();
            return Verdict::wrong(format!("command exited with {status}: {tail}"));
        }
        parse_reply(&out)
    }
}

fn collect<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(pipe) = pipe {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.take(MAX_OUTPUT).read_to_end(&mut buf);
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        });
    }
    rx
}

fn kill(child: &mut Child) {
    #[cfg(unix)]
    {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) with a negative pid signals the process group the
            // child leads (set by `process_group(0)`); no memory is involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The worker protocol's request for one response.
fn worker_request(example: &Example, response: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("type".into(), "verify".into());
    m.insert("example".into(), example.protocol_json());
    m.insert("response".into(), response.into());
    m
}

/// A worker's reply (or failure) as a verdict.
fn worker_verdict(reply: std::result::Result<serde_json::Value, WorkerError>) -> Verdict {
    match reply {
        Ok(v) => match serde_json::from_value::<Reply>(v.clone()) {
            Ok(r) => verdict_of(r),
            Err(_) => {
                let shown: String = v.to_string().chars().take(80).collect();
                Verdict::wrong(format!("worker reply is not the expected JSON: `{shown}`"))
            }
        },
        Err(e) => Verdict::wrong(e.to_string()),
    }
}

impl CommandVerifier {
    /// Score a group concurrently through the worker (all requests in flight
    /// at once); without `worker = true`, one process per response on
    /// blocking threads.
    pub async fn verify_group(&self, example: &Example, responses: &[String]) -> Vec<Verdict> {
        let Some(w) = &self.worker else {
            let mut out = Vec::with_capacity(responses.len());
            for r in responses {
                let (me, ex, r) = (self.clone(), example.clone(), r.clone());
                let v = tokio::task::spawn_blocking(move || me.verify(&ex, &r)).await;
                out.push(
                    v.unwrap_or_else(|e| Verdict::wrong(format!("verifier task failed: {e}"))),
                );
            }
            return out;
        };
        let calls: Vec<_> = responses
            .iter()
            .map(|r| {
                let (w, req) = (w.clone(), worker_request(example, r));
                tokio::spawn(async move { w.call(req).await })
            })
            .collect();
        let mut out = Vec::with_capacity(calls.len());
        for c in calls {
            out.push(match c.await {
                Ok(r) => worker_verdict(r),
                Err(e) => Verdict::wrong(format!("verifier task failed: {e}")),
            });
        }
        out
    }
}

fn parse_reply(out: &str) -> Verdict {
    let text = out.trim();
    // The whole output, or else its last line (so a checker may log above it).
    let reply: Option<Reply> = serde_json::from_str(text).ok().or_else(|| {
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| serde_json::from_str(l.trim()).ok())
    });
    let Some(reply) = reply else {
        let shown: String = text.chars().take(80).collect();
        return Verdict::wrong(format!("command reply is not the expected JSON: `{shown}`"));
    };
    verdict_of(reply)
}

fn verdict_of(reply: Reply) -> Verdict {
    if !reply.reward.is_finite() {
        return Verdict::wrong(format!("command reward is not finite: {}", reply.reward));
    }
    Verdict {
        reward: reply.reward as f32,
        correct: reply.correct.unwrap_or(reply.reward >= 1.0),
        reason: reply.reason.unwrap_or_else(|| "command".to_string()),
    }
}

impl Verifier for CommandVerifier {
    fn verify(&self, example: &Example, response: &str) -> Verdict {
        if let Some(w) = &self.worker {
            return worker_verdict(w.call_blocking(worker_request(example, response)));
        }
        let mut input = example.protocol_json();
        input["response"] = response.into();
        self.run(input.to_string())
    }
}
