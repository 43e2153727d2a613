//! The model configuration, read from a Hugging Face `config.json`.
//!
//! Field names are Hugging Face's. Real checkpoints come in two forms: the
//! transformers-4 form keeps `rope_theta` and `rope_scaling` at the top level,
//! the transformers-5 form nests them in `rope_parameters`. Both are resolved
//! here, in one place, into a flat [`Config`]. Saving writes both forms so that
//! either transformers major version reads the file.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::path::Path;

/// Which decoder family a checkpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Llama 2 / 3 (`LlamaForCausalLM`).
    Llama,
    /// Qwen2 / Qwen2.5 (`Qwen2ForCausalLM`): biases on q, k, v.
    Qwen2,
    /// Qwen3 (`Qwen3ForCausalLM`): RMSNorm on q and k per head.
    Qwen3,
}

impl Arch {
    /// The `architectures` entry transformers expects.
    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
        }
    }

    /// The `model_type` transformers expects.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }

    fn from_name(name: &str) -> Option<Arch> {
        match name {
            "LlamaForCausalLM" | "llama" => Some(Arch::Llama),
            "Qwen2ForCausalLM" | "qwen2" => Some(Arch::Qwen2),
            "Qwen3ForCausalLM" | "qwen3" => Some(Arch::Qwen3),
            _ => None,
        }
    }
}

/// Llama-3 style frequency-dependent RoPE scaling (`rope_type = "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    /// Overall stretch of the low frequencies.
    pub factor: f64,
    /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are scaled fully.
    pub low_freq_factor: f64,
    /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
    pub high_freq_factor: f64,
    /// The context length the model was pre-trained with.
    pub original_max_position_embeddings: f64,
}

/// A decoder's hyper-parameters, flattened from `config.json`.
///
/// As a TOML section it takes these flat names; `Default` is [`Config::tiny`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Decoder family.
    pub arch: Arch,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: i64,
    /// Width of the residual stream.
    pub hidden_size: i64,
    /// Width of the SwiGLU hidden layer.
    pub intermediate_size: i64,
    /// Number of decoder layers.
    pub num_hidden_layers: i64,
    /// Query heads.
    pub num_attention_heads: i64,
    /// Key/value heads (grouped-query attention when fewer than query heads).
    pub num_key_value_heads: i64,
    /// Width of one head (`hidden_size / num_attention_heads` unless given).
    pub head_dim: i64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Llama-3 RoPE scaling, when the checkpoint uses it.
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Longest position the model was configured for.
    pub max_position_embeddings: i64,
    /// Output head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Biases on the q, k, v projections (Qwen2; Llama's `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama's `attention_bias`).
    pub o_bias: bool,
    /// Biases in the MLP (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// Per-head RMSNorm on queries and keys (Qwen3).
    pub qk_norm: bool,
    /// Beginning-of-sequence token, if any.
    pub bos_token_id: Option<i64>,
    /// End-of-sequence tokens from `config.json` (may be several).
    pub eos_token_id: Vec<i64>,
    /// Padding token from `config.json`.
    pub pad_token_id: Option<i64>,
}

impl Default for Config {
    fn default() -> Self {
        Config::tiny()
    }
}

impl Config {
    /// A small Qwen2-style model for tests and the built-in task
    /// (hidden 64, 2 layers, 4 heads, 2 KV heads, vocab 64).
    pub fn tiny() -> Config {
        Config {
            arch: Arch::Qwen2,
            vocab_size: 64,
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 16,
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            rope_scaling: None,
            max_position_embeddings: 512,
            tie_word_embeddings: true,
            qkv_bias: true,
            o_bias: false,
            mlp_bias: false,
            qk_norm: false,
            bos_token_id: None,
            eos_token_id: vec![],
            pad_token_id: None,
        }
    }

