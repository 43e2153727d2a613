//! Vision-language input for Qwen2-VL, Qwen2.5-VL and Qwen3-VL (issue 21).
//!
//! This first layer turns image files into what the vision tower reads, equal
//! to transformers' `Qwen2VLImageProcessor` (PIL backend) and the processors'
//! placeholder expansion:
//! - [`decode`]: PNG / JPEG / WebP to 8-bit RGB, alpha composited over white;
//! - [`config`]: `preprocessor_config.json`, unknown and video keys refused;
//! - [`resize`]: `smart_resize` and Pillow's bicubic filter, bit-exact;
//! - [`preprocess`]: rescale, normalise, patchify into `pixel_values` and the
//!   `(t, h, w)` grid;
//! - [`placeholder`]: `<|image_pad|>` expanded to one token per merged patch;
//! - [`rope_index`]: the (t, h, w) rotary position ids of a prompt with images.
//!
//! The models (Qwen2.5-VL, Qwen3-VL dense):
//! - [`vl_config`]: `config.json` in both layouts transformers writes;
//! - [`window`]: the tower's patch positions, attention segments and windows;
//! - [`tower`]: Qwen2.5-VL's vision tower and patch merger;
//! - [`tower3`]: Qwen3-VL's, with the deepstack mergers;
//! - [`vl_model`]: features spliced into the decoder's embeddings, M-RoPE,
//!   cached generation, loading;
//! - [`vl_generate`]: a group's responses to one prompt, its images encoded once;
//! - [`vl_policy`]: the train step's `Policy` (images bound to prompts, each
//!   distinct prompt's images encoded once, the tower frozen by default).
//!
//! VL training is still to come; docs/VISION.md lists what exists and what is missing.

pub mod config;
pub mod decode;
pub mod placeholder;
pub mod preprocess;
pub mod resize;
pub mod rope_index;
pub mod tower;
pub mod tower3;
pub mod vl_config;
pub mod vl_generate;
pub mod vl_model;
pub mod vl_policy;
pub mod window;

pub use config::ImageProcessorConfig;
pub use decode::{load_rgb, RgbImage};
pub use placeholder::{expand_image_pad_ids, expand_image_pads, image_token_count, IMAGE_PAD};
pub use preprocess::{ImageProcessor, ProcessedImage};
pub use resize::{resize_bicubic, smart_resize};
pub use rope_index::{rope_index, RopeIndex};
pub use tower::VisionTower;
pub use tower3::Qwen3VisionTower;
pub use vl_config::{VisionConfig, VlConfig, VlFamily};
pub use vl_model::{ImageFeatures, LoadedVlModel, VisionInput, VlModel};
pub use vl_policy::VlPolicy;
