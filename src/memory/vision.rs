//! The memory model's vision half: what a vision-language model
//! (Qwen2.5-VL, Qwen3-VL; [`crate::model::vision`]) adds to the plan of its
//! language model.
//!
//! With a tower of `D` blocks, width `C`, MLP width `I`, patch side `P`,
//! merge side `M`, decoder hidden `H`, weight bytes `w`, and an assumed
//! `n = model.images_per_prompt` images of `model.image_pixels` pixels each
//! (`X`; the data's images are not read before a run starts):
//!
//! - **image tokens**: an image is `X / P^2` patches (at least `M^2`) and
//!   `X / (P M)^2` tokens; each prompt is `n` times that longer, so the
//!   decoder's activations, KV cache and prefill grow with them (the text
//!   plan is computed with the longer prompt).
//! - **weights**: every actor holds the tower, `Pv w` bytes (`Pv` from
//!   [`vision_param_count`]).
//! - **training the tower** (`model.train_vision = true`): the optimizer
//!   adds its gradients `Pv w`, AdamW moments `8 Pv`, a float32 master copy
//!   `4 Pv` when `w < 4`, and the tower in the weight snapshot it publishes;
//!   its micro-batch keeps `Av = 10C + 4I` (Qwen2.5-VL: norms in/out, q, k,
//!   v, rotated q and k, attention output, gate, silu, up, product) or
//!   `10C + 2I` (Qwen3-VL: the GELU MLP) elements per patch and block,
//!   `patches D Av w`. Frozen (the default), the tower runs without
//!   gradients: one block's working set `patches (2C + 3I) w`.
//! - **features**: the merged image features and Qwen3-VL's deepstack
//!   features handed to the decoder, `tokens (1 + deepstack) H w`.
//!
//! The optimizer encodes the images of its micro-batch's rows, the sampler
//! those of the distinct prompts it prefills, the teacher one prompt's (a
//! group shares its images). Attention inside the tower is counted as
//! memory-efficient (no `patches^2` score matrix), as libtorch's
//! scaled-dot-product attention runs on CUDA.

use crate::config::RunConfig;
use crate::error::Result;
use crate::model::vision::{VisionConfig, VlConfig, VlFamily};
use crate::model::Config;

