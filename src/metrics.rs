//! `metrics.jsonl`: one JSON object per line, one line per record.
//!
//! [`MetricsWriter`] appends any `Serialize` value as a single line in one
//! write; a write that fails (disk full) is cut back off the file, so the
//! log holds whole lines only. A crash can still lose the line being written
//! (a "torn" last line). On resume from step `s` the log is first cut back to
//! the records with `step <= s` (rewritten through a temporary file and a
//! rename, so earlier lines are never lost), because the steps after the
//! checkpoint are about to be trained again. [`read_metrics`] is tolerant: it
//! skips lines that do not parse, counts them and logs a warning.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{Error, Result};

/// Key holding the training step in a metrics record.
pub const STEP_KEY: &str = "step";

/// Appends JSON records to `metrics.jsonl`, one per line, one write per line.
#[derive(Debug)]
pub struct MetricsWriter {
    path: PathBuf,
    /// Unbuffered: each line goes to the OS in one `write_all`.
    out: File,
    /// Lines written by this writer (used in error messages).
    lines: usize,
}

impl MetricsWriter {
    /// Start a fresh log at `path`, replacing any existing file. Creates the
    /// parent folder.
    pub fn create(path: &Path) -> Result<Self> {
        create_parent(path)?;
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(Self::from_file(path, file))
    }

    /// Continue the log at `path` after resuming from `resumed_step`: drop
    /// records whose `step` is greater than `resumed_step` and a torn (not
    /// newline-terminated, unparseable) last line, keep everything else
    /// byte-for-byte, then open for appending. A missing file is created.
    pub fn resume(path: &Path, resumed_step: u64) -> Result<Self> {
        create_parent(path)?;
        if path.exists() {
            truncate_after(path, resumed_step)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Self::from_file(path, file))
    }

    fn from_file(path: &Path, file: File) -> Self {
        Self {
            path: path.to_path_buf(),
            out: file,
            lines: 0,
        }
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append `record` as one line and flush it to the OS.
    pub fn append<T: Serialize + ?Sized>(&mut self, record: &T) -> Result<()> {
        // serde_json's compact form never contains a raw newline.
        let line = serde_json::to_string(record).map_err(|e| Error::Metrics {
            path: self.path.clone(),
            line: 0,
            msg: format!("record does not serialize to JSON: {e}"),
        })?;
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        let io = |e| Error::io(&self.path, e);
        let before = self.out.metadata().map_err(io)?.len();
        if let Err(e) = self.out.write_all(&bytes) {
            // Part of the line may have reached the file: cut it off again,
            // so the log ends with a whole line.
            let _ = self.out.set_len(before);
            return Err(io(e));
        }
        self.lines += 1;
        Ok(())
    }

    /// Flush and fsync (for shutdown; `append` already flushes every line).
    pub fn sync(&mut self) -> Result<()> {
        let io = |e| Error::io(&self.path, e);
        self.out.flush().map_err(io)?;
        self.out.sync_all().map_err(io)
    }
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
        }
        _ => Ok(()),
    }
}

/// The `step` of a parsed record, if it has a non-negative integer one.
fn record_step(v: &serde_json::Value) -> Option<u64> {
    let s = v.get(STEP_KEY)?;
    s.as_u64().or_else(|| {
        // `3.0` counts as step 3 (a writer may serialise steps as floats).
        s.as_f64()
            .filter(|x| *x >= 0.0 && x.fract() == 0.0 && *x < 2f64.powi(53))
            .map(|x| x as u64)
    })
}

/// Rewrite `path` without the records after `resumed_step` (see
/// [`MetricsWriter::resume`]); leaves the file alone when nothing is dropped.
fn truncate_after(path: &Path, resumed_step: u64) -> Result<()> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let ends_with_newline = text.last().is_none_or(|&b| b == b'\n');
    let pieces: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    let mut kept = Vec::with_capacity(text.len());
    let mut dropped = 0usize;
    for (i, piece) in pieces.iter().enumerate() {
        let is_last = i + 1 == pieces.len();
        let body = piece.strip_suffix(b"\n").unwrap_or(piece);
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(v) if record_step(&v).is_some_and(|s| s > resumed_step) => dropped += 1,
            Ok(_) => {
                kept.extend_from_slice(body);
                kept.push(b'\n');
            }
            // A torn last line (the crash came mid-write) is dropped.
            Err(_) if is_last && !ends_with_newline => dropped += 1,
            // Anything else unparseable is kept as is: never lose lines.
            Err(_) => {
                kept.extend_from_slice(body);
                kept.push(b'\n');
            }
        }
    }
    if dropped == 0 && ends_with_newline {
        return Ok(());
    }
    tracing::info!(path = %path.display(), dropped, resumed_step, "cutting metrics log back to the resumed step");
    let tmp = path.with_extension("jsonl.tmp");
    {
        let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&kept).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// A metrics log read by [`read_metrics_counted`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsLog {
    /// Every line that parsed as JSON, in file order.
    pub records: Vec<serde_json::Value>,
    /// 1-based numbers of the lines that did not parse (a torn last line, or
    /// damage); empty lines are ignored and not counted.
    pub skipped_lines: Vec<usize>,
}

/// Read `metrics.jsonl`, skipping (with a warning) lines that do not parse,
/// such as a torn last line after a crash.
pub fn read_metrics(path: &Path) -> Result<Vec<serde_json::Value>> {
    Ok(read_metrics_counted(path)?.records)
}

/// [`read_metrics`], also reporting which lines were skipped.
pub fn read_metrics_counted(path: &Path) -> Result<MetricsLog> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut log = MetricsLog::default();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(v) => log.records.push(v),
            Err(_) => log.skipped_lines.push(i + 1),
        }
    }
    if !log.skipped_lines.is_empty() {
        tracing::warn!(path = %path.display(), lines = ?log.skipped_lines, "skipped unparseable metrics lines");
    }
    Ok(log)
}

/// Look up a possibly dotted key (`timings.generate`) in a record and return
/// it as a number; booleans count as 0/1, anything else is `None`.
pub fn lookup_number(record: &serde_json::Value, key: &str) -> Option<f64> {
    let v = record.get(key).or_else(|| {
        let mut cur = record;
        for part in key.split('.') {
            cur = cur.get(part)?;
        }
        Some(cur)
    })?;
    match v {
        serde_json::Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        other => other.as_f64(),
    }
}
