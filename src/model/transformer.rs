//! The Llama-family decoder (Llama 2/3, Qwen2/2.5, Qwen3): embedding, pre-norm
//! decoder layers (RMSNorm, grouped-query attention with RoPE, SwiGLU), final
//! norm and a tied or untied output head.
//!
//! Mirrors transformers' `LlamaForCausalLM` / `Qwen2ForCausalLM` /
//! `Qwen3ForCausalLM` ("LLaMA", Touvron et al. 2023; the Qwen2 and Qwen3
//! technical reports). Parameter names are the safetensors keys.

use super::attention::{Attention, AttnMask};
use super::config::Config;
use super::kv_cache::KvCache;
use super::layers::{Linear, Mlp, RmsNorm, Rope};
use crate::error::{Error, Result};
use tch::{nn, Device, Kind, Tensor};

/// One pre-norm block: `x + attn(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Debug)]
pub struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    /// Create the block under `path` (`model.layers.N`).
    pub fn new(path: nn::Path, cfg: &Config) -> Result<DecoderLayer> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(DecoderLayer {
            input_layernorm: RmsNorm::new(&path / "input_layernorm", h, eps)?,
            self_attn: Attention::new(&path / "self_attn", cfg)?,
            post_attention_layernorm: RmsNorm::new(&path / "post_attention_layernorm", h, eps)?,
            mlp: Mlp::new(&path / "mlp", cfg)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: AttnMask<'_>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let attn =
            self.self_attn
                .forward(&self.input_layernorm.forward(x)?, cos, sin, mask, cache)?;
        let x = x.f_add(&attn)?;
        let mlp = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&x)?)?;
        Ok(x.f_add(&mlp)?)
    }
}

/// A decoder-only language model. Holds handles to tensors owned by a
/// `nn::VarStore` (see [`super::LoadedModel`]); `&self` everywhere, the KV
/// cache belongs to the caller.
#[derive(Debug)]
pub struct CausalLm {
    /// The configuration the modules were built from.
    pub config: Config,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// `None` when the head is tied to the embedding.
    lm_head: Option<Linear>,
    rope: Rope,
    device: Device,
}

