//! LoRA settings: the `[model.lora]` section of a run and peft's
//! `adapter_config.json` (peft's `LoraConfig`, `tuners/lora/config.py`).
//!
//! Both map onto one [`LoraConfig`]. A peft file is read key by key: the keys
//! that shape the adapter (`r`, `lora_alpha`, `lora_dropout`,
//! `target_modules`, `use_rslora`) are taken, bookkeeping keys
//! (`peft_version`, `base_model_name_or_path`, ...) are ignored, options this
//! project does not implement must hold their inert default (`bias = "none"`,
//! `use_dora = false`, empty `rank_pattern`, ...), and any other key is
//! refused by name, so an adapter is never silently applied differently from
//! peft.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::path::Path;

/// The linear layers an adapter may target, by peft's module names.
pub const TARGET_MODULES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// `[model.lora]`: low-rank adapters `W + scale * B A` on chosen linear layers
/// (Hu et al. 2021), with the base weights frozen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank `r` of `A [r, in]` and `B [out, r]` (peft `r`).
    pub rank: i64,
    /// `alpha` in the scale `alpha / r` (peft `lora_alpha`).
    pub alpha: f64,
    /// Dropout on the adapter's input while training (peft `lora_dropout`),
    /// in `[0, 1)`. Masks are a function of (step, micro-batch, layer,
    /// module), so activation checkpointing recomputes the same ones; in
    /// generation, evaluation and the teacher's pass dropout is the identity.
    pub dropout: f64,
    /// Which projections get adapters, by peft's names (see [`TARGET_MODULES`]).
    pub target_modules: Vec<String>,
    /// rsLoRA scaling `alpha / sqrt(r)` (Kalajdzievski 2023; peft `use_rslora`).
    pub rslora: bool,
    /// Seed of the Kaiming-uniform draw of the `A` matrices.
    pub init_seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            target_modules: ["q_proj", "k_proj", "v_proj", "o_proj"]
                .map(String::from)
                .to_vec(),
            rslora: false,
            init_seed: 0,
        }
    }
}

impl LoraConfig {
    /// The factor on `B A`: `alpha / r`, or `alpha / sqrt(r)` with rsLoRA
    /// (peft `LoraLayer.update_layer`).
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    /// Whether `module` (`q_proj`, ...) gets an adapter.
    pub fn targets(&self, module: &str) -> bool {
        self.target_modules.iter().any(|t| t == module)
    }

    /// Adapter parameters on a decoder of shape `c`: `r (in + out)` per
    /// targeted projection and layer.
    pub fn param_count(&self, c: &super::Config) -> u64 {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let (q, k) = (
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
        );
        let per_layer: i64 = self
            .target_modules
            .iter()
            .map(|m| match m.as_str() {
                "q_proj" => h + q,
                "k_proj" | "v_proj" => h + k,
                "o_proj" => q + h,
                "gate_proj" | "up_proj" | "down_proj" => h + i,
                _ => 0,
            })
            .sum();
        (self.rank * per_layer * c.num_hidden_layers) as u64
    }

    /// Check ranges and module names; errors name `model.lora.KEY`.
    pub fn validate(&self) -> Result<()> {
        if self.rank < 1 {
            return Err(Error::config("model.lora.rank", "must be at least 1"));
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(Error::config("model.lora.alpha", "must be positive"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config("model.lora.dropout", "must be in [0, 1)"));
        }
        if self.target_modules.is_empty() {
            return Err(Error::config(
                "model.lora.target_modules",
                "names no module",
            ));
        }
        for m in &self.target_modules {
            if !TARGET_MODULES.contains(&m.as_str()) {
                return Err(Error::config(
                    "model.lora.target_modules",
                    format!("unknown module {m:?} (expected some of {TARGET_MODULES:?})"),
                ));
            }
        }
        Ok(())
    }

    /// [`LoraConfig::validate`] for a run that trains the adapter. Dropout is
    /// accepted: its masks are drawn from the train step's key, so the
    /// checkpointed backward's recomputation draws the same ones
    /// ([`super::lora_dropout`]).
    pub fn validate_for_training(&self) -> Result<()> {
        self.validate()
    }

    /// Read peft's `adapter_config.json`; errors name the file and the key.
    pub fn from_peft_file(path: &Path) -> Result<LoraConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bad = |msg: String| Error::Model {
            path: path.to_path_buf(),
            msg,
        };
        let value: Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let map = value
            .as_object()
            .ok_or_else(|| bad("expected a JSON object".into()))?;
        let cfg = from_peft_map(map).map_err(bad)?;
        cfg.validate().map_err(|e| bad(e.to_string()))?;
        Ok(cfg)
    }

