//! `config.json` of a vision-language checkpoint (`Qwen2_5_VLForConditionalGeneration`,
//! `Qwen3VLForConditionalGeneration`).
//!
//! transformers writes it in two layouts: transformers 5 nests the language
//! model's keys in `text_config` (M-RoPE in `rope_parameters.mrope_section`);
//! the Hub's transformers-4 checkpoints keep them at the top level (M-RoPE in
//! `rope_scaling`, `"type": "mrope"`). Both carry `vision_config`. The
//! language half resolves through the text models' [`Config`] (as Qwen2 for
//! Qwen2.5-VL, Qwen3 for Qwen3-VL), so the decoder is the same code; the
//! vision half becomes [`VisionConfig`].
//!
//! Refused by name: Qwen2-VL (a different tower), the MoE variants, a vision
//! `hidden_act` other than the family's, and an `mrope_section` that does not
//! cover the rotary half-width.

use crate::error::{Error, Result};
use crate::model::config::{Arch, Config};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Which vision-language family a checkpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VlFamily {
    /// Qwen2.5-VL: RMSNorm/SwiGLU tower with window attention, Qwen2 decoder.
    Qwen2_5,
    /// Qwen3-VL (dense): LayerNorm/GELU tower with a learned position table
    /// and deepstack mergers, Qwen3 decoder, interleaved M-RoPE.
    Qwen3,
}

/// The vision tower's hyper-parameters (`vision_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// The tower's family (decides the block and merger layout).
    pub family: VlFamily,
    /// Number of vision blocks (`depth`).
    pub depth: i64,
    /// Width of the tower's residual stream.
    pub hidden_size: i64,
    /// Width of the SwiGLU hidden layer.
    pub intermediate_size: i64,
    /// Attention heads (`num_heads`).
    pub num_heads: i64,
    /// Input channels (`in_channels`, or `in_chans` in older files).
    pub in_channels: i64,
    /// Side of a square patch in pixels.
    pub patch_size: i64,
    /// Frames per temporal patch (an image is repeated this many times).
    pub temporal_patch_size: i64,
    /// Side of the block of patches the merger folds into one token.
    pub spatial_merge_size: i64,
    /// Side of an attention window in pixels (`window_size / merge / patch` merged patches).
    pub window_size: i64,
    /// Blocks that attend over the whole image instead of windows.
    pub fullatt_block_indexes: Vec<i64>,
    /// Output width of the merger (the language model's hidden size).
    pub out_hidden_size: i64,
    /// Base of the 2D rotary frequencies.
    pub rope_theta: f64,
    /// Qwen3-VL: entries of the learned square position table (a square number).
    pub num_position_embeddings: i64,
    /// Qwen3-VL: blocks whose output feeds a deepstack merger, in order; the
    /// k-th merger's features are added after decoder layer k.
    pub deepstack_visual_indexes: Vec<i64>,
}

impl VisionConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_heads
    }

    /// Values of one flattened patch: `in_channels * temporal_patch * patch^2`.
    pub fn patch_dim(&self) -> i64 {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

/// A vision-language checkpoint's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct VlConfig {
    /// The language model (a Qwen2 decoder).
    pub text: Config,
    /// The vision tower.
    pub vision: VisionConfig,
    /// Rotary half-width split over the (t, h, w) axes (`mrope_section`).
    pub mrope_section: Vec<i64>,
    /// Qwen3-VL's layout of the sections: frequencies cycle t, h, w
    /// (`mrope_interleaved`) instead of three contiguous blocks.
    pub mrope_interleaved: bool,
    /// `<|image_pad|>`: the tokens replaced by image features.
    pub image_token_id: i64,
    /// `<|video_pad|>`: refused in inputs (video is not supported).
    pub video_token_id: i64,
    /// `<|vision_start|>`.
    pub vision_start_token_id: i64,
}

/// Class names that are vision-language but not supported, with the reason.
const REFUSED: [(&str, &str); 3] = [
    (
        "Qwen2VLForConditionalGeneration",
        "Qwen2-VL's vision tower (LayerNorm, no windows) is not implemented",
    ),
    (
        "Qwen2_5_VLMoeForConditionalGeneration",
        "mixture-of-experts variants are not supported",
    ),
    (
        "Qwen3VLMoeForConditionalGeneration",
        "mixture-of-experts variants are not supported",
    ),
];