    /// Read and resolve `config.json`.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Config::from_json_str(&text, path)
    }

    /// Resolve a `config.json` text; `path` only names the file in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Config> {
        let bad = |msg: String| Error::Model {
            path: path.to_path_buf(),
            msg,
        };
        let v: Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("expected a JSON object".into()))?;
        let archs: Vec<String> = match obj.get("architectures") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => vec![],
        };
        let model_type = obj.get("model_type").and_then(Value::as_str).unwrap_or("");
        let arch = match archs.first() {
            Some(a) => Arch::from_name(a).ok_or_else(|| {
                bad(format!(
                    "unsupported architectures {archs:?} (supported: LlamaForCausalLM, \
                     Qwen2ForCausalLM, Qwen3ForCausalLM)"
                ))
            })?,
            None => Arch::from_name(model_type).ok_or_else(|| {
                bad(format!(
                    "no `architectures` and unsupported model_type {model_type:?} \
                     (supported: llama, qwen2, qwen3)"
                ))
            })?,
        };
        let int = |key: &str| -> Result<Option<i64>> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| bad(format!("`{key}` must be an integer, found {x}"))),
            }
        };
        let float = |o: &Map<String, Value>, key: &str| -> Result<Option<f64>> {
            match o.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| bad(format!("`{key}` must be a number, found {x}"))),
            }
        };
        let boolean = |key: &str, default: bool| -> Result<bool> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .as_bool()
                    .ok_or_else(|| bad(format!("`{key}` must be a boolean, found {x}"))),
            }
        };
        let need = |key: &str| -> Result<i64> {
            int(key)?.ok_or_else(|| bad(format!("missing required key `{key}`")))
        };

        let hidden_size = need("hidden_size")?;
        let num_attention_heads = need("num_attention_heads")?;
        let num_key_value_heads = int("num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_attention_heads <= 0 || hidden_size <= 0 {
            return Err(bad(
                "hidden_size and num_attention_heads must be positive".into()
            ));
        }
        if num_key_value_heads <= 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(bad(format!(
                "num_attention_heads ({num_attention_heads}) must be a multiple of \
                 num_key_value_heads ({num_key_value_heads})"
            )));
        }
        let head_dim = int("head_dim")?.unwrap_or(hidden_size / num_attention_heads);
        if head_dim <= 0 || head_dim % 2 != 0 {
            return Err(bad(format!(
                "head_dim must be positive and even, found {head_dim}"
            )));
        }

        // RoPE: transformers 5 nests everything in `rope_parameters`; transformers 4
        // has `rope_theta` at the top and the scaling dict in `rope_scaling`.
        let empty = Map::new();
        let rope_params = match obj.get("rope_parameters") {
            Some(Value::Object(o)) => Some(o),
            _ => None,
        };
        let scaling_obj = match (rope_params, obj.get("rope_scaling")) {
            (Some(o), _) => o,
            (None, Some(Value::Object(o))) => o,
            _ => &empty,
        };
        let rope_theta = match rope_params.map(|o| float(o, "rope_theta")).transpose()? {
            Some(Some(t)) => t,
            _ => float(obj, "rope_theta")?.unwrap_or(10_000.0),
        };
        let rope_type = scaling_obj
            .get("rope_type")
            .or_else(|| scaling_obj.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let rope_scaling = match rope_type {
            "default" => None,
            "llama3" => {
                let f = |k: &str| -> Result<f64> {
                    float(scaling_obj, k)?
                        .ok_or_else(|| bad(format!("llama3 rope scaling needs `{k}`")))
                };
                Some(Llama3RopeScaling {
                    factor: f("factor")?,
                    low_freq_factor: f("low_freq_factor")?,
                    high_freq_factor: f("high_freq_factor")?,
                    original_max_position_embeddings: f("original_max_position_embeddings")?,
                })
            }
            other => {
                return Err(bad(format!(
                    "unsupported rope_type {other:?} (supported: default, llama3)"
                )))
            }
        };
        if let Some(act) = obj.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(bad(format!("unsupported hidden_act {act:?} (only silu)")));
            }
        }
        if boolean("use_sliding_window", false)? {
            return Err(bad(
                "use_sliding_window = true is not supported (full attention only)".into(),
            ));
        }
        let attention_bias = boolean("attention_bias", false)?;
        let eos_token_id = match obj.get("eos_token_id") {
            None | Some(Value::Null) => vec![],
            Some(x) => ids_from_json(x).ok_or_else(|| bad(format!("bad `eos_token_id` {x}")))?,
        };
        let vocab_size = need("vocab_size")?;
        let cfg = Config {
            arch,
            vocab_size,
            hidden_size,
            intermediate_size: need("intermediate_size")?,
            num_hidden_layers: need("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: float(obj, "rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: int("max_position_embeddings")?.unwrap_or(4096),
            // transformers' default is false for all three config classes.
            tie_word_embeddings: boolean("tie_word_embeddings", false)?,
            qkv_bias: arch == Arch::Qwen2 || attention_bias,
            o_bias: arch != Arch::Qwen2 && attention_bias,
            mlp_bias: boolean("mlp_bias", false)?,
            qk_norm: arch == Arch::Qwen3,
            bos_token_id: int("bos_token_id")?,
            eos_token_id,
            pad_token_id: int("pad_token_id")?,
        };
        for (key, v) in [
            ("vocab_size", cfg.vocab_size),
            ("intermediate_size", cfg.intermediate_size),
            ("num_hidden_layers", cfg.num_hidden_layers),
            ("max_position_embeddings", cfg.max_position_embeddings),
        ] {
            if v <= 0 {
                return Err(bad(format!("`{key}` must be positive, found {v}")));
            }
        }
        for (key, v) in [
            ("rms_norm_eps", cfg.rms_norm_eps),
            ("rope_theta", cfg.rope_theta),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(format!("`{key}` must be a positive number, found {v}")));
            }
        }
        Ok(cfg)
    }

    /// The `config.json` transformers reads back: both the transformers-4 keys
    /// (`rope_theta`, `rope_scaling`, `torch_dtype`) and the transformers-5 keys
    /// (`rope_parameters`, `dtype`). `dtype` is the stored weights' type name
    /// (`float32`, `bfloat16`, `float16`).
    pub fn to_hf_json(&self, dtype: &str) -> Value {
        let mut rope = json!({ "rope_type": "default", "rope_theta": self.rope_theta });
        let scaling = self.rope_scaling.map(|s| {
            json!({
                "rope_type": "llama3",
                "factor": s.factor,
                "low_freq_factor": s.low_freq_factor,
                "high_freq_factor": s.high_freq_factor,
                // transformers insists on an integer here.
                "original_max_position_embeddings": s.original_max_position_embeddings.round() as i64,
            })
        });
        if let Some(s) = &scaling {
            rope = s.clone();
            rope["rope_theta"] = json!(self.rope_theta);
        }
        let eos = match self.eos_token_id.as_slice() {
            [] => Value::Null,
            [one] => json!(one),
            many => json!(many),
        };
        let mut v = json!({
            "architectures": [self.arch.hf_class()],
            "model_type": self.arch.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "pad_token_id": self.pad_token_id,
            "rope_theta": self.rope_theta,
            "rope_scaling": scaling,
            "rope_parameters": rope,
            "torch_dtype": dtype,
            "dtype": dtype,
            "use_cache": true,
        });
        match self.arch {
            Arch::Llama => {
                v["attention_bias"] = json!(self.qkv_bias);
                v["mlp_bias"] = json!(self.mlp_bias);
            }
            Arch::Qwen2 => {
                v["use_sliding_window"] = json!(false);
            }
            Arch::Qwen3 => {
                v["attention_bias"] = json!(self.qkv_bias);
                v["use_sliding_window"] = json!(false);
            }
        }
        v
    }

    /// Check the fields the modules rely on; used by `random` and `load`.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Error::config("model", msg);
        if self.vocab_size <= 0 || self.hidden_size <= 0 || self.intermediate_size <= 0 {
            return Err(bad(
                "vocab, hidden and intermediate sizes must be positive".into()
            ));
        }
        if self.num_key_value_heads <= 0 || self.num_attention_heads % self.num_key_value_heads != 0
        {
            return Err(bad(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            )));
        }
        if self.head_dim <= 0 || self.head_dim % 2 != 0 {
            return Err(bad(format!(
                "head_dim must be positive and even, found {}",
                self.head_dim
            )));
        }
        Ok(())
    }
}

