//! The Qwen2.5-VL vision tower: patch embedding, RMSNorm blocks with 2D
//! rotary attention (window attention, full attention at
//! `fullatt_block_indexes`) and a SwiGLU MLP, then the 2x2 patch merger.
//!
//! Mirrors `Qwen2_5_VisionTransformerPretrainedModel` in transformers'
//! `modeling_qwen2_5_vl.py` ("Qwen2.5-VL Technical Report", Bai et al. 2025).
//! Parameter names are the Hub's (`visual.patch_embed.proj.weight`,
//! `visual.blocks.N.attn.qkv.weight`, `visual.merger.mlp.0.weight`, ...).

use super::vl_config::VisionConfig;
use super::window::VisionPlan;
use crate::error::{Error, Result};
use crate::model::layers::{Linear, RmsNorm};
use tch::{nn, Kind, Tensor};

/// The tower's RMSNorm epsilon (fixed in transformers, not in the config).
const EPS: f64 = 1e-6;

/// `qkv` and `proj` of one block; attention within segments, never across
/// (shared by the Qwen2.5-VL and Qwen3-VL towers).
#[derive(Debug)]
pub(super) struct VisionAttention {
    qkv: Linear,
    proj: Linear,
    num_heads: i64,
}

impl VisionAttention {
    pub(super) fn new(path: nn::Path, cfg: &VisionConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(VisionAttention {
            qkv: Linear::new(&path / "qkv", d, 3 * d, true)?,
            proj: Linear::new(&path / "proj", d, d, true)?,
            num_heads: cfg.num_heads,
        })
    }

    /// `x [N, C]` -> `[N, C]`; each run of `lengths` attends only to itself.
    pub(super) fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        lengths: &[i64],
    ) -> Result<Tensor> {
        let n = x.size()[0];
        let qkv = self
            .qkv
            .forward(x)?
            .f_reshape([n, 3, self.num_heads, -1])?
            .f_permute([1, 0, 2, 3])?; // [3, N, H, D]
        let rot = |t: Tensor| -> Result<Tensor> {
            // In float32 as transformers does, then back to the input kind.
            let kind = t.kind();
            let tf = t.f_to_kind(Kind::Float)?;
            let half = tf.size()[2] / 2;
            let rolled = tf.f_roll([half], [2])?;
            Ok(tf.f_mul(cos)?.f_add(&rolled.f_mul(sin)?)?.f_to_kind(kind)?)
        };
        let q = rot(qkv.f_get(0)?)?.f_transpose(0, 1)?; // [H, N, D]
        let k = rot(qkv.f_get(1)?)?.f_transpose(0, 1)?;
        let v = qkv.f_get(2)?.f_transpose(0, 1)?;
        let mut outs = Vec::with_capacity(lengths.len());
        let mut start = 0;
        for &len in lengths {
            let seg = |t: &Tensor| t.f_narrow(1, start, len).and_then(|s| s.f_unsqueeze(0));
            let o = Tensor::f_scaled_dot_product_attention::<Tensor>(
                &seg(&q)?,
                &seg(&k)?,
                &seg(&v)?,
                None,
                0.0,
                false,
                None,
                false,
            )?;
            outs.push(o.f_squeeze_dim(0)?);
            start += len;
        }
        let out = Tensor::f_cat(&outs, 1)?
            .f_transpose(0, 1)?
            .f_reshape([n, -1])?;
        self.proj.forward(&out)
    }
}

/// One pre-norm vision block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`.
#[derive(Debug)]
struct VisionBlock {
    norm1: RmsNorm,
    norm2: RmsNorm,
    attn: VisionAttention,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl VisionBlock {
    fn new(path: nn::Path, cfg: &VisionConfig) -> Result<Self> {
        let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
        let mlp = &path / "mlp";
        Ok(VisionBlock {
            norm1: RmsNorm::new(&path / "norm1", d, EPS)?,
            norm2: RmsNorm::new(&path / "norm2", d, EPS)?,
            attn: VisionAttention::new(&path / "attn", cfg)?,
            gate_proj: Linear::new(&mlp / "gate_proj", d, i, true)?,
            up_proj: Linear::new(&mlp / "up_proj", d, i, true)?,
            down_proj: Linear::new(&mlp / "down_proj", i, d, true)?,
        })
    }

    fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, lengths: &[i64]) -> Result<Tensor> {
        let x = x.f_add(
            &self
                .attn
                .forward(&self.norm1.forward(x)?, cos, sin, lengths)?,
        )?;
        let h = self.norm2.forward(&x)?;
        let gate = self.gate_proj.forward(&h)?.f_silu()?;
        let mlp = self
            .down_proj
            .forward(&gate.f_mul(&self.up_proj.forward(&h)?)?)?;
        Ok(x.f_add(&mlp)?)
    }
}

/// The vision tower with its merger. `&self` everywhere.
#[derive(Debug)]
pub struct VisionTower {
    cfg: VisionConfig,
    /// Conv3d kernel `[C_out, C_in, T, P, P]`, applied as a linear map over
    /// flattened patches (its stride equals its kernel).
    patch_embed: Tensor,
    /// `[head_dim / 4]` float32 inverse frequencies, shared by h and w.
    inv_freq: Tensor,
    blocks: Vec<VisionBlock>,
    ln_q: RmsNorm,
    merger_fc1: Linear,
    merger_fc2: Linear,
}

