//! The run configuration: one TOML file describes a run.
//!
//! Each module owns its section's struct (`[algo]` is [`crate::rlsd::AlgoConfig`],
//! `[optim]` is [`crate::optim::OptimConfig`], ...); this file assembles them,
//! applies `--set key=value` overrides, and turns serde's complaints into errors
//! that name the dotted key (`algo.lambda0`). Every struct denies unknown keys
//! and has defaults, so an empty file is a valid run: the built-in task on
//! the tiny model. The defaults are not the paper's run: the update's
//! hyper-parameters are the reference's (`AlgoConfig`, `OptimConfig`), but
//! `max_staleness = 1` (the reference is on-policy), no format reward, the
//! student template `{prompt}` (no `<thought>`/`<answer>` instruction), a
//! shuffled data order, teacher sync every 10 steps (the reference script:
//! 20), validation at temperature 1.0 with 4 samples (the reference: 0.7,
//! top-p 0.8, top-k 20, presence penalty 1.5, one sample), and this
//! runtime's variants of the baselines. `configs/paper.toml` is the
//! reference's run (docs/ALGORITHMS.md, "The paper preset").

use crate::checkpoint::CheckpointConfig;
use crate::data::DataConfig;
use crate::error::{Error, Result};
use crate::optim::OptimConfig;
use crate::rlsd::AlgoConfig;
use crate::verify::VerifierConfig;
use serde::{Deserialize, Serialize};

pub mod builtin_model;
pub mod checks;
mod env_section;
mod sections;
pub mod show;
pub use env_section::{EnvConfig, EnvKind, EnvToolFormat};
pub use sections::{
    ObserveConfig, ValidationConfig, DEFAULT_COLLECTIVE_TIMEOUT, DEFAULT_LEAKAGE_NGRAM,
};
use std::path::{Path, PathBuf};

/// The built-in default run (`rlsd train` with no `--config`).
pub const BUILTIN_TOML: &str = include_str!("../../configs/builtin.toml");

/// A whole run, as read from TOML.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Which model to train and where its parts live.
    pub model: ModelConfig,
    /// Prompts: a dataset file, or the built-in arithmetic task when `data.path`
    /// is unset; also the teacher prompt template.
    pub data: DataConfig,
    /// How responses are rewarded.
    pub verifier: VerifierConfig,
    /// The credit-assignment algorithm and its constants.
    pub algo: AlgoConfig,
    /// AdamW and the learning-rate schedule.
    pub optim: OptimConfig,
    /// Sampling: batch shape and decoding settings.
    pub rollout: RolloutConfig,
    /// Actor runtime: steps, staleness, devices, supervision.
    pub runtime: RuntimeConfig,
    /// Where and how often checkpoints are written.
    pub checkpoint: CheckpointConfig,
    /// TensorBoard events, the completions log, charts and the run report.
    pub observe: ObserveConfig,
    /// Held-out validation during training (off unless `validation.every > 0`).
    pub validation: ValidationConfig,
    /// The environment of multi-turn episodes (off unless `env.kind` is set).
    pub env: EnvConfig,
}

/// `[model]`: the policy's weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A Hugging Face model folder, a Hub id (`Qwen/Qwen2.5-1.5B-Instruct`,
    /// found in the local Hugging Face cache or downloaded; see [`crate::hub`]),
    /// or `builtin` for the built-in task's base model (`builtin-agent`: the
    /// built-in agent task's, which calls the calculator tool).
    pub path: String,
    /// Hub revision (branch, tag or commit) of a Hub id; unset: `main`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Parameter dtype: `f32`, `bf16`, `f16` or `f64` (float64 end to end,
    /// optimizer moments included: for exactness checks on the CPU).
    pub dtype: String,
    /// `[model.lora]`: train low-rank adapters on a frozen base instead of
    /// every weight (see [`crate::model::lora`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora: Option<crate::model::LoraConfig>,
    /// A peft adapter folder to start from (its `adapter_config.json` gives
    /// the LoRA settings; not together with `[model.lora]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<PathBuf>,
    /// With an adapter: the sampler generates with it merged into its own
    /// copies of the adapted weights (`W + scale B A`, re-merged at every
    /// sync) instead of applying it unmerged; faster per token, at the
    /// memory of the adapted weights. The teacher stays unmerged.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub merge_for_generation: bool,
    /// Vision-language models: train the vision tower too (frozen by
    /// default). Not yet trainable: the runtime refuses to train a
    /// vision-language model at start; the memory plan counts it.
    pub train_vision: bool,
    /// Vision-language models: images per prompt the memory plan assumes
    /// (the data's images are not read before the run starts).
    pub images_per_prompt: usize,
    /// Vision-language models: pixels per image (after the processor's
    /// resize) the memory plan assumes; default 1024 x 1024.
    pub image_pixels: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            path: "builtin".into(),
            revision: None,
            dtype: "f32".into(),
            lora: None,
            adapter: None,
            merge_for_generation: false,
            train_vision: false,
            images_per_prompt: 1,
            image_pixels: 1 << 20,
        }
    }
}