impl CausalLm {
    /// Create every parameter under `root` (names `model.embed_tokens.weight`,
    /// `model.layers.N....`, `model.norm.weight`, `lm_head.weight`).
    pub fn new(root: &nn::Path, cfg: &Config) -> Result<CausalLm> {
        cfg.validate()?;
        let model = root / "model";
        let embed_tokens =
            (&model / "embed_tokens").f_zeros("weight", &[cfg.vocab_size, cfg.hidden_size])?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(&model / "layers" / i, cfg))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(&model / "norm", cfg.hidden_size, cfg.rms_norm_eps)?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(Linear::new(
                root / "lm_head",
                cfg.hidden_size,
                cfg.vocab_size,
                false,
            )?)
        };
        Ok(CausalLm {
            config: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope: Rope::new(cfg, root.device()),
            device: root.device(),
        })
    }

    /// Device of the parameters.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Floating-point kind of the parameters.
    pub fn kind(&self) -> Kind {
        self.embed_tokens.kind()
    }

    /// Logits of every position, `[B, T, V]`, for `ids [B, T]`.
    ///
    /// `attention_mask [B, T]` (1 = token, 0 = padding) is for left-padded
    /// batches: positions restart at 0 on each row's first token and padding is
    /// never attended to. Right padding needs no mask (causal attention never
    /// looks ahead), so `None` is right for right-padded or unpadded batches.
    pub fn forward_all(&self, ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let hidden = self.hidden_all(ids, attention_mask)?;
        self.head(&hidden)
    }

    /// The final-norm hidden states `[B, T, hidden]` of [`CausalLm::forward_all`],
    /// before the output head; [`CausalLm::head`] maps any subset of them to
    /// logits (scoring uses this to skip the head on prompt positions).
    pub fn hidden_all(&self, ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, t) = self.check_ids(ids)?;
        match attention_mask {
            None => {
                let pos =
                    Tensor::f_arange(t, (Kind::Int64, self.device))?.f_expand([b, t], true)?;
                self.hidden(ids, &pos, AttnMask::Causal, None)
            }
            Some(mask) => {
                let pos = positions_from_mask(mask)?;
                let m = attention_bool_mask(mask, t)?;
                self.hidden(ids, &pos, AttnMask::Explicit(&m), None)
            }
        }
    }

    /// One cached step: run `ids [B, T]` at `positions [B, T]` after the
    /// `cache.len()` cached positions and return the logits of the last
    /// position, `[B, V]`. `attention_mask [B, cache.len() + T]` marks real
    /// tokens (1) and padding (0) over the whole sequence; `None` means no padding.
    pub fn forward(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (_, t) = self.check_ids(ids)?;
        let hidden = match attention_mask {
            None => self.hidden(ids, positions, AttnMask::Causal, Some(cache))?,
            Some(mask) => {
                let m = attention_bool_mask(mask, t)?;
                self.hidden(ids, positions, AttnMask::Explicit(&m), Some(cache))?
            }
        };
        self.head(&hidden.f_select(1, t - 1)?)
    }

    /// Final-norm hidden states `[B, T, hidden]` of `ids [B, T]` at
    /// `positions [B, T]` after the `cache.len()` cached positions, causal and
    /// without padding inside the new positions' left context (rows may end in
    /// padding: causal attention never reads a later position).
    pub fn forward_hidden(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        self.check_ids(ids)?;
        self.hidden(ids, positions, AttnMask::Causal, Some(cache))
    }

    /// A cache sized for `capacity` positions of this model.
    pub fn new_cache(&self, capacity: i64) -> KvCache {
        KvCache::new(self.layers.len(), capacity)
    }

    fn check_ids(&self, ids: &Tensor) -> Result<(i64, i64)> {
        let size = ids.size();
        if size.len() != 2 || size[1] == 0 {
            return Err(Error::InvalidInput(format!(
                "token ids must be [batch, time] with time > 0, got {size:?}"
            )));
        }
        Ok((size[0], size[1]))
    }

    fn hidden(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        mask: AttnMask<'_>,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let t = ids.size()[1];
        let mut x = Tensor::f_embedding(&self.embed_tokens, ids, -1, false, false)?;
        let (cos, sin) = self.rope.cos_sin(positions, x.kind())?;
        for (i, layer) in self.layers.iter().enumerate() {
            let c = cache.as_deref_mut().map(|c| (c, i));
            x = layer.forward(&x, &cos, &sin, mask, c)?;
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        self.norm.forward(&x)
    }

    /// The trunk's forward over right-padded or unpadded `ids [B, T]` (causal,
    /// positions from 0), set up for a later [`CausalLm::trunk_backward`].
    ///
    /// Plain: `hidden` carries the whole autograd graph (every layer's
    /// activations stay alive). Checkpointed (`checkpoint = true`): the
    /// layers run without gradients and only each layer's input `[B, T,
    /// hidden]` is kept; `hidden` is the final norm of a leaf, and the backward
    /// recomputes one layer at a time.
    pub fn trunk_forward(&self, ids: &Tensor, checkpoint: bool) -> Result<TrunkPass> {
        let (b, t) = self.check_ids(ids)?;
        if !checkpoint || !grad_enabled() {
            let hidden = self.hidden_all(ids, None)?;
            return Ok(TrunkPass {
                hidden,
                saved: None,
            });
        }
        let pos = Tensor::f_arange(t, (Kind::Int64, self.device))?.f_expand([b, t], true)?;
        let (inputs, last, cos, sin) = tch::no_grad(|| -> Result<_> {
            let mut x = Tensor::f_embedding(&self.embed_tokens, ids, -1, false, false)?;
            let (cos, sin) = self.rope.cos_sin(&pos, x.kind())?;
            let mut inputs = Vec::with_capacity(self.layers.len());
            for layer in &self.layers {
                let y = layer.forward(&x, &cos, &sin, AttnMask::Causal, None)?;
                inputs.push(x);
                x = y;
            }
            Ok((inputs, x, cos, sin))
        })?;
        let leaf = last.f_detach()?.f_set_requires_grad(true)?;
        let hidden = self.norm.forward(&leaf)?;
        Ok(TrunkPass {
            hidden,
            saved: Some(Checkpoints {
                ids: ids.shallow_clone(),
                inputs,
                leaf,
                cos,
                sin,
            }),
        })
    }

    /// Back-propagate `seed` (a scalar computed from `pass.hidden`) into every
    /// parameter. With checkpoints, each layer is recomputed with gradients
    /// from its saved input, last layer first, and its output gradient pushed
    /// through it; the embedding last. Gradients accumulate into `.grad`.
    pub fn trunk_backward(&self, pass: TrunkPass, seed: &Tensor) -> Result<()> {
        seed.f_backward()?;
        let Some(saved) = pass.saved else {
            return Ok(());
        };
        let mut grad = saved.leaf.f_grad()?;
        if !grad.defined() {
            return Ok(()); // the loss does not reach the trunk
        }
        for (layer, input) in self.layers.iter().zip(saved.inputs).rev() {
            let x = input.f_detach()?.f_set_requires_grad(true)?;
            let y = layer.forward(&x, &saved.cos, &saved.sin, AttnMask::Causal, None)?;
            y.f_mul(&grad)?.f_sum(y.kind())?.f_backward()?;
            grad = x.f_grad()?;
        }
        let x = Tensor::f_embedding(&self.embed_tokens, &saved.ids, -1, false, false)?;
        x.f_mul(&grad)?.f_sum(x.kind())?.f_backward()?;
        Ok(())
    }

    /// Logits `[.., V]` of final-norm hidden states `[.., hidden]` (tied or untied head).
    pub fn head(&self, hidden: &Tensor) -> Result<Tensor> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => Ok(hidden.f_linear::<Tensor>(&self.embed_tokens, None)?),
        }
    }
}

