//! The sections of a run's TOML whose consumers sit above the config (the
//! observers and the run layer), so that their types live here and the
//! config knows nothing above it.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The default window, in tokens, of the held-out leakage measurement
/// (`validation.leakage_ngram`).
pub const DEFAULT_LEAKAGE_NGRAM: usize = 8;

/// The default collective timeout of data-parallel ranks
/// (`runtime.collective_timeout_s`).
pub const DEFAULT_COLLECTIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// `[observe]`: what a run writes for people to look at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObserveConfig {
    /// Write TensorBoard event files into the run folder.
    pub tensorboard: bool,
    /// Responses per step logged to `completions.jsonl` (and as TensorBoard
    /// text) with their token credit: the first ones of the batch, rounded up
    /// to whole prompt groups (8 with groups of 16 logs all 16). 0 turns the
    /// log off.
    pub completions_per_step: usize,
    /// Draw the charts and write `report.html` when the run ends.
    pub report: bool,
    /// Also draw the end-of-run charts as PNG next to the SVGs.
    pub png: bool,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        Self {
            tensorboard: true,
            completions_per_step: 8,
            report: true,
            png: true,
        }
    }
}

/// `[validation]`: held-out evaluation during training (the reference
/// validates before training and every 5 steps).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// Validate before step 1 and after every this many steps; 0 turns it off.
    pub every: u64,
    /// Held-out prompts per validation.
    pub num_prompts: usize,
    /// Samples per prompt for pass@1 (sampled) and pass@K.
    pub samples: usize,
    /// Sampling temperature of the sampled pass@1 / pass@K (default 1.0, the
    /// training temperature; the reference validates at 0.7 with the filters
    /// below: `rlsd_config.yaml` 99-104, set in `configs/paper.toml`).
    pub temperature: f64,
    /// Top-k of the sampled validation decoding (0 = off; the reference's: 20).
    pub top_k: usize,
    /// Top-p of the sampled validation decoding (1.0 = off; the reference's: 0.8).
    pub top_p: f64,
    /// Presence penalty of the sampled validation decoding (0 = off; the
    /// reference's: 1.5, as vLLM applies it).
    pub presence_penalty: f64,
    /// Window, in tokens, of the leakage measurement on the sampled
    /// responses (`pipeline::leakage_probe`); 0 turns it off.
    pub leakage_ngram: usize,
    /// Most new tokens per response; 0 = `rollout.max_new_tokens`.
    pub max_new_tokens: usize,
    /// Seed of the built-in task's held-out problems (a seed the training
    /// data does not use) and of the sampler.
    pub seed: u64,
    /// Held-out dataset (JSONL / Parquet, read with `[data]`'s columns and
    /// format); unset: the built-in task's problems from `seed`, minus any
    /// prompt of the training set. Required with a training dataset.
    pub path: Option<std::path::PathBuf>,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            every: 0,
            num_prompts: 64,
            samples: 4,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            presence_penalty: 0.0,
            leakage_ngram: DEFAULT_LEAKAGE_NGRAM,
            max_new_tokens: 0,
            seed: 0x005E_ED0F_4E1D,
            path: None,
        }
    }
}

impl ValidationConfig {
    /// Check the decoding values; the error names the key (`validation.<field>`).
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::config(
                "validation.temperature",
                "must be 0 (greedy) or a positive number",
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::config("validation.top_p", "must be in (0, 1]"));
        }
        if !self.presence_penalty.is_finite() {
            return Err(Error::config(
                "validation.presence_penalty",
                "must be a finite number",
            ));
        }
        Ok(())
    }
}