impl ModelConfig {
    /// The folder holding the model files: `builtin` (`builtin-agent`) is the shipped base
    /// model, a folder is itself, a Hub id is its snapshot in the local
    /// Hugging Face cache, downloaded first when needed and allowed.
    pub fn resolve(&self) -> Result<PathBuf> {
        if let Some(builtin) = builtin_model::by_key(&self.path) {
            return builtin.dir(&source_dir());
        }
        crate::hub::resolve_model(
            &self.path,
            self.revision.as_deref(),
            &crate::hub::HubEnv::from_env(),
        )
    }

    /// Attach this section's adapter to a freshly loaded model: the peft
    /// folder `adapter`, or new adapters from `[model.lora]`. A model that
    /// already carries one (a LoRA checkpoint) is left as is. For
    /// `training`, an adapter with dropout is refused (see
    /// [`crate::model::LoraConfig::dropout`]).
    pub fn attach_adapter(
        &self,
        model: &mut crate::model::LoadedModel,
        training: bool,
    ) -> Result<()> {
        if model.lora.is_none() {
            match (&self.adapter, &self.lora) {
                (Some(dir), _) => model
                    .load_adapter(dir)
                    .map_err(|e| e.at_key("model.adapter"))?,
                (None, Some(lora)) => model.attach_lora(lora)?,
                (None, None) => {}
            }
        }
        match &model.lora {
            Some(lora) if training => lora.validate_for_training(),
            _ => Ok(()),
        }
    }

    /// Check the adapter keys: not both `adapter` and `[model.lora]`, valid
    /// LoRA settings, and a readable `adapter_config.json`.
    pub fn validate_adapter(&self) -> Result<()> {
        if let Some(lora) = &self.lora {
            if self.adapter.is_some() {
                return Err(Error::config(
                    "model.adapter",
                    "give either model.adapter or [model.lora], not both \
                     (the adapter's adapter_config.json holds its settings)",
                ));
            }
            lora.validate_for_training()?;
        }
        if let Some(dir) = &self.adapter {
            let path = dir.join(crate::model::lora::ADAPTER_CONFIG);
            crate::model::LoraConfig::from_peft_file(&path)
                .map_err(|e| e.at_key("model.adapter"))?;
        }
        Ok(())
    }

    /// The folder holding the model files, without the Hub (`builtin`
    /// resolves to the shipped base model; see [`ModelConfig::resolve`]).
    pub fn resolved_path(&self) -> PathBuf {
        if let Some(builtin) = builtin_model::by_key(&self.path) {
            builtin
                .dir(&source_dir())
                .unwrap_or_else(|_| builtin.cache_dir_in(&builtin_model::cache_root()))
        } else {
            PathBuf::from(&self.path)
        }
    }
}

/// Folder of the built-in task's base model: the copy of the files embedded
/// in the binary, written once to the per-user cache (see
/// [`builtin_model`]). Where that fails, the folder it would be in (loading
/// from it then names it); [`try_builtin_model_dir`] gives the reason.
pub fn builtin_model_dir() -> PathBuf {
    try_builtin_model_dir()
        .unwrap_or_else(|_| builtin_model::cache_dir_in(&builtin_model::cache_root()))
}

/// [`builtin_model_dir`], or why the embedded model cannot be written out.
/// Located once per process.
pub fn try_builtin_model_dir() -> Result<PathBuf> {
    builtin_model::BASE.dir(&source_dir())
}

