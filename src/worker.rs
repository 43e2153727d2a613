//! Long-lived worker processes speaking JSON lines.
//!
//! One child process serves many requests. Each request is one JSON object on
//! one line of the child's stdin with an `"id"` (a number this side chooses);
//! the child answers each with one JSON object on one line of its stdout
//! carrying the same `"id"`, in any order, so many requests can be in flight
//! at once. A reply with an `"error"` string is a failed request. Lines on
//! stdout that are not such a reply are skipped (logged at debug level);
//! stderr is passed through to this process's stderr.
//!
//! Failures cost requests, never the run:
//! - the child exits or crashes: every request in flight fails
//!   ([`WorkerError::Crashed`], naming the exit status); the next request
//!   starts a fresh child (counted in [`Worker::restarts`]);
//! - a request runs past its timeout: it fails ([`WorkerError::TimedOut`]); if
//!   the child has not answered anything since that request was sent, it is
//!   taken as hung and killed (with its process group), so its other requests
//!   fail as crashed and the next request restarts it.
//!
//! Callers score a failed request 0 and count it. Both a blocking call (for
//! the synchronous `Verifier`) and an async call (environments, batched
//! rewards) are provided; one reader thread per child routes replies by id.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// How to start a worker, and how long one request may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Program to run (looked up in `PATH` when it has no slash).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Wall-clock limit per request, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            program: String::new(),
            args: Vec::new(),
            timeout_ms: 10_000,
        }
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkerError {
    /// The process could not be started.
    #[error("worker `{program}` failed to start: {msg}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        msg: String,
    },
    /// The process exited (or was killed as hung) with the request in flight.
    #[error("worker `{program}` exited with the request in flight ({status})")]
    Crashed {
        /// The program.
        program: String,
        /// Its exit status, or why it was killed.
        status: String,
    },
    /// No reply within the timeout.
    #[error("worker `{program}` timed out after {timeout_ms} ms")]
    TimedOut {
        /// The program.
        program: String,
        /// The limit.
        timeout_ms: u64,
    },
    /// The worker answered with `"error"`.
    #[error("worker `{program}` answered with an error: {msg}")]
    Remote {
        /// The program.
        program: String,
        /// Its message.
        msg: String,
    },
}

type Waiter = Box<dyn FnOnce(std::result::Result<Value, WorkerError>) + Send>;

/// One running child and its in-flight requests.
struct Proc {
    child: Mutex<Child>,
    stdin: Mutex<ChildStdin>,
    pending: Mutex<HashMap<u64, Waiter>>,
    /// When the child last answered anything (hang detection).
    last_reply: Mutex<Instant>,
    alive: AtomicBool,
    /// Set when this side killed the child (the reason shown to its requests).
    killed_because: Mutex<Option<String>>,
}

impl Proc {
    fn fail_all(&self, err: &WorkerError) {
        let waiters: Vec<Waiter> = match self.pending.lock() {
            Ok(mut p) => p.drain().map(|(_, w)| w).collect(),
            Err(_) => Vec::new(),
        };
        for w in waiters {
            w(Err(err.clone()));
        }
    }

    fn kill(&self, why: &str) {
        // New requests go to a fresh child from now on.
        self.alive.store(false, Ordering::Release);
        if let Ok(mut k) = self.killed_because.lock() {
            k.get_or_insert_with(|| why.to_string());
        }
        if let Ok(mut child) = self.child.lock() {
            #[cfg(unix)]
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill(2) on the process group the child leads
                // (`process_group(0)` at spawn); no memory is involved.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = child.kill();
        }
    }
}

struct Inner {
    cfg: WorkerConfig,
    current: Mutex<Option<Arc<Proc>>>,
    next_id: AtomicU64,
    started: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut cur) = self.current.lock() {
            if let Some(p) = cur.take() {
                p.kill("worker dropped");
                if let Ok(mut c) = p.child.lock() {
                    let _ = c.wait();
                }
            }
        }
    }
}

/// A long-lived JSON-lines worker process (restarted on demand).
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("cfg", &self.inner.cfg)
            .field("started", &self.inner.started.load(Ordering::Relaxed))
            .finish()
    }
}

