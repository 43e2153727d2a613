//! The completions log: each step, a few prompts with their responses,
//! rewards, advantages and per-token credit, one JSON line per step in
//! `completions.jsonl` of the run folder.
//!
//! The records are built by [`crate::pipeline::sample_completions`] from the
//! batch the train step receives; [`read_completions`] reads the log back and
//! [`crate::observe::inspection::Inspection::from_logged`] turns a step into
//! what `rlsd inspect` renders.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::metrics::read_metrics_counted;
pub use crate::stats::ResponseRecord;
use crate::{Error, Result};

/// The record type's name in the log's first releases.
pub type CompletionSample = ResponseRecord;

/// The log's file name inside a run folder.
pub const COMPLETIONS_FILE: &str = "completions.jsonl";

/// One line of `completions.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepCompletions {
    /// The training step.
    pub step: u64,
    /// The algorithm the step trained with.
    pub algo: String,
    /// `lambda` at that step.
    pub lambda: f64,
    /// `eps_w`, the weight clip.
    pub eps_w: f64,
    /// The sampled responses.
    pub samples: Vec<ResponseRecord>,
}

/// Read every step of a `completions.jsonl`; lines that are not JSON are
/// skipped (a torn last line), records of the wrong shape are an error
/// naming the file and line.
pub fn read_completions(path: &Path) -> Result<Vec<StepCompletions>> {
    if !path.is_file() {
        return Err(Error::InvalidInput(format!(
            "{} not found: completions are logged by `rlsd train` when observe.completions_per_step > 0",
            path.display()
        )));
    }
    let log = read_metrics_counted(path)?;
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    // Map each parsed record back to its line number for error messages.
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(i, l)| !l.trim().is_empty() && !log.skipped_lines.contains(&(i + 1)))
        .map(|(i, _)| i + 1)
        .collect();
    log.records
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v).map_err(|e| Error::Metrics {
                path: path.to_path_buf(),
                line: lines.get(i).copied().unwrap_or(0),
                msg: format!("not a completions record: {e}"),
            })
        })
        .collect()
}

/// The logged step `step` of a run folder (the last one logged with `None`).
pub fn read_step(run_dir: &Path, step: Option<u64>) -> Result<StepCompletions> {
    let path = run_dir.join(COMPLETIONS_FILE);
    let all = read_completions(&path)?;
    let found = match step {
        // A resumed run may log a step twice; the later line wins.
        Some(s) => all.into_iter().rev().find(|r| r.step == s),
        None => all.into_iter().max_by_key(|r| r.step),
    };
    found.ok_or_else(|| {
        let what = step.map_or("any step".to_string(), |s| format!("step {s}"));
        Error::InvalidInput(format!("{} has no record of {what}", path.display()))
    })
}