/// The rlsd source tree (test fixtures; the built-in model's fallback when
/// the cache cannot be written): `RLSD_SOURCE_DIR` when set (a binary
/// carried to another machine, e.g. by scripts/gpu-check.sh), else the
/// folder it was built in. The binary needs none of it to run.
pub fn source_dir() -> PathBuf {
    match std::env::var_os("RLSD_SOURCE_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    }
}

/// `[rollout]`: what the sampler generates for each step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    /// Prompts per step (`B`).
    pub batch_prompts: usize,
    /// Responses per prompt (`G`).
    pub group_size: usize,
    /// Maximum generated tokens per response.
    pub max_new_tokens: usize,
    /// Sampling temperature (the spec trains at 1.0); the teacher scores at the same one.
    pub temperature: f64,
    /// Nucleus sampling mass; 1.0 disables it.
    pub top_p: f64,
    /// Top-k cut-off; 0 disables it.
    pub top_k: usize,
    /// Bytes the sampler's KV cache may use; bounds the responses decoding at
    /// once (the others wait and start as rows finish: continuous batching).
    /// 0: no bound, all `batch_prompts x group_size` at once.
    pub kv_cache_bytes: u64,
    /// Stop strings: a response ends once its decoded text contains one (the
    /// text is cut after it; see `rlsd::model::cut_at_stop`). Empty: EOS only.
    pub stop: Vec<String>,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            batch_prompts: 8,
            group_size: 8,
            max_new_tokens: 48,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            kv_cache_bytes: 0,
            stop: vec![],
        }
    }
}

/// `[runtime]`: the actor tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Training steps to run.
    pub steps: u64,
    /// Seed for sampling and data order.
    pub seed: u64,
    /// How many policy versions the sampler may run ahead of the optimizer
    /// (0 = strictly on-policy; 1 = generation of step k+1 overlaps training of step k).
    pub max_staleness: u64,
    /// Refresh the teacher's weights every this many steps (1 = the live policy).
    pub teacher_sync_interval: u64,
    /// Device of the sampler's policy replica (`cpu`, `cuda:N`, `auto`).
    pub sampler_device: String,
    /// Device of the teacher replica.
    pub teacher_device: String,
    /// Device of the trainable policy and optimizer state.
    pub optimizer_device: String,
    /// Parallel verifier workers.
    pub verifier_workers: usize,
    /// Seconds a single verification may take before it scores 0.
    pub verifier_timeout_s: f64,
    /// Restarts allowed within `restart_window_s` before the run stops.
    pub max_restarts: u32,
    /// Window of the restart budget, in seconds.
    pub restart_window_s: f64,
    /// Injected failures for rehearsal, e.g. `["sampler@3", "optimizer@5:panic"]`.
    pub faults: Vec<String>,
    /// Folder for metrics, drawings, checkpoints and the final model of
    /// this run. Unset: `runs/<model name>` ([`default_out_dir`]), so
    /// `rlsd train --model X` after the default run gets its own folder.
    pub out_dir: PathBuf,
    /// Stop the run (non-zero) after this many consecutive skipped steps
    /// (non-finite loss or gradient: the weights have likely diverged);
    /// 0 never stops.
    pub max_consecutive_skips: u64,
    /// Memory of each device in GiB for the start-up memory check
    /// (`rlsd plan`); 0 = detect (RAM for `cpu`, `nvidia-smi` for CUDA).
    pub device_memory_gib: f64,
    /// Data-parallel runs: seconds a collective (and the rendezvous) may
    /// wait for the other ranks before it fails, so a rank that stalls or
    /// vanishes stops the job instead of hanging it. `RLSD_DIST_TIMEOUT_S`
    /// overrides it (docs/DISTRIBUTED.md).
    pub collective_timeout_s: f64,
    /// Data-parallel runs: `colocated` (every rank samples, scores and
    /// trains) or `split` (the last `sampler_ranks` ranks only generate and
    /// verify; the others score with the teacher and train, and broadcast
    /// the new weights to the samplers after every step).
    pub placement: Placement,
    /// `placement = "split"`: how many ranks sample (the last ones); at
    /// least one rank must be left to learn.
    pub sampler_ranks: usize,
    /// libtorch's intra-op CPU threads for `rlsd train` (one process, the
    /// actor runtime); 0 = auto ([`crate::device::cpu_threads`]:
    /// `OMP_NUM_THREADS` when set, else the cores shared among the actors
    /// that compute at once).
    pub cpu_threads: usize,
}