/// Token ids from a JSON integer or list of integers (`eos_token_id` takes both forms).
pub(crate) fn ids_from_json(v: &Value) -> Option<Vec<i64>> {
    match v {
        Value::Number(n) => n.as_i64().map(|i| vec![i]),
        Value::Array(a) => a.iter().map(Value::as_i64).collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config> {
        Config::from_json_str(s, Path::new("config.json"))
    }

    const BASE: &str = r#""hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 50"#;

    #[test]
    fn transformers4_and_5_forms_agree() {
        let v4 = parse(&format!(
            r#"{{"architectures": ["LlamaForCausalLM"], {BASE}, "rope_theta": 500000.0,
            "rope_scaling": {{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
            "eos_token_id": [1, 2]}}"#
        ))
        .unwrap();
        let v5 = parse(&format!(
            r#"{{"architectures": ["LlamaForCausalLM"], {BASE}, "rope_parameters":
            {{"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
            "eos_token_id": [1, 2]}}"#
        ))
        .unwrap();
        assert_eq!(v4, v5);
        assert_eq!(v4.rope_theta, 500000.0);
        assert_eq!(v4.rope_scaling.unwrap().factor, 8.0);
        assert_eq!(v4.head_dim, 16);
        assert_eq!(v4.eos_token_id, vec![1, 2]);
        // Written back, both forms are present and parse to the same config.
        let back = parse(&v4.to_hf_json("float32").to_string()).unwrap();
        assert_eq!(back, v4);
    }

    #[test]
    fn arch_specific_flags() {
        let q2 = parse(&format!(
            r#"{{"architectures": ["Qwen2ForCausalLM"], {BASE}, "tie_word_embeddings": true}}"#
        ))
        .unwrap();
        assert!(q2.qkv_bias && !q2.o_bias && !q2.qk_norm && q2.tie_word_embeddings);
        let e = parse(&format!(
            r#"{{"architectures": ["Qwen2ForCausalLM"], {BASE}, "use_sliding_window": true}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("use_sliding_window"), "{e}");
        let q3 = parse(&format!(
            r#"{{"model_type": "qwen3", {BASE}, "head_dim": 32}}"#
        ))
        .unwrap();
        assert!(!q3.qkv_bias && q3.qk_norm && !q3.tie_word_embeddings);
        assert_eq!(q3.head_dim, 32);
    }

    #[test]
    fn unknown_architecture_is_named() {
        let e = parse(&format!(
            r#"{{"architectures": ["GPT2LMHeadModel"], {BASE}}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("GPT2LMHeadModel") && e.contains("config.json"),
            "{e}"
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let e = parse(r#"{"model_type": "llama", "hidden_size": 64}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("num_attention_heads"), "{e}");
        let e = parse(&format!(
            r#"{{"model_type": "llama", {BASE}, "rope_theta": "big"}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("rope_theta"), "{e}");
        let e = parse(&format!(
            r#"{{"model_type": "llama", {BASE}, "rope_scaling": {{"rope_type": "yarn"}}}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("yarn"), "{e}");
    }
}
