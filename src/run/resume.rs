//! Resuming a run: what a checkpoint's state says about its step, the
//! metrics lines it restores, and the check that it holds `[model]`'s shape.

use crate::error::{Error, Result};
use crate::metrics::MetricsWriter;
use crate::rlsd::{AdaptiveLambda, AlgoConfig, LambdaSchedule};
use crate::stats::StepStats;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What a checkpoint's `state.json` says about the step it holds.
#[derive(Debug)]
pub struct Resumed {
    /// The committed step.
    pub step: u64,
    /// Data cursor after that step.
    pub cursor: Option<serde_json::Value>,
    /// Version of the stored teacher weights.
    pub teacher_version: Option<u64>,
    /// Stats of recent steps (metrics lines the log may lack).
    pub recent: Vec<StepStats>,
    /// Prompt ids trained at each step up to `step`.
    pub ledger: Vec<(u64, Vec<String>)>,
    /// The checkpoint folder, when it lies in this run's checkpoint root.
    pub own_dir: Option<PathBuf>,
    /// The adaptive lambda schedule's state after `step` (`adaptive_lambda`;
    /// absent in checkpoints written before it existed).
    pub adaptive: Option<AdaptiveLambda>,
    /// The earlier policy versions the checkpoint carries (`pinned_versions`;
    /// empty in checkpoints written before them, or at `max_staleness = 0`).
    pub pinned: Vec<PinnedVersion>,
    /// `state.json`'s path, for errors.
    state_path: PathBuf,
}

/// A policy version before the checkpoint's step that the checkpoint
/// carries, with what its commit published: at `runtime.max_staleness = s`
/// the checkpoint of step `k` holds versions `k - s .. k - 1`, the ones
/// steps `k + 1 .. k + s` are sampled with (docs/RUNTIME.md, "Staleness").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PinnedVersion {
    /// The policy version (the step that made it).
    pub version: u64,
    /// Its weights (as published to the replicas), a file in the checkpoint.
    pub policy_file: String,
    /// The teacher version its commit published.
    pub teacher_version: u64,
    /// That teacher's weights, a file in the checkpoint (shared with
    /// `teacher.safetensors` or a policy file when they hold the same version).
    pub teacher_file: String,
    /// The data cursor after step `version`.
    pub data_cursor: serde_json::Value,
    /// The adaptive lambda schedule's state after step `version`.
    pub adaptive_lambda: AdaptiveLambda,
}

impl Resumed {
    /// Read the state of the loaded checkpoint `ck`; `root` is this run's
    /// checkpoint folder.
    pub fn of(ck: &crate::checkpoint::LoadedCheckpoint, root: &std::path::Path) -> Result<Resumed> {
        let state_path = ck.dir.join(crate::checkpoint::STATE_FILE);
        let bad = |key: &str, e: String| {
            Error::InvalidInput(format!("{}: `{key}`: {e}", state_path.display()))
        };
        let field = |key: &str| ck.state.get(key).filter(|v| !v.is_null());
        let step = match field("trained_through").or_else(|| field("step")) {
            Some(v) => v
                .as_u64()
                .ok_or_else(|| bad("step", "not a step number".into()))?,
            None => ck.step,
        };
        if step != ck.step {
            return Err(bad(
                "step",
                format!("says {step}, the manifest says {}", ck.step),
            ));
        }
        let recent = match field("recent_stats") {
            Some(v) => {
                serde_json::from_value(v.clone()).map_err(|e| bad("recent_stats", e.to_string()))?
            }
            None => Vec::new(),
        };
        let ledger = match field("trained") {
            Some(v) => {
                serde_json::from_value(v.clone()).map_err(|e| bad("trained", e.to_string()))?
            }
            None => Vec::new(),
        };
        let adaptive = match field("adaptive_lambda") {
            Some(v) => Some(
                serde_json::from_value(v.clone())
                    .map_err(|e| bad("adaptive_lambda", e.to_string()))?,
            ),
            None => None,
        };
        let pinned = match field("pinned_versions") {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| bad("pinned_versions", e.to_string()))?,
            None => Vec::new(),
        };
        let same_root =
            |a: &std::path::Path, b: &std::path::Path| match (a.canonicalize(), b.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            };
        let own_dir = ck
            .dir
            .parent()
            .filter(|p| same_root(p, root))
            .map(|_| ck.dir.clone());
        Ok(Resumed {
            step,
            cursor: field("data_cursor").cloned(),
            teacher_version: field("teacher_version").and_then(|v| v.as_u64()),
            recent,
            ledger,
            own_dir,
            adaptive,
            pinned,
            state_path,
        })
    }

    /// The adaptive lambda schedule's state to continue from: the stored
    /// one; a checkpoint without it continues a fixed schedule from the
    /// start state (unused), and is an error for an adaptive one.
    pub fn adaptive_lambda(&self, algo: &AlgoConfig) -> Result<AdaptiveLambda> {
        match (self.adaptive, algo.lambda_schedule) {
            (Some(a), _) => Ok(a),
            (None, LambdaSchedule::Fixed) => Ok(algo.adaptive_start()),
            (None, LambdaSchedule::Adaptive) => Err(Error::InvalidInput(format!(
                "{}: `adaptive_lambda` is missing, so the adaptive lambda schedule (algo.lambda_schedule) cannot resume exactly",
                self.state_path.display()
            ))),
        }
    }
}