/// Where the stages of a data-parallel run go (`runtime.placement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Every rank samples its share of the prompts, scores and trains.
    #[default]
    Colocated,
    /// Sampler ranks generate and verify; learner ranks score and train.
    Split,
}

impl RuntimeConfig {
    /// `collective_timeout_s` as a duration (the default where the value is
    /// not a positive number; `validate` refuses such a value by name).
    pub fn collective_timeout(&self) -> std::time::Duration {
        let s = self.collective_timeout_s;
        if s.is_finite() && s > 0.0 {
            std::time::Duration::from_secs_f64(s.min(1e9))
        } else {
            DEFAULT_COLLECTIVE_TIMEOUT
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            steps: 40,
            seed: 0,
            max_staleness: 1,
            teacher_sync_interval: 10,
            sampler_device: "auto".into(),
            teacher_device: "auto".into(),
            optimizer_device: "auto".into(),
            verifier_workers: 2,
            verifier_timeout_s: 10.0,
            max_restarts: 5,
            restart_window_s: 60.0,
            faults: Vec::new(),
            out_dir: PathBuf::from("runs/builtin"),
            max_consecutive_skips: 10,
            device_memory_gib: 0.0,
            collective_timeout_s: DEFAULT_COLLECTIVE_TIMEOUT.as_secs_f64(),
            placement: Placement::Colocated,
            sampler_ranks: 1,
            cpu_threads: 0,
        }
    }
}

impl RunConfig {
    /// Read a TOML file (or, with `None`, the built-in default run
    /// `configs/builtin.toml`), then apply `key=value` overrides (values in
    /// TOML syntax; bare words are taken as strings).
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self> {
        Self::load_with_model(path, overrides, None)
    }

    /// [`RunConfig::load`], with `model` (the `--model` flag) replacing
    /// `model.path` after the overrides. A config that sets no
    /// `runtime.out_dir` gets [`default_out_dir`] of the resulting model, so
    /// runs of different models do not share a folder.
    pub fn load_with_model(
        path: Option<&Path>,
        overrides: &[String],
        model: Option<&str>,
    ) -> Result<Self> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?,
                p.display().to_string(),
            ),
            None => (BUILTIN_TOML.to_string(), "configs/builtin.toml".to_string()),
        };
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| Error::ConfigSyntax {
                    origin: origin.clone(),
                    msg: toml_error_line(&e),
                })?;
        for ov in overrides {
            apply_override(&mut table, ov)?;
        }
        if let Some(m) = model {
            if let toml::Value::Table(t) = table
                .entry("model")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            {
                t.insert("path".into(), toml::Value::String(m.to_string()));
            }
        }
        let cfg = Self::from_table(table, &with_overrides(origin, overrides))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parse a TOML string (tests, embedding).
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| Error::ConfigSyntax {
                    origin: "<string>".into(),
                    msg: toml_error_line(&e),
                })?;
        let cfg = Self::from_table(table, "<string>")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Deserialise, then give a config without `runtime.out_dir` the
    /// model's own run folder.
    fn from_table(table: toml::Table, origin: &str) -> Result<Self> {
        let out_dir_set = table
            .get("runtime")
            .and_then(|r| r.get("out_dir"))
            .is_some();
        let mut cfg: Self = from_table(table, origin)?;
        if !out_dir_set {
            cfg.runtime.out_dir = default_out_dir(&cfg.model.path);
        }
        Ok(cfg)
    }

    /// The resolved configuration as TOML (written into checkpoints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# could not serialise: {e}\n"))
    }

    /// Cross-field checks serde cannot express.
    pub fn validate(&self) -> Result<()> {
        let r = &self.rollout;
        if r.batch_prompts == 0 {
            return Err(Error::config("rollout.batch_prompts", "must be at least 1"));
        }
        if r.group_size == 0 {
            return Err(Error::config("rollout.group_size", "must be at least 1"));
        }
        if r.max_new_tokens == 0 {
            return Err(Error::config(
                "rollout.max_new_tokens",
                "must be at least 1",
            ));
        }
        if !(r.temperature > 0.0 && r.temperature.is_finite()) {
            return Err(Error::config(
                "rollout.temperature",
                "must be a positive number",
            ));
        }
        if !(r.top_p > 0.0 && r.top_p <= 1.0) {
            return Err(Error::config("rollout.top_p", "must be in (0, 1]"));
        }
        if let Some(i) = r.stop.iter().position(String::is_empty) {
            return Err(Error::config(
                "rollout.stop",
                format!("stop string {i} is empty"),
            ));
        }
        self.validation.validate()?;
        self.env.validate()?;
        let rt = &self.runtime;
        if rt.teacher_sync_interval == 0 {
            return Err(Error::config(
                "runtime.teacher_sync_interval",
                "must be at least 1 (1 = the live policy)",
            ));
        }
        if rt.verifier_workers == 0 {
            return Err(Error::config(
                "runtime.verifier_workers",
                "must be at least 1",
            ));
        }
        if !(rt.collective_timeout_s.is_finite() && rt.collective_timeout_s > 0.0) {
            return Err(Error::config(
                "runtime.collective_timeout_s",
                "must be a positive number of seconds",
            ));
        }
        if rt.placement == Placement::Split
            && self.algo.algo == crate::rlsd::Algo::Sdpo
            && self.algo.sdpo_num_candidates > 0
        {
            return Err(Error::config(
                "algo.sdpo_num_candidates",
                "SDPO's feedback candidates are not sent between split ranks; use placement = \"colocated\" or 0",
            ));
        }
        if rt.placement == Placement::Split && rt.sampler_ranks == 0 {
            return Err(Error::config(
                "runtime.sampler_ranks",
                "must be at least 1 with placement = \"split\"",
            ));
        }
        if rt.verifier_timeout_s.is_nan() || rt.verifier_timeout_s <= 0.0 {
            return Err(Error::config(
                "runtime.verifier_timeout_s",
                "must be positive",
            ));
        }
        for (key, dev) in [
            ("runtime.sampler_device", &rt.sampler_device),
            ("runtime.teacher_device", &rt.teacher_device),
            ("runtime.optimizer_device", &rt.optimizer_device),
        ] {
            crate::device::check_device_name(dev).map_err(|e| e.at_key(key))?;
        }
        crate::fault::FaultPlan::parse(&rt.faults)?;
        self.algo.validate()?;
        self.optim.validate()?;
        self.checkpoint.validate()?;
        crate::config::checks::check_ranges(self)?;
        crate::model::parse_kind(&self.model.dtype).map_err(|e| e.at_key("model.dtype"))?;
        self.model.validate_adapter()?;
        Ok(())
    }
}