impl VlConfig {
    /// Whether `config.json` at `path` names a vision-language architecture
    /// (it has a `vision_config`).
    pub fn is_vl_file(path: &Path) -> bool {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|v| v.get("vision_config").is_some())
    }

    /// Read and resolve `config.json`.
    pub fn from_file(path: &Path) -> Result<VlConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        VlConfig::from_json_str(&text, path)
    }

    /// Resolve a `config.json` text; `path` only names the file in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<VlConfig> {
        let bad = |msg: String| Error::Model {
            path: path.to_path_buf(),
            msg,
        };
        let v: Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let top = v
            .as_object()
            .ok_or_else(|| bad("expected a JSON object".into()))?;
        let class = top
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| match top.get("model_type").and_then(Value::as_str) {
                Some("qwen2_5_vl") => "Qwen2_5_VLForConditionalGeneration".into(),
                Some("qwen3_vl") => "Qwen3VLForConditionalGeneration".into(),
                Some(other) => other.to_string(),
                None => String::new(),
            });
        if let Some((_, why)) = REFUSED.iter().find(|(c, _)| *c == class) {
            return Err(bad(format!("{class}: {why}")));
        }
        let model_type = top.get("model_type").and_then(Value::as_str);
        let family = match (class.as_str(), model_type) {
            ("Qwen2_5_VLForConditionalGeneration", None | Some("qwen2_5_vl")) => VlFamily::Qwen2_5,
            ("Qwen3VLForConditionalGeneration", None | Some("qwen3_vl")) => VlFamily::Qwen3,
            _ => {
                return Err(bad(format!(
                    "unsupported vision-language model {class:?} (model_type {model_type:?}); \
                     supported: Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration"
                )))
            }
        };
        let vision = match top.get("vision_config") {
            Some(Value::Object(o)) => vision_config(o, family, &bad)?,
            _ => return Err(bad("missing `vision_config` object".into())),
        };
        // The language half: `text_config` (transformers 5) or the top level.
        let text_obj = match top.get("text_config") {
            Some(Value::Object(o)) => o,
            _ => top,
        };
        let (text, mrope_section, mrope_interleaved) = text_config(text_obj, top, family, path)?;
        let id = |key: &str, default: i64| -> Result<i64> {
            match top.get(key).or_else(|| text_obj.get(key)) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .as_i64()
                    .ok_or_else(|| bad(format!("`{key}` must be an integer, found {x}"))),
            }
        };
        let cfg = VlConfig {
            text,
            mrope_section,
            mrope_interleaved,
            image_token_id: id("image_token_id", 151655)?,
            video_token_id: id("video_token_id", 151656)?,
            vision_start_token_id: id("vision_start_token_id", 151652)?,
            vision,
        };
        cfg.check(path)?;
        Ok(cfg)
    }

    fn check(&self, path: &Path) -> Result<()> {
        let bad = |msg: String| Error::Model {
            path: path.to_path_buf(),
            msg,
        };
        let half = self.text.head_dim / 2;
        let sum: i64 = self.mrope_section.iter().sum();
        if self.mrope_section.len() != 3 || sum != half {
            return Err(bad(format!(
                "`mrope_section` {:?} must have 3 entries summing to head_dim / 2 = {half}",
                self.mrope_section
            )));
        }
        let v = &self.vision;
        if v.out_hidden_size != self.text.hidden_size {
            return Err(bad(format!(
                "vision_config.out_hidden_size ({}) must equal the language model's hidden_size ({})",
                v.out_hidden_size, self.text.hidden_size
            )));
        }
        if v.num_heads <= 0 || v.hidden_size % v.num_heads != 0 || v.head_dim() % 4 != 0 {
            return Err(bad(format!(
                "vision_config: hidden_size ({}) / num_heads ({}) must be a multiple of 4",
                v.hidden_size, v.num_heads
            )));
        }
        let unit = v.spatial_merge_size * v.patch_size;
        if v.family == VlFamily::Qwen3 {
            let side = (v.num_position_embeddings as f64).sqrt() as i64;
            if side * side != v.num_position_embeddings {
                return Err(bad(format!(
                    "vision_config.num_position_embeddings ({}) must be a square",
                    v.num_position_embeddings
                )));
            }
            if let Some(i) = v
                .deepstack_visual_indexes
                .iter()
                .find(|&&i| i < 0 || i >= v.depth)
            {
                return Err(bad(format!(
                    "vision_config.deepstack_visual_indexes has {i}, outside 0..{}",
                    v.depth
                )));
            }
            if v.deepstack_visual_indexes.len() as i64 > self.text.num_hidden_layers {
                return Err(bad(format!(
                    "{} deepstack levels but only {} decoder layers",
                    v.deepstack_visual_indexes.len(),
                    self.text.num_hidden_layers
                )));
            }
        } else if unit <= 0 || v.window_size < unit || v.window_size % unit != 0 {
            return Err(bad(format!(
                "vision_config.window_size ({}) must be a positive multiple of \
                 spatial_merge_size * patch_size ({unit})",
                v.window_size
            )));
        }
        if let Some(i) = v
            .fullatt_block_indexes
            .iter()
            .find(|&&i| i < 0 || i >= v.depth)
        {
            return Err(bad(format!(
                "vision_config.fullatt_block_indexes has {i}, outside 0..{}",
                v.depth
            )));
        }
        Ok(())
    }
}