impl VisionTower {
    /// Create every parameter under `path` (`visual`).
    pub fn new(path: nn::Path, cfg: &VisionConfig) -> Result<VisionTower> {
        let c = cfg.hidden_size;
        let patch_embed = (&path / "patch_embed" / "proj").f_zeros(
            "weight",
            &[
                c,
                cfg.in_channels,
                cfg.temporal_patch_size,
                cfg.patch_size,
                cfg.patch_size,
            ],
        )?;
        let blocks = (0..cfg.depth)
            .map(|i| VisionBlock::new(&path / "blocks" / i, cfg))
            .collect::<Result<Vec<_>>>()?;
        let merger = &path / "merger";
        let wide = c * cfg.spatial_merge_size * cfg.spatial_merge_size;
        Ok(VisionTower {
            cfg: cfg.clone(),
            patch_embed,
            inv_freq: vision_inv_freq(cfg, path.device()),
            blocks,
            ln_q: RmsNorm::new(&merger / "ln_q", c, EPS)?,
            merger_fc1: Linear::new(&merger / "mlp" / "0", wide, wide, true)?,
            merger_fc2: Linear::new(&merger / "mlp" / "2", wide, cfg.out_hidden_size, true)?,
        })
    }

    /// Image features `[sum(t*h*w) / merge^2, out_hidden_size]` of the
    /// patches `pixel_values [sum(t*h*w), patch_dim]` of images with grids
    /// `grids`, in the order of the images and of their `<|image_pad|>` tokens.
    pub fn forward(&self, pixel_values: &Tensor, grids: &[[usize; 3]]) -> Result<Tensor> {
        let cfg = &self.cfg;
        let merge = cfg.spatial_merge_size as usize;
        let patches: usize = grids.iter().map(|g| g[0] * g[1] * g[2]).sum();
        let size = pixel_values.size();
        if size != [patches as i64, cfg.patch_dim()] {
            return Err(Error::ShapeMismatch {
                name: "pixel_values".into(),
                expected: vec![patches as i64, cfg.patch_dim()],
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
        let window = (cfg.window_size / cfg.spatial_merge_size / cfg.patch_size) as usize;
        let plan = VisionPlan::new(grids, merge, window);
        let device = pixel_values.device();
        let n = patches as i64;
        let unit = (merge * merge) as i64;
        let window_index = Tensor::from_slice(&plan.window_index).to_device(device);
        // Group the patches of each window together (whole merge blocks move).
        let permute = |t: &Tensor| -> Result<Tensor> {
            let width = t.size()[1];
            Ok(t.f_reshape([n / unit, unit, width])?
                .f_index_select(0, &window_index)?
                .f_reshape([n, width])?)
        };
        let kind = self.patch_embed.kind();
        let x = pixel_values
            .f_to_kind(kind)?
            .f_linear::<Tensor>(&self.patch_embed.f_reshape([cfg.hidden_size, -1])?, None)?;
        let mut x = permute(&x)?;
        let (cos, sin) = vision_rotary(&self.inv_freq, &plan, device)?;
        let (cos, sin) = (
            permute(&cos)?.f_unsqueeze(1)?,
            permute(&sin)?.f_unsqueeze(1)?,
        );
        let full = VisionPlan::lengths(&plan.cu_seqlens);
        let windows = VisionPlan::lengths(&plan.cu_window_seqlens);
        for (i, block) in self.blocks.iter().enumerate() {
            let lengths = if cfg.fullatt_block_indexes.contains(&(i as i64)) {
                &full
            } else {
                &windows
            };
            x = block.forward(&x, &cos, &sin, lengths)?;
        }
        let wide = cfg.hidden_size * unit;
        let merged = self.ln_q.forward(&x)?.f_reshape([-1, wide])?;
        let merged = self
            .merger_fc2
            .forward(&self.merger_fc1.forward(&merged)?.f_gelu("none")?)?;
        let reverse = Tensor::from_slice(&plan.reverse_index()).to_device(device);
        Ok(merged.f_index_select(0, &reverse)?)
    }
}

/// `[head_dim / 4]` inverse frequencies `theta^(-2i / (head_dim / 2))`, as
/// transformers computes them (float32 powers of float32 exponents).
pub(super) fn vision_inv_freq(cfg: &VisionConfig, device: tch::Device) -> Tensor {
    let spatial = cfg.head_dim() / 2;
    let inv: Vec<f32> = (0..spatial / 2)
        .map(|i| 1.0 / (cfg.rope_theta as f32).powf((2 * i) as f32 / spatial as f32))
        .collect();
    Tensor::from_slice(&inv).to_device(device)
}

/// `cos, signed_sin [N, head_dim]` (float32) of the patches' (h, w)
/// positions: `[h * f, w * f]` twice over, the second copy's sine negated
/// in the first half (the form that rotates by a roll).
pub(super) fn vision_rotary(
    inv_freq: &Tensor,
    plan: &VisionPlan,
    device: tch::Device,
) -> Result<(Tensor, Tensor)> {
    let flat: Vec<i64> = plan.positions.iter().flatten().copied().collect();
    let pos = Tensor::from_slice(&flat)
        .to_device(device)
        .f_view([-1, 2, 1])?
        .f_to_kind(Kind::Float)?;
    let n = pos.size()[0];
    let freqs = pos.f_mul(inv_freq)?.f_reshape([n, -1])?; // [N, D/2]: h then w
    let (cos, sin) = (freqs.f_cos()?, freqs.f_sin()?);
    Ok((
        Tensor::f_cat(&[&cos, &cos], -1)?,
        Tensor::f_cat(&[&sin.f_neg()?, &sin], -1)?,
    ))
}
