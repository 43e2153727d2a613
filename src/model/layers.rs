//! Building blocks shared by the decoder: linear layers, RMSNorm, rotary
//! position embeddings (with Llama-3 frequency scaling) and the SwiGLU MLP.
//!
//! Parameters are created under `nn::Path`s named like the Hugging Face keys
//! (`...q_proj.weight`, `...input_layernorm.weight`) so that a safetensors file
//! maps onto the var store by name. They start at zero (ones for norms);
//! [`super::LoadedModel`] fills them from a checkpoint or a seeded random init.

use super::config::Config;
use crate::error::Result;
use tch::{nn, Kind, Tensor};

/// The parameter `name` under `path`: the tensor already registered there
/// (a replica built on another model's frozen base registers the base's
/// tensors first, see [`super::shared_base`]), else a new trainable one
/// filled with `fill`.
pub(crate) fn param(path: &nn::Path, name: &str, dims: &[i64], fill: f64) -> Result<Tensor> {
    match path.get(name) {
        Some(t) if t.size() == dims => Ok(t),
        Some(t) => Err(crate::error::Error::ShapeMismatch {
            name: name.to_string(),
            expected: dims.to_vec(),
            got: t.size(),
        }),
        None => Ok(path.f_var(name, dims, nn::Init::Const(fill))?),
    }
}

/// `y = x W^T + b`, parameters `weight [out, in]` and optional `bias [out]`.
#[derive(Debug)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    /// `[out]`, when the layer has a bias.
    pub bias: Option<Tensor>,
    /// A LoRA adapter added to the output, when one is attached
    /// ([`super::lora`]).
    pub lora: Option<super::lora::LoraBranch>,
}

impl Linear {
    /// Create `weight` (and `bias`) under `path`.
    pub fn new(path: nn::Path, in_dim: i64, out_dim: i64, bias: bool) -> Result<Linear> {
        let weight = param(&path, "weight", &[out_dim, in_dim], 0.0)?;
        let bias = if bias {
            Some(param(&path, "bias", &[out_dim], 0.0)?)
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            lora: None,
        })
    }

    /// Apply to the last dimension of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.f_linear(&self.weight, self.bias.as_ref())?;
        match &self.lora {
            Some(lora) => lora.add_to(x, &y),
            None => Ok(y),
        }
    }
}

/// Root-mean-square normalisation with a learned scale, computed in float32
/// as transformers does: `w * (x / sqrt(mean(x^2) + eps))`.
#[derive(Debug)]
pub struct RmsNorm {
    /// Learned scale `[dim]`.
    pub weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// Create `weight` (ones) under `path`.
    pub fn new(path: nn::Path, dim: i64, eps: f64) -> Result<RmsNorm> {
        let weight = param(&path, "weight", &[dim], 1.0)?;
        Ok(RmsNorm { weight, eps })
    }

    /// Normalise the last dimension of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let kind = x.kind();
        if kind == Kind::Float && self.weight.kind() == Kind::Float {
            // The fused kernel does exactly the float32 computation.
            let dim = *x.size().last().unwrap_or(&1);
            return Ok(x.f_rms_norm([dim], Some(&self.weight), self.eps)?);
        }
        let xf = x.f_to_kind(Kind::Float)?;
        let var = xf.f_square()?.f_mean_dim(-1, true, Kind::Float)?;
        let normed = xf.f_mul(&var.f_add_scalar(self.eps)?.f_rsqrt()?)?;
        Ok(normed.f_to_kind(kind)?.f_mul(&self.weight)?)
    }
}

/// Rotary position embeddings: inverse frequencies, and the cos/sin tables for
/// given positions.
#[derive(Debug)]
pub struct Rope {
    /// `[head_dim / 2]` float32 inverse frequencies (after any scaling).
    inv_freq: Tensor,
}