impl Worker {
    /// Check the settings; the process starts with the first request.
    pub fn new(cfg: WorkerConfig, key: &str) -> Result<Worker> {
        if cfg.program.trim().is_empty() {
            return Err(Error::config(format!("{key}.program"), "empty program"));
        }
        if cfg.timeout_ms == 0 {
            return Err(Error::config(format!("{key}.timeout_ms"), "must be > 0"));
        }
        Ok(Worker {
            inner: Arc::new(Inner {
                cfg,
                current: Mutex::new(None),
                next_id: AtomicU64::new(0),
                started: AtomicU64::new(0),
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &WorkerConfig {
        &self.inner.cfg
    }

    /// How many times a child was started again after the first.
    pub fn restarts(&self) -> u64 {
        self.inner.started.load(Ordering::Relaxed).saturating_sub(1)
    }

    /// The current child's process id, if one is running.
    pub fn pid(&self) -> Option<u32> {
        let cur = self.inner.current.lock().ok()?;
        let p = cur.as_ref().filter(|p| p.alive.load(Ordering::Acquire))?;
        let child = p.child.lock().ok()?;
        Some(child.id())
    }

    /// Send `request` (a JSON object; its `"id"` is set here) and wait for the
    /// reply on this thread.
    pub fn call_blocking(
        &self,
        request: Map<String, Value>,
    ) -> std::result::Result<Value, WorkerError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (id, proc, sent) = self.send(
            request,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        match rx.recv_timeout(self.timeout()) {
            Ok(r) => r,
            Err(_) => Err(self.timed_out(id, &proc, sent)),
        }
    }

    /// Send `request` (a JSON object; its `"id"` is set here) and await the reply.
    pub async fn call(
        &self,
        request: Map<String, Value>,
    ) -> std::result::Result<Value, WorkerError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (id, proc, sent) = self.send(
            request,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        match tokio::time::timeout(self.timeout(), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.crashed("reply channel closed".into())),
            Err(_) => Err(self.timed_out(id, &proc, sent)),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.inner.cfg.timeout_ms)
    }

    fn crashed(&self, status: String) -> WorkerError {
        WorkerError::Crashed {
            program: self.inner.cfg.program.clone(),
            status,
        }
    }

    /// A request ran out of time: forget it, and kill the child if it has
    /// not answered anything since the request was sent (hung).
    fn timed_out(&self, id: u64, proc: &Arc<Proc>, sent: Instant) -> WorkerError {
        if let Ok(mut p) = proc.pending.lock() {
            p.remove(&id);
        }
        let silent = proc.last_reply.lock().map(|t| *t < sent).unwrap_or(true);
        if silent {
            tracing::warn!(
                program = %self.inner.cfg.program,
                "worker answered nothing for {} ms; killing it (restarted on the next request)",
                self.inner.cfg.timeout_ms
            );
            proc.kill("killed as hung");
        }
        WorkerError::TimedOut {
            program: self.inner.cfg.program.clone(),
            timeout_ms: self.inner.cfg.timeout_ms,
        }
    }

    /// Register the waiter, then write the line (starting a child if needed).
    fn send(
        &self,
        mut request: Map<String, Value>,
        waiter: Waiter,
    ) -> std::result::Result<(u64, Arc<Proc>, Instant), WorkerError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        request.insert("id".into(), Value::from(id));
        let mut line = Value::Object(request).to_string();
        line.push('\n');
        let proc = self.current_proc()?;
        let sent = Instant::now();
        if let Ok(mut p) = proc.pending.lock() {
            p.insert(id, waiter);
        }
        if !proc.alive.load(Ordering::Acquire) {
            // The child died between the lookup and the registration; its
            // reader may already have failed the others.
            if let Ok(mut p) = proc.pending.lock() {
                p.remove(&id);
            }
            return Err(self.crashed("the worker exited as the request was sent".into()));
        }
        let wrote = proc
            .stdin
            .lock()
            .map_err(|_| std::io::Error::other("stdin lock poisoned"))
            .and_then(|mut s| {
                s.write_all(line.as_bytes())?;
                s.flush()
            });
        if let Err(e) = wrote {
            // The reader thread fails the other requests when it sees EOF.
            if let Ok(mut p) = proc.pending.lock() {
                p.remove(&id);
            }
            proc.alive.store(false, Ordering::Release);
            return Err(self.crashed(format!("writing the request failed: {e}")));
        }
        Ok((id, proc, sent))
    }

    fn current_proc(&self) -> std::result::Result<Arc<Proc>, WorkerError> {
        let mut cur = self
            .inner
            .current
            .lock()
            .map_err(|_| self.crashed("worker lock poisoned".into()))?;
        if let Some(p) = cur.as_ref() {
            if p.alive.load(Ordering::Acquire) {
                return Ok(Arc::clone(p));
            }
        }
        let p = self.spawn()?;
        *cur = Some(Arc::clone(&p));
        Ok(p)
    }

    fn spawn(&self) -> std::result::Result<Arc<Proc>, WorkerError> {
        let cfg = &self.inner.cfg;
        let mut cmd = Command::new(&cfg.program);
        cmd.args(&cfg.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // Its own process group, so a hung worker's children die with it.
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().map_err(|e| WorkerError::Spawn {
            program: cfg.program.clone(),
            msg: e.to_string(),
        })?;
        let n = self.inner.started.fetch_add(1, Ordering::Relaxed);
        if n > 0 {
            tracing::warn!(program = %cfg.program, restarts = n, "worker restarted");
        }
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(self.crashed("no stdio pipes".into()));
        };
        let proc = Arc::new(Proc {
            child: Mutex::new(child),
            stdin: Mutex::new(stdin),
            pending: Mutex::new(HashMap::new()),
            last_reply: Mutex::new(Instant::now()),
            alive: AtomicBool::new(true),
            killed_because: Mutex::new(None),
        });
        let reader = Arc::clone(&proc);
        let program = cfg.program.clone();
        std::thread::Builder::new()
            .name("rlsd-worker-reader".into())
            .spawn(move || read_replies(reader, stdout, program))
            .map_err(|e| self.crashed(format!("reader thread: {e}")))?;
        Ok(proc)
    }
}

/// Route each reply line to its waiter until the child's stdout closes, then
/// fail whatever is still in flight.
fn read_replies(proc: Arc<Proc>, stdout: std::process::ChildStdout, program: String) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Ok(Value::Object(mut reply)) = serde_json::from_str::<Value>(line.trim()) else {
            tracing::debug!(%program, "worker wrote a line that is not a reply: {line}");
            continue;
        };
        let Some(id) = reply.get("id").and_then(Value::as_u64) else {
            tracing::debug!(%program, "worker reply without a numeric id: {line}");
            continue;
        };
        if let Ok(mut t) = proc.last_reply.lock() {
            *t = Instant::now();
        }
        let waiter = proc.pending.lock().ok().and_then(|mut p| p.remove(&id));
        let Some(waiter) = waiter else { continue }; // timed out already
        reply.remove("id");
        match reply.get("error") {
            Some(e) if !e.is_null() => waiter(Err(WorkerError::Remote {
                program: program.clone(),
                msg: e
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string()),
            })),
            _ => waiter(Ok(Value::Object(reply))),
        }
    }
    proc.alive.store(false, Ordering::Release);
    let status = match proc.child.lock() {
        Ok(mut c) => exit_status(&mut c),
        Err(_) => "unknown".to_string(),
    };
    let status = match proc.killed_because.lock().ok().and_then(|k| k.clone()) {
        Some(why) => format!("{why}; {status}"),
        None => status,
    };
    proc.fail_all(&WorkerError::Crashed { program, status });
}

/// The child's exit status once its stdout closed (killed if it lingers).
fn exit_status(child: &mut Child) -> String {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return s.to_string(),
            Ok(None) if start.elapsed() < Duration::from_secs(1) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(None) => {
                let _ = child.kill();
                return match child.wait() {
                    Ok(s) => format!("closed its stdout and was killed; {s}"),
                    Err(e) => format!("closed its stdout; wait failed: {e}"),
                };
            }
            Err(e) => return format!("wait failed: {e}"),
        }
    }
}