/// A trunk forward awaiting its backward ([`CausalLm::trunk_forward`]).
#[derive(Debug)]
pub struct TrunkPass {
    /// Final-norm hidden states `[B, T, hidden]`, with gradient.
    pub hidden: Tensor,
    saved: Option<Checkpoints>,
}

/// What a checkpointed forward keeps: the ids, each layer's input, the leaf
/// standing for the last layer's output, and the rotary tables.
#[derive(Debug)]
struct Checkpoints {
    ids: Tensor,
    inputs: Vec<Tensor>,
    leaf: Tensor,
    cos: Tensor,
    sin: Tensor,
}

/// Whether autograd records operations on this thread now.
fn grad_enabled() -> bool {
    // `no_grad` flips the mode; a fresh leaf records only when it is on.
    Tensor::zeros([1], (Kind::Float, Device::Cpu))
        .set_requires_grad(true)
        .f_mul_scalar(1.0)
        .map(|t| t.requires_grad())
        .unwrap_or(false)
}

/// Positions under left padding: `cumsum(mask) - 1`, clamped at 0 on padding.
pub fn positions_from_mask(mask: &Tensor) -> Result<Tensor> {
    Ok(mask
        .f_to_kind(Kind::Int64)?
        .f_cumsum(-1, Kind::Int64)?
        .f_sub_scalar(1)?
        .f_clamp_min(0)?)
}

/// Boolean `[B, 1, T, S]` mask for the last `t` queries over `S` keys:
/// causal, no attention to padding, and each query always sees itself (so a
/// padding query's row is never empty and produces no NaN).
pub fn attention_bool_mask(mask: &Tensor, t: i64) -> Result<Tensor> {
    let size = mask.size();
    if size.len() != 2 || size[1] < t {
        return Err(Error::InvalidInput(format!(
            "attention mask must be [batch, cached + new] with at least {t} columns, got {size:?}"
        )));
    }
    let s = size[1];
    let device = mask.device();
    let causal = Tensor::f_ones([t, s], (Kind::Bool, device))?.f_tril(s - t)?;
    let diag = Tensor::f_eye_m(t, s, (Kind::Bool, device))?.f_roll([s - t], [1])?;
    let keys = mask.f_to_kind(Kind::Bool)?.f_view([size[0], 1, 1, s])?;
    Ok(keys.f_logical_or(&diag)?.f_logical_and(&causal)?)
}