/// `vision_config` -> [`VisionConfig`].
fn vision_config(
    o: &Map<String, Value>,
    family: VlFamily,
    bad: &dyn Fn(String) -> Error,
) -> Result<VisionConfig> {
    let int = |key: &str, alt: &str, default: Option<i64>| -> Result<i64> {
        match o.get(key).or_else(|| o.get(alt)) {
            None | Some(Value::Null) => {
                default.ok_or_else(|| bad(format!("vision_config: missing `{key}`")))
            }
            Some(x) => x.as_i64().filter(|&n| n > 0).ok_or_else(|| {
                bad(format!(
                    "vision_config.{key} must be a positive integer, found {x}"
                ))
            }),
        }
    };
    let want_act = match family {
        VlFamily::Qwen2_5 => "silu",
        VlFamily::Qwen3 => "gelu_pytorch_tanh",
    };
    if let Some(act) = o.get("hidden_act").and_then(Value::as_str) {
        if act != want_act {
            return Err(bad(format!(
                "vision_config.hidden_act {act:?} is not supported (this family uses {want_act})"
            )));
        }
    }
    let list = |key: &str, default: Vec<i64>| -> Result<Vec<i64>> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_i64()
                        .ok_or_else(|| bad(format!("vision_config.{key}: bad entry {x}")))
                })
                .collect(),
            Some(x) => Err(bad(format!(
                "vision_config.{key} must be a list, found {x}"
            ))),
        }
    };
    // Each family reads only its own keys (Qwen3-VL attends fully everywhere).
    let (fullatt, deepstack) = match family {
        VlFamily::Qwen2_5 => (list("fullatt_block_indexes", vec![7, 15, 23, 31])?, vec![]),
        VlFamily::Qwen3 => (vec![], list("deepstack_visual_indexes", vec![8, 16, 24])?),
    };
    let rope_theta = o
        .get("rope_parameters")
        .and_then(|r| r.get("rope_theta"))
        .and_then(Value::as_f64)
        .unwrap_or(10_000.0);
    Ok(VisionConfig {
        family,
        depth: int("depth", "num_hidden_layers", None)?,
        hidden_size: int("hidden_size", "embed_dim", None)?,
        intermediate_size: int("intermediate_size", "intermediate_size", None)?,
        num_heads: int("num_heads", "num_attention_heads", None)?,
        in_channels: int("in_channels", "in_chans", Some(3))?,
        patch_size: int("patch_size", "spatial_patch_size", Some(14))?,
        temporal_patch_size: int("temporal_patch_size", "temporal_patch_size", Some(2))?,
        spatial_merge_size: int("spatial_merge_size", "spatial_merge_size", Some(2))?,
        window_size: int("window_size", "window_size", Some(112))?,
        fullatt_block_indexes: fullatt,
        out_hidden_size: int("out_hidden_size", "out_hidden_size", None)?,
        rope_theta,
        num_position_embeddings: int(
            "num_position_embeddings",
            "num_position_embeddings",
            Some(2304),
        )?,
        deepstack_visual_indexes: deepstack,
    })
}