impl Rope {
    /// Frequencies `theta^(-2i/d)`, rescaled per Llama 3 when configured.
    pub fn new(cfg: &Config, device: tch::Device) -> Rope {
        let d = cfg.head_dim as f64;
        let mut inv: Vec<f64> = (0..cfg.head_dim / 2)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / d))
            .collect();
        if let Some(s) = cfg.rope_scaling {
            let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
            let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
            for f in inv.iter_mut() {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                if wavelen > low_wavelen {
                    *f /= s.factor;
                } else if wavelen >= high_wavelen {
                    // Between the two: blend the scaled and unscaled frequency.
                    let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    *f = (1.0 - smooth) * *f / s.factor + smooth * *f;
                }
            }
        }
        let inv: Vec<f32> = inv.into_iter().map(|x| x as f32).collect();
        Rope {
            inv_freq: Tensor::from_slice(&inv).to_device(device),
        }
    }

    /// `cos, signed_sin` of shape `[B, 1, T, head_dim]` in `kind` for positions
    /// `[B, T]`; `signed_sin` is `sin` with its first half negated, the form
    /// [`apply_rope`] takes.
    pub fn cos_sin(&self, positions: &Tensor, kind: Kind) -> Result<(Tensor, Tensor)> {
        let pos = positions.f_to_kind(Kind::Float)?.f_unsqueeze(-1)?; // [B, T, 1]
        let freqs = pos.f_mul(&self.inv_freq)?; // [B, T, D/2]
        Self::tables(&freqs, kind)
    }

    /// Multimodal rotary (M-RoPE, Qwen2-VL and later): the tables of
    /// [`Rope::cos_sin`] for `positions [3, B, T]` (temporal, height, width),
    /// where frequency `i` turns with the position on axis `axis_of[i]`
    /// (`[head_dim / 2]`, values 0..3). Text tokens have equal positions on
    /// the three axes and get the plain rotary.
    pub fn cos_sin_multimodal(
        &self,
        positions: &Tensor,
        axis_of: &Tensor,
        kind: Kind,
    ) -> Result<(Tensor, Tensor)> {
        let pos = positions.f_to_kind(Kind::Float)?.f_unsqueeze(-1)?; // [3, B, T, 1]
        let freqs = pos.f_mul(&self.inv_freq)?; // [3, B, T, D/2]
        let size = freqs.size();
        let index = axis_of
            .f_view([1, 1, 1, -1])?
            .f_expand([1, size[1], size[2], size[3]], false)?;
        let freqs = freqs.f_gather(0, &index, false)?.f_squeeze_dim(0)?; // [B, T, D/2]
        Self::tables(&freqs, kind)
    }

    /// `cos, signed_sin [B, 1, T, D]` of rotation angles `freqs [B, T, D/2]`.
    fn tables(freqs: &Tensor, kind: Kind) -> Result<(Tensor, Tensor)> {
        let sin = freqs.f_sin()?;
        let cos = freqs.f_cos()?;
        let cos = Tensor::f_cat(&[&cos, &cos], -1)?.f_unsqueeze(1)?; // [B, 1, T, D]
        let signed_sin = Tensor::f_cat(&[&sin.f_neg()?, &sin], -1)?.f_unsqueeze(1)?;
        Ok((cos.f_to_kind(kind)?, signed_sin.f_to_kind(kind)?))
    }
}

/// Rotate `x [B, H, T, D]` by the tables from [`Rope::cos_sin`]:
/// `x * cos + rotate_half(x) * sin` with `rotate_half([a, b]) = [-b, a]`,
/// computed as `x * cos + roll(x, D/2) * signed_sin` (roll gives `[b, a]`).
pub fn apply_rope(x: &Tensor, cos: &Tensor, signed_sin: &Tensor) -> Result<Tensor> {
    let half = x.size()[3] / 2;
    let rolled = x.f_roll([half], [3])?;
    Ok(x.f_mul(cos)?.f_add(&rolled.f_mul(signed_sin)?)?)
}

/// SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
#[derive(Debug)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    /// The projections by their peft names, for attaching adapters.
    pub(crate) fn linears_mut(&mut self) -> [(&'static str, &mut Linear); 3] {
        [
            ("gate_proj", &mut self.gate_proj),
            ("up_proj", &mut self.up_proj),
            ("down_proj", &mut self.down_proj),
        ]
    }

    /// Create `gate_proj`, `up_proj`, `down_proj` under `path` (`...mlp`).
    pub fn new(path: nn::Path, cfg: &Config) -> Result<Mlp> {
        let (h, i, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Ok(Mlp {
            gate_proj: Linear::new(&path / "gate_proj", h, i, b)?,
            up_proj: Linear::new(&path / "up_proj", h, i, b)?,
            down_proj: Linear::new(&path / "down_proj", i, h, b)?,
        })
    }

    /// Apply to `x [.., hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = self.gate_proj.forward(x)?.f_silu()?;
        let up = self.up_proj.forward(x)?;
        self.down_proj.forward(&gate.f_mul(&up)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_matches_hand_computation() {
        // x = [3, 4]: mean(x^2) = 12.5, so x / sqrt(12.5) = [0.848528, 1.131371].
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let norm = RmsNorm::new(vs.root() / "n", 2, 0.0).unwrap();
        let y = norm.forward(&Tensor::from_slice(&[3.0f32, 4.0])).unwrap();
        let y: Vec<f32> = Vec::try_from(y).unwrap();
        assert!((y[0] - 0.848528).abs() < 1e-5 && (y[1] - 1.131371).abs() < 1e-5);
        // The bf16 path takes the manual route and agrees to bf16 precision.
        let yb = norm
            .forward(&Tensor::from_slice(&[3.0f32, 4.0]).to_kind(Kind::BFloat16))
            .unwrap()
            .to_kind(Kind::Float);
        let yb: Vec<f32> = Vec::try_from(yb).unwrap();
        assert!((yb[1] - 1.131371).abs() < 1e-2);
    }

    #[test]
    fn rope_rotates_pairs_by_position_times_frequency() {
        // head_dim 2, theta irrelevant (one frequency = 1): position 1 rotates
        // (1, 0) by 1 radian to (cos 1, sin 1).
        let cfg = Config {
            head_dim: 2,
            ..Config::tiny()
        };
        let rope = Rope::new(&cfg, tch::Device::Cpu);
        let (cos, sin) = rope
            .cos_sin(&Tensor::from_slice(&[1i64]).view([1, 1]), Kind::Float)
            .unwrap();
        let x = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 1, 1, 2]);
        let y: Vec<f32> = Vec::try_from(apply_rope(&x, &cos, &sin).unwrap().view([-1])).unwrap();
        assert!((y[0] - 1f32.cos()).abs() < 1e-6 && (y[1] - 1f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let mut cfg = Config {
            head_dim: 16,
            rope_theta: 10_000.0,
            ..Config::tiny()
        };
        let plain: Vec<f32> = Vec::try_from(&Rope::new(&cfg, tch::Device::Cpu).inv_freq).unwrap();
        cfg.rope_scaling = Some(super::super::config::Llama3RopeScaling {
            factor: 4.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64.0,
        });
        let scaled: Vec<f32> = Vec::try_from(&Rope::new(&cfg, tch::Device::Cpu).inv_freq).unwrap();
        // Wavelength 2*pi < 16: unchanged. Wavelength 2*pi*10^(7/2) > 64: divided by 4.
        assert_eq!(plain[0], scaled[0]);
        assert!((scaled[7] - plain[7] / 4.0).abs() < 1e-12);
        // i = 2: wavelength 2*pi*10 = 62.83 lies between 16 and 64, smooth = (64/62.83 - 1)/3.
        let smooth = (64.0 / (2.0 * std::f64::consts::PI * 10.0) - 1.0) / 3.0;
        let want = (1.0 - smooth) * 0.1 / 4.0 + smooth * 0.1;
        assert!((scaled[2] as f64 - want).abs() < 1e-7);
    }
}
