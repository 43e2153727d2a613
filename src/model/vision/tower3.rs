//! The Qwen3-VL vision tower: patch embedding (with bias) plus a learned
//! square position table resampled bilinearly to each image's grid, LayerNorm
//! blocks with 2D rotary full attention and a GELU MLP, the 2x2 patch merger,
//! and the deepstack mergers whose features feed the decoder's first layers.
//!
//! Mirrors `Qwen3VLVisionModel` in transformers' `modeling_qwen3_vl.py`
//! (deepstack: "DeepStack", Meng et al. 2024) and the bilinear,
//! `align_corners = True` resampling of `get_vision_interpolation_indices_and_weights`
//! (`transformers/vision_utils.py`). Parameter names are the Hub's
//! (`visual.pos_embed.weight`, `visual.blocks.N.mlp.linear_fc1.weight`,
//! `visual.deepstack_merger_list.K.norm.weight`, ...).

use super::tower::{vision_inv_freq, vision_rotary, VisionAttention};
use super::vl_config::VisionConfig;
use super::window::VisionPlan;
use crate::error::{Error, Result};
use crate::model::layers::Linear;
use tch::{nn, Tensor};

/// The tower's LayerNorm epsilon (fixed in transformers).
const EPS: f64 = 1e-6;

/// LayerNorm with a learned scale and shift.
#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    dim: i64,
}

impl LayerNorm {
    fn new(path: nn::Path, dim: i64) -> Result<Self> {
        Ok(LayerNorm {
            weight: path.f_ones("weight", &[dim])?,
            bias: path.f_zeros("bias", &[dim])?,
            dim,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_layer_norm([self.dim], Some(&self.weight), Some(&self.bias), EPS, false)?)
    }
}

/// One pre-norm block: `x + attn(norm1(x))`, then `x + fc2(gelu_tanh(fc1(norm2(x))))`.
#[derive(Debug)]
struct Block {
    norm1: LayerNorm,
    norm2: LayerNorm,
    attn: VisionAttention,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    fn new(path: nn::Path, cfg: &VisionConfig) -> Result<Self> {
        let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
        let mlp = &path / "mlp";
        Ok(Block {
            norm1: LayerNorm::new(&path / "norm1", d)?,
            norm2: LayerNorm::new(&path / "norm2", d)?,
            attn: VisionAttention::new(&path / "attn", cfg)?,
            fc1: Linear::new(&mlp / "linear_fc1", d, i, true)?,
            fc2: Linear::new(&mlp / "linear_fc2", i, d, true)?,
        })
    }

    fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, lengths: &[i64]) -> Result<Tensor> {
        let x = x.f_add(
            &self
                .attn
                .forward(&self.norm1.forward(x)?, cos, sin, lengths)?,
        )?;
        let h = self.fc1.forward(&self.norm2.forward(&x)?)?.f_gelu("tanh")?;
        Ok(x.f_add(&self.fc2.forward(&h)?)?)
    }
}

/// A patch merger: `merge x merge` patches folded into one token, normed
/// before the fold (the main merger) or after it (deepstack mergers).
#[derive(Debug)]
struct Merger {
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    /// Width of a folded token (`hidden * merge^2`).
    wide: i64,
    /// The norm runs over the folded width (deepstack mergers).
    post_shuffle: bool,
}