/// The language half as a Qwen2 / Qwen3 [`Config`], its `mrope_section` and
/// whether the sections interleave.
fn text_config(
    o: &Map<String, Value>,
    top: &Map<String, Value>,
    family: VlFamily,
    path: &Path,
) -> Result<(Config, Vec<i64>, bool)> {
    let bad = |msg: String| Error::Model {
        path: path.to_path_buf(),
        msg,
    };
    let rope = match (o.get("rope_parameters"), o.get("rope_scaling")) {
        (Some(Value::Object(r)), _) | (None | Some(Value::Null), Some(Value::Object(r))) => {
            r.clone()
        }
        _ => Map::new(),
    };
    let mrope_section = match rope.get("mrope_section") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_i64()
                    .ok_or_else(|| bad(format!("bad `mrope_section` entry {x}")))
            })
            .collect::<Result<Vec<_>>>()?,
        _ => {
            return Err(bad(
                "missing `mrope_section` (in `rope_parameters` or `rope_scaling`)".into(),
            ))
        }
    };
    let kind = rope
        .get("rope_type")
        .or_else(|| rope.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    if !matches!(kind, "default" | "mrope") {
        return Err(bad(format!(
            "unsupported rope_type {kind:?} for M-RoPE (supported: default)"
        )));
    }
    let theta = rope
        .get("rope_theta")
        .or_else(|| o.get("rope_theta"))
        .cloned()
        .unwrap_or(Value::from(1_000_000.0));
    let mut flat: Map<String, Value> = o.clone();
    for key in [
        "rope_parameters",
        "rope_scaling",
        "vision_config",
        "text_config",
    ] {
        flat.remove(key);
    }
    flat.insert("rope_theta".into(), theta);
    let arch = match family {
        VlFamily::Qwen2_5 => Arch::Qwen2,
        VlFamily::Qwen3 => Arch::Qwen3,
    };
    flat.insert("architectures".into(), Value::from(vec![arch.hf_class()]));
    flat.insert("model_type".into(), Value::from(arch.model_type()));
    // transformers 5 keeps `tie_word_embeddings` on the outer config.
    if let Some(tie) = top.get("tie_word_embeddings") {
        flat.insert("tie_word_embeddings".into(), tie.clone());
    }
    let text = Config::from_json_str(&Value::Object(flat).to_string(), &PathBuf::from(path))?;
    // transformers' Qwen3-VL always interleaves (its Hub configs say so too).
    let interleaved = family == VlFamily::Qwen3
        || rope
            .get("mrope_interleaved")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    Ok((text, mrope_section, interleaved))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<VlConfig> {
        VlConfig::from_json_str(text, Path::new("config.json"))
    }

    const VISION: &str = r#""vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 48,
        "num_heads": 2, "out_hidden_size": 32, "window_size": 56, "fullatt_block_indexes": [1]}"#;

    #[test]
    fn both_layouts_give_the_same_config() {
        let flat = format!(
            r#"{{"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
            "vocab_size": 256, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 10000.0,
            "rope_scaling": {{"type": "mrope", "mrope_section": [1, 1, 2]}}, "image_token_id": 250, {VISION}}}"#
        );
        let nested = format!(
            r#"{{"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
            "image_token_id": 250, "text_config": {{"vocab_size": 256, "hidden_size": 32,
            "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "rope_parameters": {{"rope_type": "default",
            "rope_theta": 10000.0, "mrope_section": [1, 1, 2]}}}}, {VISION}}}"#
        );
        let (a, b) = (parse(&flat).unwrap(), parse(&nested).unwrap());
        assert_eq!(a, b);
        assert_eq!(a.mrope_section, vec![1, 1, 2]);
        assert_eq!(a.text.head_dim, 8);
        assert_eq!(a.vision.fullatt_block_indexes, vec![1]);
        assert_eq!(a.image_token_id, 250);
        assert!(a.text.qkv_bias, "Qwen2.5-VL's decoder has q/k/v biases");
    }

    #[test]
    fn qwen3_vl_reads_deepstack_and_interleaving() {
        let text = r#"{"architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
            "text_config": {"vocab_size": 256, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
            "mrope_section": [2, 1, 1], "mrope_interleaved": true}},
            "vision_config": {"depth": 4, "hidden_size": 32, "intermediate_size": 48, "num_heads": 2,
            "out_hidden_size": 32, "patch_size": 16, "num_position_embeddings": 16,
            "deepstack_visual_indexes": [0, 2], "hidden_act": "gelu_pytorch_tanh"}}"#;
        let c = parse(text).unwrap();
        assert_eq!(c.vision.family, VlFamily::Qwen3);
        assert_eq!(c.vision.deepstack_visual_indexes, vec![0, 2]);
        assert!(c.mrope_interleaved && c.text.qk_norm && !c.text.qkv_bias);
        let five_levels = text.replace("[0, 2]", "[0, 1, 2, 3]");
        let err = parse(&five_levels).unwrap_err().to_string();
        assert!(err.contains("deepstack"), "{err}");
    }

    #[test]
    fn unsupported_variants_are_refused_by_name() {
        for class in [
            "Qwen3VLMoeForConditionalGeneration",
            "Qwen2VLForConditionalGeneration",
        ] {
            let text = format!(r#"{{"architectures": ["{class}"], {VISION}}}"#);
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(class), "{err}");
        }
        let bad_section = format!(
            r#"{{"architectures": ["Qwen2_5_VLForConditionalGeneration"], "vocab_size": 256,
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "rope_scaling": {{"type": "mrope", "mrope_section": [2, 2, 2]}}, {VISION}}}"#
        );
        let err = parse(&bad_section).unwrap_err().to_string();
        assert!(err.contains("mrope_section"), "{err}");
    }
}
