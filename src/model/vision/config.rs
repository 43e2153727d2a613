//! `preprocessor_config.json` of Qwen2-VL, Qwen2.5-VL and Qwen3-VL checkpoints.
//!
//! The three families share transformers' `Qwen2VLImageProcessor`; their Hub
//! files spell the pixel bounds two ways: top-level `min_pixels` / `max_pixels`
//! (Qwen2-VL, Qwen2.5-VL) or `size.shortest_edge` / `size.longest_edge`
//! (Qwen3-VL, and what transformers writes today; both are pixel counts, not
//! edge lengths). Top-level values win over `size`, as in the processor's
//! `__init__`. Defaults are the processor class's own. Every key is checked by
//! name: video-only settings and anything this crate does not implement are
//! refused, so a checkpoint never silently preprocesses differently.

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The OpenAI CLIP channel means (transformers' `OPENAI_CLIP_MEAN`).
pub const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// The OpenAI CLIP channel standard deviations (`OPENAI_CLIP_STD`).
pub const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Image processor types that name this preprocessing (the "Fast" and "Pil"
/// spellings differ only in transformers' backend; see docs/VISION.md).
const PROCESSOR_TYPES: [&str; 3] = [
    "Qwen2VLImageProcessor",
    "Qwen2VLImageProcessorFast",
    "Qwen2VLImageProcessorPil",
];

/// Keys that belong to video processing only.
const VIDEO_KEYS: [&str; 9] = [
    "fps",
    "min_frames",
    "max_frames",
    "num_frames",
    "do_sample_frames",
    "video_processor_type",
    "video_metadata",
    "return_metadata",
    "do_resize_video",
];

/// PIL's resampling filter code for bicubic (`PILImageResampling.BICUBIC`).
const PIL_BICUBIC: i64 = 3;

/// The settings of the Qwen2-VL image processor.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    /// Side of a square vision patch in pixels (14 for Qwen2/2.5-VL, 16 for Qwen3-VL).
    pub patch_size: usize,
    /// Frames per temporal patch; a still image is repeated this many times.
    pub temporal_patch_size: usize,
    /// Side of the square of patches the merger folds into one language token.
    pub merge_size: usize,
    /// Lower bound on the resized pixel count (`size.shortest_edge`).
    pub min_pixels: usize,
    /// Upper bound on the resized pixel count (`size.longest_edge`).
    pub max_pixels: usize,
    /// Whether to resize with `smart_resize` and bicubic resampling.
    pub do_resize: bool,
    /// Whether to multiply the bytes by `rescale_factor`.
    pub do_rescale: bool,
    /// The rescale factor (1/255 by default).
    pub rescale_factor: f64,
    /// Whether to subtract `image_mean` and divide by `image_std`.
    pub do_normalize: bool,
    /// Per-channel mean (R, G, B).
    pub image_mean: [f64; 3],
    /// Per-channel standard deviation (R, G, B).
    pub image_std: [f64; 3],
}

impl Default for ImageProcessorConfig {
    /// `Qwen2VLImageProcessor`'s class defaults.
    fn default() -> Self {
        Self {
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            do_resize: true,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: OPENAI_CLIP_MEAN,
            image_std: OPENAI_CLIP_STD,
        }
    }
}

impl ImageProcessorConfig {
    /// Reads `preprocessor_config.json` from a file or from a model folder.
    pub fn load(path: &Path) -> Result<Self> {
        let file: PathBuf = if path.is_dir() {
            path.join("preprocessor_config.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|source| Error::Io {
            path: file.clone(),
            source,
        })?;
        Self::from_json_str(&text).map_err(|msg| Error::Model { path: file, msg })
    }

    /// Parses the JSON text; the error names the key at fault.
    pub fn from_json_str(text: &str) -> std::result::Result<Self, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let Value::Object(map) = value else {
            return Err("expected a JSON object".to_string());
        };
        Self::from_map(&map)
    }

    /// Resolves every key of the object (see the module doc for the rules).
    fn from_map(map: &Map<String, Value>) -> std::result::Result<Self, String> {
        let mut cfg = Self::default();
        let (mut top_min, mut top_max) = (None, None);
        for (key, value) in map {
            let k = key.as_str();
            match k {
                "patch_size" => cfg.patch_size = positive(k, value)?,
                "temporal_patch_size" => cfg.temporal_patch_size = positive(k, value)?,
                "merge_size" => cfg.merge_size = positive(k, value)?,
                "min_pixels" if !value.is_null() => top_min = Some(positive(k, value)?),
                "max_pixels" if !value.is_null() => top_max = Some(positive(k, value)?),
                "min_pixels" | "max_pixels" => {}
                "size" => size_bounds(value, &mut cfg)?,
                "do_resize" => cfg.do_resize = boolean(k, value)?,
                "do_rescale" => cfg.do_rescale = boolean(k, value)?,
                "do_normalize" => cfg.do_normalize = boolean(k, value)?,
                "rescale_factor" => cfg.rescale_factor = number(k, value)?,
                "image_mean" => cfg.image_mean = per_channel(k, value)?,
                "image_std" => cfg.image_std = per_channel(k, value)?,
                "do_convert_rgb" => {
                    if !boolean(k, value)? {
                        return Err(
                            "key `do_convert_rgb`: false is not supported (images are always converted to RGB)"
                                .to_string(),
                        );
                    }
                }
                "resample" => {
                    if value.as_i64() != Some(PIL_BICUBIC) {
                        return Err(format!(
                            "key `resample`: only 3 (bicubic) is supported, found {value}"
                        ));
                    }
                }
                "image_processor_type" => {
                    let name = value.as_str().unwrap_or_default();
                    if !PROCESSOR_TYPES.contains(&name) {
                        return Err(format!(
                            "key `image_processor_type`: {value} is not supported (one of {PROCESSOR_TYPES:?})"
                        ));
                    }
                }
                // Informational: which processor class wraps this image processor.
                "processor_class" => {}
                // Settings that only matter for batching or output layout, which
                // this crate fixes (channels first, one image at a time).
                "data_format" if value.is_null() || value == "channels_first" => {}
                "input_data_format" | "device" | "return_tensors" | "disable_grouping"
                | "default_to_square"
                    if value.is_null() || value.is_boolean() => {}
                "do_pad" | "do_center_crop" if value.is_null() || value == false => {}
                "crop_size" | "pad_size" if value.is_null() => {}
                _ if VIDEO_KEYS.contains(&k) => {
                    return Err(format!(
                        "key `{k}` is a video setting; video input is not supported"
                    ));
                }
                _ => {
                    return Err(format!(
                        "key `{k}` (value {value}) is not supported by the Qwen2-VL image preprocessing"
                    ));
                }
            }
        }
        if let Some(v) = top_min {
            cfg.min_pixels = v;
        }
        if let Some(v) = top_max {
            cfg.max_pixels = v;
        }
        if cfg.min_pixels > cfg.max_pixels {
            return Err(format!(
                "min_pixels {} is larger than max_pixels {}",
                cfg.min_pixels, cfg.max_pixels
            ));
        }
        if let Some(c) = cfg.image_std.iter().position(|&s| s == 0.0) {
            return Err(format!("key `image_std`: channel {c} is zero"));
        }
        Ok(cfg)
    }

    /// The side length every resized image is a multiple of (`patch_size * merge_size`).
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Length of one row of `pixel_values`: `3 * temporal_patch_size * patch_size^2`.
    pub fn patch_dim(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

/// `size`: `{shortest_edge, longest_edge}` or the older `{min_pixels, max_pixels}`.
fn size_bounds(value: &Value, cfg: &mut ImageProcessorConfig) -> std::result::Result<(), String> {
    let Value::Object(size) = value else {
        return Err(format!("key `size`: expected an object, found {value}"));
    };
    for (key, v) in size {
        let k = format!("size.{key}");
        match key.as_str() {
            "shortest_edge" | "min_pixels" => cfg.min_pixels = positive(&k, v)?,
            "longest_edge" | "max_pixels" => cfg.max_pixels = positive(&k, v)?,
            _ => {
                return Err(format!(
                    "key `{k}` is not supported (the Qwen2-VL processor takes size.shortest_edge and size.longest_edge, in pixels)"
                ))
            }
        }
    }
    Ok(())
}

fn positive(key: &str, value: &Value) -> std::result::Result<usize, String> {
    match value.as_u64() {
        Some(v) if v > 0 => Ok(v as usize),
        _ => Err(format!(
            "key `{key}`: expected a positive integer, found {value}"
        )),
    }
}

fn boolean(key: &str, value: &Value) -> std::result::Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("key `{key}`: expected true or false, found {value}"))
}