/// After the log was cut back to the checkpoint's step, append the lines of
/// committed steps it lacks (a crash can come after a checkpoint but before
/// the run loop wrote that step's line), so it holds each of `1..=step` once.
pub fn refill_metrics(
    metrics: &mut MetricsWriter,
    path: &std::path::Path,
    recent: &[StepStats],
    step: u64,
) -> Result<()> {
    let have: std::collections::HashSet<u64> = crate::metrics::read_metrics(path)?
        .iter()
        .filter_map(|r| r.get(crate::metrics::STEP_KEY).and_then(|s| s.as_u64()))
        .collect();
    for s in recent {
        if s.step <= step && !have.contains(&s.step) {
            tracing::info!(
                step = s.step,
                "restoring a metrics line from the checkpoint"
            );
            metrics.append(s)?;
        }
    }
    Ok(())
}

/// A resumed checkpoint must hold the model `[model]` names (same
/// architecture sizes in `config.json`); the error names both files.
pub fn check_same_shape(model_dir: &std::path::Path, ckpt_model: &std::path::Path) -> Result<()> {
    let read = |dir: &std::path::Path| -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
        serde_json::from_str(&text).ok()
    };
    let (Some(a), Some(b)) = (read(model_dir), read(ckpt_model)) else {
        return Ok(()); // an embedding program may train a model with no folder
    };
    for key in [
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "vocab_size",
    ] {
        if a.get(key) != b.get(key) {
            return Err(Error::InvalidInput(format!(
                "the checkpoint's model ({}) does not match [model].path ({}): `{key}` is {} vs {}; resume with the config of the run that wrote it",
                ckpt_model.join("config.json").display(),
                model_dir.join("config.json").display(),
                b.get(key).unwrap_or(&serde_json::Value::Null),
                a.get(key).unwrap_or(&serde_json::Value::Null),
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rlsd::LambdaSchedule;

    fn resumed(adaptive: Option<AdaptiveLambda>) -> Resumed {
        Resumed {
            step: 3,
            cursor: None,
            teacher_version: None,
            recent: Vec::new(),
            ledger: Vec::new(),
            own_dir: None,
            adaptive,
            pinned: Vec::new(),
            state_path: PathBuf::from("ck/state.json"),
        }
    }

    #[test]
    fn adaptive_state_is_restored_or_its_absence_named() {
        let mut algo = AlgoConfig::default();
        let stored = AdaptiveLambda {
            lambda: 0.25,
            streak: 1,
            observed_through: 3,
        };
        // An old checkpoint continues a fixed schedule (the state is unused).
        assert_eq!(
            resumed(None).adaptive_lambda(&algo).unwrap(),
            algo.adaptive_start()
        );
        algo.lambda_schedule = LambdaSchedule::Adaptive;
        assert_eq!(
            resumed(Some(stored)).adaptive_lambda(&algo).unwrap(),
            stored
        );
        let err = resumed(None)
            .adaptive_lambda(&algo)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ck/state.json") && err.contains("adaptive_lambda"),
            "{err}"
        );
    }
}