    /// peft's `adapter_config.json` for this adapter (what
    /// `LoraConfig.save_pretrained` writes, less the options left at their
    /// defaults that older peft versions do not know).
    pub fn to_peft_json(&self, base_model: Option<&str>) -> Value {
        json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "inference_mode": true,
            "r": self.rank,
            "lora_alpha": self.alpha,
            "lora_dropout": self.dropout,
            "target_modules": self.target_modules,
            "use_rslora": self.rslora,
            "bias": "none",
            "fan_in_fan_out": false,
            "use_dora": false,
            "init_lora_weights": true,
            "modules_to_save": null,
            "layers_to_transform": null,
            "layers_pattern": null,
            "rank_pattern": {},
            "alpha_pattern": {},
        })
    }
}

/// Keys with no effect on the adapter's numbers.
const IGNORED_KEYS: [&str; 7] = [
    "auto_mapping",
    "base_model_name_or_path",
    "revision",
    "inference_mode",
    "peft_version",
    "megatron_core",
    "qalora_group_size",
];

/// Options this project does not implement: accepted only at their inert
/// value (null, false, an empty list or object, or an object of such).
const INERT_KEYS: [&str; 29] = [
    "exclude_modules",
    "modules_to_save",
    "layers_to_transform",
    "layers_pattern",
    "rank_pattern",
    "alpha_pattern",
    "megatron_config",
    "trainable_token_indices",
    "loftq_config",
    "eva_config",
    "corda_config",
    "astra_config",
    "lora_ga_config",
    "use_dora",
    "velora_config",
    "alora_invocation_tokens",
    "use_qalora",
    "monteclora_config",
    "layer_replication",
    "lora_bias",
    "target_parameters",
    "use_bdlora",
    "arrow_config",
    "kasa_config",
    "ensure_weight_tying",
    "runtime_config",
    "fan_in_fan_out",
    "trainable_token_config",
    "layer_replication_config",
];

/// Whether `v` leaves an option off: null, false, empty, or an object of such.
fn inert(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(inert),
        _ => false,
    }
}

fn from_peft_map(map: &Map<String, Value>) -> std::result::Result<LoraConfig, String> {
    let mut cfg = LoraConfig {
        dropout: 0.0,
        rslora: false,
        ..LoraConfig::default()
    };
    let (mut rank, mut alpha, mut targets) = (None, None, None);
    for (key, v) in map {
        let refuse = |what: &str| Err(format!("option `{key}` = {v}: {what}"));
        match key.as_str() {
            "peft_type" if v == "LORA" => {}
            "peft_type" => return refuse("only LORA adapters are supported"),
            "task_type" if v.is_null() || v == "CAUSAL_LM" => {}
            "task_type" => return refuse("only CAUSAL_LM (or null) is supported"),
            "r" => {
                rank = Some(
                    v.as_i64()
                        .ok_or(format!("option `r` = {v}: not an integer"))?,
                )
            }
            "lora_alpha" => {
                alpha = Some(
                    v.as_f64()
                        .ok_or(format!("option `lora_alpha` = {v}: not a number"))?,
                )
            }
            "lora_dropout" => {
                cfg.dropout = v
                    .as_f64()
                    .ok_or(format!("option `lora_dropout` = {v}: not a number"))?
            }
            "use_rslora" => {
                cfg.rslora = v
                    .as_bool()
                    .ok_or(format!("option `use_rslora` = {v}: not a boolean"))?
            }
            "target_modules" => targets = Some(target_list(v).map_err(|m| format!("{key}: {m}"))?),
            "bias" if v == "none" => {}
            "bias" => return refuse("only \"none\" is supported (biases are not trained)"),
            // The initialisation does not matter for a saved adapter, except
            // schemes (PiSSA, OLoRA, ...) that also rewrite the base weights.
            "init_lora_weights" if v.is_boolean() => {}
            "init_lora_weights" => return refuse("only true or false is supported"),
            k if IGNORED_KEYS.contains(&k) => {}
            k if INERT_KEYS.contains(&k) => {
                if !inert(v) {
                    return refuse("not supported (only its default is)");
                }
            }
            _ => return Err(format!("unknown option `{key}` (not supported by rlsd)")),
        }
    }
    cfg.rank = rank.ok_or("option `r` is missing")?;
    cfg.alpha = alpha.ok_or("option `lora_alpha` is missing")?;
    cfg.target_modules = targets.ok_or("option `target_modules` is missing")?;
    Ok(cfg)
}