/// Deserialize any config struct from a TOML table, naming the dotted key of
/// the first problem.
fn from_table<T: serde::de::DeserializeOwned>(table: toml::Table, origin: &str) -> Result<T> {
    let value = toml::Value::Table(table);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        let msg = e.inner().message().trim();
        if key == "." {
            Error::config(origin, msg)
        } else {
            Error::config(key, format!("{msg} (in {origin})"))
        }
    })
}

/// The run folder of a config that names none: `runs/<model>`, where
/// `<model>` is the last part of `model.path` (`builtin`, a folder's name,
/// or a Hub id's name: `Qwen/Qwen2.5-1.5B-Instruct` gives
/// `runs/Qwen2.5-1.5B-Instruct`), characters other than ASCII letters,
/// digits, `-`, `_` and `.` replaced by `_`.
pub fn default_out_dir(model_path: &str) -> PathBuf {
    let last = model_path
        .trim_end_matches(['/', '\\'])
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default();
    let name: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = if name.is_empty() || name.chars().all(|c| c == '.') {
        "default".to_string()
    } else {
        name
    };
    Path::new("runs").join(name)
}

/// Read any config struct from an optional TOML file plus `key=value`
/// overrides (used by `rlsd pretrain`); errors name the file or dotted key.
pub fn load_toml<T: serde::de::DeserializeOwned>(
    path: Option<&Path>,
    overrides: &[String],
) -> Result<T> {
    let (text, origin) = match path {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?,
            p.display().to_string(),
        ),
        None => (String::new(), "<defaults>".to_string()),
    };
    let mut table: toml::Table =
        text.parse()
            .map_err(|e: toml::de::Error| Error::ConfigSyntax {
                origin: origin.clone(),
                msg: toml_error_line(&e),
            })?;
    for ov in overrides {
        apply_override(&mut table, ov)?;
    }
    from_table(table, &with_overrides(origin, overrides))
}