fn number(key: &str, value: &Value) -> std::result::Result<f64, String> {
    value
        .as_f64()
        .ok_or_else(|| format!("key `{key}`: expected a number, found {value}"))
}

/// A list of three numbers, or one number for all channels (as transformers allows).
fn per_channel(key: &str, value: &Value) -> std::result::Result<[f64; 3], String> {
    if let Some(v) = value.as_f64() {
        return Ok([v; 3]);
    }
    let list = value
        .as_array()
        .filter(|a| a.len() == 3)
        .ok_or_else(|| format!("key `{key}`: expected three numbers (R, G, B), found {value}"))?;
    let mut out = [0.0; 3];
    for (o, v) in out.iter_mut().zip(list) {
        *o = number(key, v)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_bounds_override_size_and_defaults_fill_the_rest() {
        let cfg = ImageProcessorConfig::from_json_str(
            r#"{"size": {"shortest_edge": 10, "longest_edge": 20000},
                "min_pixels": 3136, "patch_size": 16}"#,
        )
        .unwrap();
        assert_eq!(cfg.min_pixels, 3136);
        assert_eq!(cfg.max_pixels, 20000);
        assert_eq!(cfg.patch_size, 16);
        assert_eq!(cfg.merge_size, 2);
        assert_eq!(cfg.image_mean, OPENAI_CLIP_MEAN);
        assert_eq!(cfg.factor(), 32);
        assert_eq!(cfg.patch_dim(), 3 * 2 * 16 * 16);
    }

    #[test]
    fn unknown_video_and_unsupported_keys_are_refused_by_name() {
        for (json, needle) in [
            (r#"{"fps": 2.0}"#, "`fps` is a video setting"),
            (r#"{"resample": 2}"#, "`resample`"),
            (r#"{"do_convert_rgb": false}"#, "`do_convert_rgb`"),
            (r#"{"shiny": 1}"#, "`shiny`"),
            (
                r#"{"size": {"height": 224, "width": 224}}"#,
                "`size.height`",
            ),
            (r#"{"image_mean": [0.5, 0.5]}"#, "`image_mean`"),
            (r#"{"patch_size": 0}"#, "`patch_size`"),
            (
                r#"{"image_processor_type": "CLIPImageProcessor"}"#,
                "image_processor_type",
            ),
            (
                r#"{"min_pixels": 100, "max_pixels": 10}"#,
                "larger than max_pixels",
            ),
            (r#"{"image_std": 0.0}"#, "`image_std`"),
        ] {
            let err = ImageProcessorConfig::from_json_str(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn hub_files_of_qwen2_5_vl_and_qwen3_vl_are_accepted() {
        // The files as Qwen/Qwen2.5-VL-7B-Instruct and Qwen/Qwen3-VL-8B-Instruct ship them.
        let q25 = ImageProcessorConfig::from_json_str(
            r#"{"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14,
                "temporal_patch_size": 2, "merge_size": 2,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "image_processor_type": "Qwen2VLImageProcessor",
                "processor_class": "Qwen2_5_VLProcessor"}"#,
        )
        .unwrap();
        assert_eq!(
            (q25.min_pixels, q25.max_pixels, q25.factor()),
            (3136, 12845056, 28)
        );
        let q3 = ImageProcessorConfig::from_json_str(
            r#"{"size": {"longest_edge": 16777216, "shortest_edge": 65536},
                "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                "processor_class": "Qwen3VLProcessor",
                "image_processor_type": "Qwen2VLImageProcessorFast"}"#,
        )
        .unwrap();
        assert_eq!(
            (q3.min_pixels, q3.max_pixels, q3.factor()),
            (65536, 16777216, 32)
        );
        assert_eq!(q3.image_std, [0.5; 3]);
    }

    #[test]
    fn single_number_mean_is_broadcast() {
        let cfg = ImageProcessorConfig::from_json_str(
            r#"{"image_mean": 0.5, "image_std": [0.5, 0.5, 0.5]}"#,
        )
        .unwrap();
        assert_eq!(cfg.image_mean, [0.5; 3]);
    }
}