/// `target_modules`: a list of module names, or `"all-linear"` (every
/// projection of the decoder; peft leaves the output head out).
fn target_list(v: &Value) -> std::result::Result<Vec<String>, String> {
    match v {
        Value::String(s) if s == "all-linear" => {
            Ok(TARGET_MODULES.iter().map(|s| s.to_string()).collect())
        }
        Value::String(s) => Err(format!(
            "the pattern {s:?} is not supported; list the modules instead"
        )),
        Value::Array(items) => {
            let mut names: Vec<String> = items
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or(format!("entry {x} is not a string"))
                })
                .collect::<std::result::Result<_, _>>()?;
            names.sort_by_key(|n| TARGET_MODULES.iter().position(|t| t == n));
            Ok(names)
        }
        other => Err(format!("expected a list of module names, got {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LoraConfig> {
        let dir = std::env::temp_dir().join(format!("lora-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("adapter_config_{n}.json"));
        std::fs::write(&path, text).unwrap();
        let out = LoraConfig::from_peft_file(&path);
        let _ = std::fs::remove_file(&path);
        out
    }

    #[test]
    fn scale_is_alpha_over_r_or_over_sqrt_r() {
        let mut c = LoraConfig {
            rank: 4,
            alpha: 8.0,
            ..LoraConfig::default()
        };
        assert_eq!(c.scale(), 2.0);
        c.rslora = true;
        assert_eq!(c.scale(), 4.0); // 8 / sqrt(4)
    }

    #[test]
    fn param_count_is_rank_times_in_plus_out() {
        // h 8, i 16, 2 query heads and 1 kv head of 4, 3 layers.
        let c = super::super::Config {
            hidden_size: 8,
            intermediate_size: 16,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: 4,
            num_hidden_layers: 3,
            ..super::super::Config::tiny()
        };
        let l = LoraConfig {
            rank: 2,
            target_modules: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
            ..LoraConfig::default()
        };
        // per layer: q (8 + 8) + v (8 + 4) + down (16 + 8) = 52; x r 2 x 3 layers.
        assert_eq!(l.param_count(&c), 312);
    }

    #[test]
    fn peft_file_round_trips_and_takes_its_numbers() {
        let c = LoraConfig {
            rank: 3,
            alpha: 5.0,
            target_modules: vec!["q_proj".into(), "down_proj".into()],
            rslora: true,
            ..LoraConfig::default()
        };
        let back = parse(&c.to_peft_json(Some("x")).to_string()).unwrap();
        assert_eq!(back, c);
        let all = parse(r#"{"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":"all-linear","lora_dropout":0.05,"rank_pattern":{},"runtime_config":{"ephemeral_gpu_offload":false}}"#).unwrap();
        assert_eq!(all.target_modules.len(), 7);
        assert_eq!(all.dropout, 0.05);
        assert!(all.validate_for_training().is_ok());
    }

    #[test]
    fn unsupported_or_unknown_options_are_refused_by_name() {
        for (text, key) in [
            (
                r#"{"r":2,"lora_alpha":4,"target_modules":["q_proj"],"use_dora":true}"#,
                "use_dora",
            ),
            (
                r#"{"r":2,"lora_alpha":4,"target_modules":["q_proj"],"bias":"all"}"#,
                "bias",
            ),
            (
                r#"{"r":2,"lora_alpha":4,"target_modules":["q_proj"],"fan_in_fan_out":true}"#,
                "fan_in_fan_out",
            ),
            (
                r#"{"r":2,"lora_alpha":4,"target_modules":["q_proj"],"rank_pattern":{"q_proj":4}}"#,
                "rank_pattern",
            ),
            (
                r#"{"r":2,"lora_alpha":4,"target_modules":["q_proj"],"frobnicate":1}"#,
                "frobnicate",
            ),
            (
                r#"{"r":2,"lora_alpha":4,"target_modules":".*proj"}"#,
                "target_modules",
            ),
            (
                r#"{"r":2,"lora_alpha":4,"target_modules":["lm_head"]}"#,
                "target_modules",
            ),
            (r#"{"r":2,"target_modules":["q_proj"]}"#, "lora_alpha"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(".json"), "{key}: {err}");
        }
    }
}