impl Merger {
    fn new(path: nn::Path, cfg: &VisionConfig, post_shuffle: bool) -> Result<Self> {
        let wide = cfg.hidden_size * cfg.spatial_merge_size * cfg.spatial_merge_size;
        let norm_dim = if post_shuffle { wide } else { cfg.hidden_size };
        Ok(Merger {
            norm: LayerNorm::new(&path / "norm", norm_dim)?,
            fc1: Linear::new(&path / "linear_fc1", wide, wide, true)?,
            fc2: Linear::new(&path / "linear_fc2", wide, cfg.out_hidden_size, true)?,
            wide,
            post_shuffle,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let folded = if self.post_shuffle {
            self.norm.forward(&x.f_reshape([-1, self.wide])?)?
        } else {
            self.norm.forward(x)?.f_reshape([-1, self.wide])?
        };
        self.fc2
            .forward(&self.fc1.forward(&folded)?.f_gelu("none")?)
    }
}

/// What the Qwen3-VL tower gives the decoder.
#[derive(Debug)]
pub struct Qwen3VisionOutput {
    /// `[tokens, out_hidden]`: the features that replace the pad tokens.
    pub features: Tensor,
    /// One `[tokens, out_hidden]` per deepstack level, added after decoder layer k.
    pub deepstack: Vec<Tensor>,
}

/// The Qwen3-VL vision tower. `&self` everywhere.
#[derive(Debug)]
pub struct Qwen3VisionTower {
    cfg: VisionConfig,
    /// Conv3d kernel `[C_out, C_in, T, P, P]`, applied as a linear map.
    patch_weight: Tensor,
    /// Conv3d bias `[C_out]`.
    patch_bias: Tensor,
    /// Learned positions `[side * side, hidden]`, resampled per image.
    pos_embed: Tensor,
    inv_freq: Tensor,
    blocks: Vec<Block>,
    merger: Merger,
    deepstack: Vec<Merger>,
}

impl Qwen3VisionTower {
    /// Create every parameter under `path` (`visual`).
    pub fn new(path: nn::Path, cfg: &VisionConfig) -> Result<Qwen3VisionTower> {
        let c = cfg.hidden_size;
        let proj = &path / "patch_embed" / "proj";
        let kernel = [
            c,
            cfg.in_channels,
            cfg.temporal_patch_size,
            cfg.patch_size,
            cfg.patch_size,
        ];
        Ok(Qwen3VisionTower {
            cfg: cfg.clone(),
            patch_weight: proj.f_zeros("weight", &kernel)?,
            patch_bias: proj.f_zeros("bias", &[c])?,
            pos_embed: (&path / "pos_embed")
                .f_zeros("weight", &[cfg.num_position_embeddings, c])?,
            inv_freq: vision_inv_freq(cfg, path.device()),
            blocks: (0..cfg.depth)
                .map(|i| Block::new(&path / "blocks" / i, cfg))
                .collect::<Result<_>>()?,
            merger: Merger::new(&path / "merger", cfg, false)?,
            deepstack: (0..cfg.deepstack_visual_indexes.len())
                .map(|k| Merger::new(&path / "deepstack_merger_list" / k, cfg, true))
                .collect::<Result<_>>()?,
        })
    }

    /// Features and deepstack features of `pixel_values [sum(t*h*w),
    /// patch_dim]` for images with grids `grids`, in pad-token order.
    pub fn forward(
        &self,
        pixel_values: &Tensor,
        grids: &[[usize; 3]],
    ) -> Result<Qwen3VisionOutput> {
        let cfg = &self.cfg;
        let merge = cfg.spatial_merge_size as usize;
        let patches: i64 = grids.iter().map(|g| (g[0] * g[1] * g[2]) as i64).sum();
        let size = pixel_values.size();
        if size != [patches, cfg.patch_dim()] {
            return Err(Error::ShapeMismatch {
                name: "pixel_values".into(),
                expected: vec![patches, cfg.patch_dim()],
                got: size,
            });
        }
        if let Some(g) = grids
            .iter()
            .find(|g| g[1] % merge != 0 || g[2] % merge != 0)
        {
            return Err(Error::InvalidInput(format!(
                "image grid {g:?}: h and w must be multiples of spatial_merge_size {merge}"
            )));
        }
        // One window per image: only the positions and full segments are used.
        let plan = VisionPlan::new(grids, merge, usize::MAX / 2);
        let device = pixel_values.device();
        let kind = self.patch_weight.kind();
        let weight = self.patch_weight.f_reshape([cfg.hidden_size, -1])?;
        let mut x = pixel_values
            .f_to_kind(kind)?
            .f_linear(&weight, Some(&self.patch_bias))?;
        x = x.f_add(&self.positions(grids, &plan, device)?.f_to_kind(kind)?)?;
        let (cos, sin) = vision_rotary(&self.inv_freq, &plan, device)?;
        let (cos, sin) = (cos.f_unsqueeze(1)?, sin.f_unsqueeze(1)?);
        let lengths = VisionPlan::lengths(&plan.cu_seqlens);
        let mut deepstack = Vec::with_capacity(self.deepstack.len());
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x, &cos, &sin, &lengths)?;
            if let Some(k) = cfg
                .deepstack_visual_indexes
                .iter()
                .position(|&d| d == i as i64)
            {
                deepstack.push(self.deepstack[k].forward(&x)?);
            }
        }
        Ok(Qwen3VisionOutput {
            features: self.merger.forward(&x)?,
            deepstack,
        })
    }

    /// The learned position table resampled to every patch: bilinear with
    /// aligned corners, `src = index * (side - 1) / max(size - 1, 1)` per axis,
    /// taps `floor(src)` and `floor(src) + 1` clamped to the table.
    fn positions(
        &self,
        grids: &[[usize; 3]],
        plan: &VisionPlan,
        device: tch::Device,
    ) -> Result<Tensor> {
        let side = (self.cfg.num_position_embeddings as f64).sqrt() as i64;
        let axis = |index: i64, size: usize| -> [(i64, f32); 2] {
            let src = (index as f32 * (side - 1) as f32) / ((size as i64 - 1).max(1) as f32);
            let floor = src.floor();
            let tap = |o: i64| (floor as i64 + o).clamp(0, side - 1);
            let weight = |o: f32| (1.0 - (src - floor - o).abs()).max(0.0);
            [(tap(0), weight(0.0)), (tap(1), weight(1.0))]
        };
        let mut index = Vec::with_capacity(plan.positions.len() * 4);
        let mut weight = Vec::with_capacity(plan.positions.len() * 4);
        let sizes = grids
            .iter()
            .flat_map(|&[t, h, w]| std::iter::repeat_n((h, w), t * h * w));
        for (&[row, col], (h, w)) in plan.positions.iter().zip(sizes) {
            for (hi, hw) in axis(row, h) {
                for (wi, ww) in axis(col, w) {
                    index.push(hi * side + wi);
                    weight.push(hw * ww);
                }
            }
        }
        let index = Tensor::from_slice(&index)
            .to_device(device)
            .f_view([-1, 4])?;
        let weight = Tensor::from_slice(&weight)
            .to_device(device)
            .f_view([-1, 4, 1])?
            .f_to_kind(self.pos_embed.kind())?;
        let taps = Tensor::f_embedding(&self.pos_embed, &index, -1, false, false)?; // [N, 4, C]
        Ok(taps
            .f_mul(&weight)?
            .f_sum_dim_intlist(1, false, taps.kind())?)
    }
}