/// A TOML parse error on one line: its position and message, without the
/// source excerpt the parser draws under it.
fn toml_error_line(e: &toml::de::Error) -> String {
    let text = e.to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('|') && !l.starts_with('^'))
        .collect();
    let joined = parts.join(": ");
    joined.replace("TOML parse error at ", "")
}

/// Where a config's values came from, for error messages.
fn with_overrides(origin: String, overrides: &[String]) -> String {
    if overrides.is_empty() {
        origin
    } else {
        format!("{origin} with --set overrides")
    }
}

/// Set `a.b.c = value` in a TOML table from a `--set a.b.c=value` argument.
fn apply_override(table: &mut toml::Table, spec: &str) -> Result<()> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| Error::config(spec, "an override must look like key=value"))?;
    let key = key.trim();
    let value = parse_value(raw.trim());
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts
        .pop()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::config(key, "empty key"))?;
    let mut cur = table;
    for p in parts {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| Error::config(key, format!("`{p}` is not a table")))?;
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_without_out_dir_gets_its_models_folder() {
        assert_eq!(default_out_dir("builtin"), Path::new("runs/builtin"));
        assert_eq!(
            default_out_dir("Qwen/Qwen2.5-1.5B-Instruct"),
            Path::new("runs/Qwen2.5-1.5B-Instruct")
        );
        assert_eq!(default_out_dir("/m/tiny v2/"), Path::new("runs/tiny_v2"));
        assert_eq!(default_out_dir(".."), Path::new("runs/default"));
        let cfg = RunConfig::from_toml_str("[model]\npath = \"/x/tiny\"\n").unwrap();
        assert_eq!(cfg.runtime.out_dir, Path::new("runs/tiny"));
        let cfg =
            RunConfig::from_toml_str("[model]\npath = \"/x/tiny\"\n[runtime]\nout_dir = \"r\"\n")
                .unwrap();
        assert_eq!(cfg.runtime.out_dir, Path::new("r"));
    }

    #[test]
    fn empty_file_gives_defaults() {
        let cfg = RunConfig::from_toml_str("").unwrap();
        assert_eq!(cfg.rollout.group_size, 8);
        assert_eq!(cfg.model.path, "builtin");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = RunConfig::from_toml_str("[algo]\nlamda0 = 0.3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lamda0"), "{err}");
        let err = RunConfig::from_toml_str("[rollout]\ngroup_size = \"eight\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rollout.group_size"), "{err}");
    }

    #[test]
    fn overrides_set_nested_keys() {
        let mut t = toml::Table::new();
        apply_override(&mut t, "rollout.group_size=4").unwrap();
        apply_override(&mut t, "model.path=some/dir").unwrap();
        let cfg = RunConfig::from_table(t, "x").unwrap();
        assert_eq!(cfg.rollout.group_size, 4);
        assert_eq!(cfg.model.path, "some/dir");
        assert!(apply_override(&mut toml::Table::new(), "novalue").is_err());
    }

    #[test]
    fn generation_budget_and_stop_strings_parse_and_empty_stops_are_refused() {
        let cfg = RunConfig::from_toml_str(
            "[rollout]\nkv_cache_bytes = 4_000_000_000\nstop = [\"</answer>\"]\n",
        )
        .unwrap();
        assert_eq!(cfg.rollout.kv_cache_bytes, 4_000_000_000);
        assert_eq!(cfg.rollout.stop, ["</answer>"]);
        let err = RunConfig::from_toml_str("[rollout]\nstop = [\"a\", \"\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rollout.stop") && err.contains("stop string 1"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_rejected_with_their_key() {
        let err = RunConfig::from_toml_str("[runtime]\nteacher_sync_interval = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("runtime.teacher_sync_interval"), "{err}");
        let err = RunConfig::from_toml_str("[runtime]\nsampler_device = \"tpu\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("runtime.sampler_device"), "{err}");
        for bad in ["0", "-5.0", "nan"] {
            let err =
                RunConfig::from_toml_str(&format!("[runtime]\ncollective_timeout_s = {bad}\n"))
                    .unwrap_err()
                    .to_string();
            assert!(err.contains("runtime.collective_timeout_s"), "{bad}: {err}");
        }
        let err = RunConfig::from_toml_str("[runtime]\nplacement = \"split\"\nsampler_ranks = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("runtime.sampler_ranks"), "{err}");
        let err = RunConfig::from_toml_str("[runtime]\nplacement = \"spread\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("runtime.placement"), "{err}");
    }
}