/// Parameters of a vision tower of this shape (patch embedding, blocks,
/// merger; Qwen3-VL also its position table and deepstack mergers).
///
/// Counted in `u128` and saturated, as [`super::param_count`].
pub fn vision_param_count(v: &VisionConfig) -> u64 {
    let u = |x: i64| x.max(0) as u128;
    let (c, i, o) = (
        u(v.hidden_size),
        u(v.intermediate_size),
        u(v.out_hidden_size),
    );
    let m = u(v.spatial_merge_size);
    let w = c * m * m;
    let patch = c * u(v.in_channels) * u(v.temporal_patch_size) * u(v.patch_size).pow(2);
    let attention = (3 * c * c + 3 * c) + (c * c + c);
    let mlp_out = w * w + w + w * o + o;
    let n = match v.family {
        VlFamily::Qwen2_5 => {
            // RMSNorm x2, SwiGLU with biases; merger: RMSNorm `ln_q` + MLP.
            let block = 2 * c + attention + 3 * c * i + 2 * i + c;
            patch + u(v.depth) * block + c + mlp_out
        }
        VlFamily::Qwen3 => {
            // LayerNorm x2 (weight and bias), GELU MLP with biases; merger
            // LayerNorm over C, deepstack mergers' LayerNorm over W.
            let block = 4 * c + attention + 2 * c * i + i + c;
            let deepstack = v.deepstack_visual_indexes.len() as u128 * (2 * w + mlp_out);
            patch
                + c
                + u(v.num_position_embeddings) * c
                + u(v.depth) * block
                + 2 * c
                + mlp_out
                + deepstack
        }
    };
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The published vision towers of Qwen2.5-VL-7B and Qwen3-VL-8B (Instruct
/// alike), by a name or path that contains `qwen2.5-vl-7b` or `qwen3-vl-8b`
/// (their `vision_config` on the Hub; `tests/fixtures/vl/shapes/` holds both
/// `config.json` files).
pub fn known_vision(name: &str) -> Option<VisionConfig> {
    let n = name.to_ascii_lowercase();
    if n.contains("qwen2.5-vl-7b") {
        Some(VisionConfig {
            family: VlFamily::Qwen2_5,
            depth: 32,
            hidden_size: 1280,
            intermediate_size: 3420,
            num_heads: 16,
            in_channels: 3,
            patch_size: 14,
            temporal_patch_size: 2,
            spatial_merge_size: 2,
            window_size: 112,
            fullatt_block_indexes: vec![7, 15, 23, 31],
            out_hidden_size: 3584,
            rope_theta: 10_000.0,
            num_position_embeddings: 2304,
            deepstack_visual_indexes: vec![],
        })
    } else if n.contains("qwen3-vl-8b") {
        Some(VisionConfig {
            family: VlFamily::Qwen3,
            depth: 27,
            hidden_size: 1152,
            intermediate_size: 4304,
            num_heads: 16,
            in_channels: 3,
            patch_size: 16,
            temporal_patch_size: 2,
            spatial_merge_size: 2,
            window_size: 112,
            fullatt_block_indexes: vec![],
            out_hidden_size: 4096,
            rope_theta: 10_000.0,
            num_position_embeddings: 2304,
            deepstack_visual_indexes: vec![8, 16, 24],
        })
    } else {
        None
    }
}

/// The vision tower of a run's model: `config.json`'s `vision_config` when
/// the folder holds a vision-language config, else the published tower its
/// path names ([`known_vision`]), else none (a text model).
pub fn vision_shape(cfg: &RunConfig) -> Result<Option<VisionConfig>> {
    let file = cfg.model.resolved_path().join("config.json");
    if file.exists() {
        if VlConfig::is_vl_file(&file) {
            return Ok(Some(VlConfig::from_file(&file)?.vision));
        }
        return Ok(None);
    }
    Ok(known_vision(&cfg.model.path))
}

/// The images a run is planned for (`model.images_per_prompt` of
/// `model.image_pixels` pixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLoad {
    /// Images per prompt.
    pub images_per_prompt: usize,
    /// Pixels per image after the processor's resize.
    pub image_pixels: usize,
}

impl ImageLoad {
    /// The run's assumption.
    pub fn of(cfg: &RunConfig) -> ImageLoad {
        ImageLoad {
            images_per_prompt: cfg.model.images_per_prompt,
            image_pixels: cfg.model.image_pixels,
        }
    }

    /// Patches of one image (`X / P^2`, at least one merged token's worth).
    pub fn patches_per_image(&self, v: &VisionConfig) -> usize {
        let p2 = (v.patch_size.max(1) as usize).pow(2);
        let m2 = (v.spatial_merge_size.max(1) as usize).pow(2);
        (self.image_pixels / p2).max(m2)
    }

    /// `<|image_pad|>` tokens one prompt's images add.
    pub fn image_tokens_per_prompt(&self, v: &VisionConfig) -> usize {
        let m2 = (v.spatial_merge_size.max(1) as usize).pow(2);
        self.images_per_prompt
            .saturating_mul(self.patches_per_image(v) / m2)
    }
}

/// How many prompts' images each actor encodes at once.
#[derive(Debug, Clone, Copy)]
pub struct Encoded {
    /// The optimizer: the rows of one micro-batch.
    pub optimizer: usize,
    /// The sampler: the distinct prompts of its prefill.
    pub sampler: usize,
    /// The teacher: one prompt per group.
    pub teacher: usize,
}

/// Add the tower's items to each actor of a plan made with prompts that
/// already include the image tokens (see the module docs).
pub fn with_vision(
    actors: &mut [super::ActorPlan],
    text: &Config,
    v: &VisionConfig,
    w: f64,
    train_vision: bool,
    load: ImageLoad,
    encoded: Encoded,
) {
    let pv = vision_param_count(v) as f64;
    let (c, i, d) = (
        v.hidden_size as f64,
        v.intermediate_size as f64,
        v.depth as f64,
    );
    let kept_per_patch = match v.family {
        VlFamily::Qwen2_5 => 10.0 * c + 4.0 * i,
        VlFamily::Qwen3 => 10.0 * c + 2.0 * i,
    };
    let per_prompt_patches = (load.images_per_prompt * load.patches_per_image(v)) as f64;
    let per_prompt_tokens = load.image_tokens_per_prompt(v) as f64;
    let levels = 1.0 + v.deepstack_visual_indexes.len() as f64;
    let h = text.hidden_size as f64;
    for a in actors.iter_mut() {
        let prompts = match a.actor {
            "optimizer" => encoded.optimizer,
            "sampler" => encoded.sampler,
            _ => encoded.teacher,
        } as f64;
        let patches = prompts * per_prompt_patches;
        a.items.push(super::item("vision tower", pv * w));
        let training = train_vision && a.actor == "optimizer";
        if training {
            a.items.push(super::item("vision gradients", pv * w));
            a.items.push(super::item("vision AdamW", 8.0 * pv));
            if w < 4.0 {
                a.items.push(super::item("vision f32 master", 4.0 * pv));
            }
            a.items.push(super::item("vision snapshot", pv * w));
            a.items.push(super::item(
                "vision activations",
                patches * d * kept_per_patch * w,
            ));
        } else {
            a.items.push(super::item(
                "vision forward",
                patches * (2.0 * c + 3.0 * i) * w,
            ));
        }
        a.items.push(super::item(
            "image features",
            prompts * per_prompt_tokens * levels * h * w,
        ));
    }
}
