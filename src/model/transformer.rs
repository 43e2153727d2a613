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
use super::shared::SharedPrompt;
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

    /// The attention and MLP projections by their peft names
    /// (`self_attn.q_proj`, ..., `mlp.down_proj`), for attaching adapters.
    pub(crate) fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let attn = self.self_attn.linears_mut().into_iter();
        let attn = attn.map(|(n, l)| (format!("self_attn.{n}"), l));
        let mlp = self.mlp.linears_mut().into_iter();
        attn.chain(mlp.map(|(n, l)| (format!("mlp.{n}"), l)))
            .collect()
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

    /// [`DecoderLayer::forward`] for a shared prompt and its responses
    /// (`[G, P, hidden]`, `[B, R, hidden]`; see [`Attention::forward_shared`]).
    fn forward_shared(&self, xp: &Tensor, xr: &Tensor, s: &SharedTables) -> Result<[Tensor; 2]> {
        let (ap, ar) = self.self_attn.forward_shared(
            &self.input_layernorm.forward(xp)?,
            &self.input_layernorm.forward(xr)?,
            (&s.prompt_cos, &s.prompt_sin),
            (&s.response_cos, &s.response_sin),
            &s.group,
            &s.mask,
        )?;
        let mlp = |x: &Tensor| -> Result<Tensor> {
            let m = self
                .mlp
                .forward(&self.post_attention_layernorm.forward(x)?)?;
            Ok(x.f_add(&m)?)
        };
        Ok([mlp(&xp.f_add(&ap)?)?, mlp(&xr.f_add(&ar)?)?])
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
        let embed_tokens = super::layers::param(
            &(&model / "embed_tokens"),
            "weight",
            &[cfg.vocab_size, cfg.hidden_size],
            0.0,
        )?;
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

    /// The decoder layers, mutably, for attaching adapters ([`super::lora`]).
    pub(crate) fn layers_mut(&mut self) -> &mut [DecoderLayer] {
        &mut self.layers
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
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let x = self.embed_ids(ids)?;
        let (cos, sin) = self.rope.cos_sin(positions, x.kind())?;
        self.hidden_of_embeds(x, (&cos, &sin), mask, cache, &[])
    }

    /// Token embeddings `[B, T, hidden]` of `ids [B, T]`.
    pub fn embed_ids(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(Tensor::f_embedding(
            &self.embed_tokens,
            ids,
            -1,
            false,
            false,
        )?)
    }

    /// The rotary embedding of the decoder (for callers that build their own
    /// position tables, as the multimodal rotary of [`super::vision`]).
    pub fn rope(&self) -> &Rope {
        &self.rope
    }

    /// Final-norm hidden states `[B, T, hidden]` of already embedded inputs
    /// `x [B, T, hidden]` (a vision-language model's text embeddings with
    /// image features spliced in), under the rotary tables `rope` from
    /// [`Rope`], after the `cache.len()` cached positions. `attention_mask
    /// [B, cached + T]` as in [`CausalLm::forward`]; `None` is causal, no padding.
    /// `after_layers[k]` (`[B, T, hidden]`) is added to the output of layer
    /// `k` (Qwen3-VL's deepstack features; empty for other models).
    pub fn hidden_from_embeds(
        &self,
        x: Tensor,
        rope: (&Tensor, &Tensor),
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        after_layers: &[Tensor],
    ) -> Result<Tensor> {
        let t = x.size()[1];
        if after_layers.len() > self.layers.len() {
            return Err(Error::InvalidInput(format!(
                "{} per-layer additions for {} layers",
                after_layers.len(),
                self.layers.len()
            )));
        }
        match attention_mask {
            None => self.hidden_of_embeds(x, rope, AttnMask::Causal, cache, after_layers),
            Some(mask) => {
                let m = attention_bool_mask(mask, t)?;
                self.hidden_of_embeds(x, rope, AttnMask::Explicit(&m), cache, after_layers)
            }
        }
    }

    fn hidden_of_embeds(
        &self,
        mut x: Tensor,
        (cos, sin): (&Tensor, &Tensor),
        mask: AttnMask<'_>,
        mut cache: Option<&mut KvCache>,
        after_layers: &[Tensor],
    ) -> Result<Tensor> {
        let t = x.size()[1];
        for (i, layer) in self.layers.iter().enumerate() {
            let c = cache.as_deref_mut().map(|c| (c, i));
            x = layer.forward(&x, cos, sin, mask, c)?;
            if let Some(add) = after_layers.get(i) {
                x = x.f_add(add)?;
            }
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        self.norm.forward(&x)
    }

    /// The trunk's forward over `input`, set up for a later
    /// [`CausalLm::trunk_backward`]. `hidden` is `[B, S, hidden]` for
    /// [`TrunkInput::Rows`] and the flat `[G * P + B * R, hidden]` (prompt
    /// positions, then response positions) for [`TrunkInput::Shared`].
    ///
    /// Plain: `hidden` carries the whole autograd graph (every layer's
    /// activations stay alive). Checkpointed (`checkpoint = true`): the
    /// layers run without gradients and only each layer's input (per stream)
    /// is kept; `hidden` is the final norm of leaves, and the backward
    /// recomputes one layer at a time. A layer maps its inputs (prompt and
    /// responses together when shared) to its outputs, so recomputing it from
    /// its saved inputs gives the same graph: the two compose.
    pub fn trunk_forward(&self, input: &TrunkInput, checkpoint: bool) -> Result<TrunkPass> {
        let tables = self.tables(input)?;
        if !checkpoint || !grad_enabled() {
            let mut xs = self.embed(input)?;
            for layer in &self.layers {
                xs = self.layer_step(layer, &xs, &tables)?;
            }
            return Ok(TrunkPass {
                hidden: self.finish(&xs)?,
                saved: None,
            });
        }
        let (inputs, last) = tch::no_grad(|| -> Result<_> {
            let mut xs = self.embed(input)?;
            let mut inputs = Vec::with_capacity(self.layers.len());
            for layer in &self.layers {
                let ys = self.layer_step(layer, &xs, &tables)?;
                inputs.push(xs);
                xs = ys;
            }
            Ok((inputs, xs))
        })?;
        let leaves = last
            .iter()
            .map(|x| Ok(x.f_detach()?.f_set_requires_grad(true)?))
            .collect::<Result<Vec<_>>>()?;
        let hidden = self.finish(&leaves)?;
        Ok(TrunkPass {
            hidden,
            saved: Some(Checkpoints {
                input: input.shallow_clone(),
                inputs,
                leaves,
                tables,
            }),
        })
    }

    /// Back-propagate `seed` (a scalar computed from `pass.hidden`) into every
    /// parameter. With checkpoints, each layer is recomputed with gradients
    /// from its saved inputs, last layer first, and its output gradients pushed
    /// through it; the embedding last. Gradients accumulate into `.grad`.
    pub fn trunk_backward(&self, pass: TrunkPass, seed: &Tensor) -> Result<()> {
        seed.f_backward()?;
        let Some(saved) = pass.saved else {
            return Ok(());
        };
        let mut grads = saved
            .leaves
            .iter()
            .map(grad_of)
            .collect::<Result<Vec<_>>>()?;
        for (layer, inputs) in self.layers.iter().zip(saved.inputs).rev() {
            if grads.iter().all(Option::is_none) {
                return Ok(()); // the loss does not reach the trunk
            }
            let xs = inputs
                .iter()
                .map(|x| Ok(x.f_detach()?.f_set_requires_grad(true)?))
                .collect::<Result<Vec<_>>>()?;
            let ys = self.layer_step(layer, &xs, &saved.tables)?;
            weighted_sum(&ys, &grads)?.f_backward()?;
            grads = xs.iter().map(grad_of).collect::<Result<Vec<_>>>()?;
        }
        // A frozen embedding (LoRA) has nothing to receive the gradient.
        if grads.iter().any(Option::is_some) && self.embed_tokens.requires_grad() {
            weighted_sum(&self.embed(&saved.input)?, &grads)?.f_backward()?;
        }
        Ok(())
    }

    /// The embedded streams of `input`: `[x]` for rows, `[prompts, responses]` when shared.
    fn embed(&self, input: &TrunkInput) -> Result<Vec<Tensor>> {
        let e = |ids: &Tensor| -> Result<Tensor> {
            Ok(Tensor::f_embedding(
                &self.embed_tokens,
                ids,
                -1,
                false,
                false,
            )?)
        };
        Ok(match input {
            TrunkInput::Rows(ids) => vec![e(ids)?],
            TrunkInput::Shared(s) => vec![e(&s.prompt_ids)?, e(&s.response_ids)?],
        })
    }

    /// Rotary tables (and the shared mask) of `input`, made once per pass.
    fn tables(&self, input: &TrunkInput) -> Result<Tables> {
        let kind = self.kind();
        Ok(match input {
            TrunkInput::Rows(ids) => {
                let (b, t) = self.check_ids(ids)?;
                let pos =
                    Tensor::f_arange(t, (Kind::Int64, self.device))?.f_expand([b, t], true)?;
                let (cos, sin) = self.rope.cos_sin(&pos, kind)?;
                Tables::Rows { cos, sin }
            }
            TrunkInput::Shared(s) => {
                self.check_ids(&s.prompt_ids)?;
                self.check_ids(&s.response_ids)?;
                let (prompt_cos, prompt_sin) = self.rope.cos_sin(&s.prompt_positions, kind)?;
                let (response_cos, response_sin) =
                    self.rope.cos_sin(&s.response_positions, kind)?;
                Tables::Shared(SharedTables {
                    prompt_cos,
                    prompt_sin,
                    response_cos,
                    response_sin,
                    group: s.group.shallow_clone(),
                    mask: s.mask.shallow_clone(),
                })
            }
        })
    }

    /// One decoder layer over the streams.
    fn layer_step(&self, layer: &DecoderLayer, xs: &[Tensor], t: &Tables) -> Result<Vec<Tensor>> {
        Ok(match (t, xs) {
            (Tables::Rows { cos, sin }, [x]) => {
                vec![layer.forward(x, cos, sin, AttnMask::Causal, None)?]
            }
            (Tables::Shared(s), [xp, xr]) => layer.forward_shared(xp, xr, s)?.into(),
            _ => {
                return Err(Error::InvalidInput(format!(
                    "trunk: {} streams do not match the input",
                    xs.len()
                )))
            }
        })
    }

    /// Final norm of the last layer's streams: `[B, S, hidden]` for one
    /// stream, the flattened prompt then response positions for two.
    fn finish(&self, xs: &[Tensor]) -> Result<Tensor> {
        match xs {
            [x] => self.norm.forward(x),
            _ => {
                let flat = xs
                    .iter()
                    .map(|x| {
                        let width = *x.size().last().unwrap_or(&1);
                        self.norm.forward(&x.f_reshape([-1, width])?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Tensor::f_cat(&flat, 0)?)
            }
        }
    }

    /// Logits `[.., V]` of final-norm hidden states `[.., hidden]` (tied or untied head).
    pub fn head(&self, hidden: &Tensor) -> Result<Tensor> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => Ok(hidden.f_linear::<Tensor>(&self.embed_tokens, None)?),
        }
    }
}

/// What the trunk runs over: right-padded or unpadded rows `ids [B, T]`
/// (causal, positions from 0), or a group's shared prompt and its responses.
#[derive(Debug)]
pub enum TrunkInput {
    /// `ids [B, T]`, prompt then response per row.
    Rows(Tensor),
    /// Distinct prompts once, responses attending to them ([`SharedPrompt`]).
    Shared(SharedPrompt),
}

impl TrunkInput {
    fn shallow_clone(&self) -> TrunkInput {
        match self {
            TrunkInput::Rows(ids) => TrunkInput::Rows(ids.shallow_clone()),
            TrunkInput::Shared(s) => TrunkInput::Shared(s.shallow_clone()),
        }
    }
}

/// A trunk forward awaiting its backward ([`CausalLm::trunk_forward`]).
#[derive(Debug)]
pub struct TrunkPass {
    /// Final-norm hidden states, with gradient: `[B, S, hidden]` for rows,
    /// `[G * P + B * R, hidden]` for a shared prompt.
    pub hidden: Tensor,
    saved: Option<Checkpoints>,
}

/// What a checkpointed forward keeps: the input, each layer's input streams,
/// the leaves standing for the last layer's outputs, and the tables.
#[derive(Debug)]
struct Checkpoints {
    input: TrunkInput,
    inputs: Vec<Vec<Tensor>>,
    leaves: Vec<Tensor>,
    tables: Tables,
}

/// Per-pass constants of the layers.
#[derive(Debug)]
enum Tables {
    /// Rotary tables `[B, 1, T, D]` of positions `0..T`.
    Rows { cos: Tensor, sin: Tensor },
    /// A shared prompt's.
    Shared(SharedTables),
}

/// Rotary tables of the prompt and response positions, each response's
/// prompt row, and the responses' attention mask.
#[derive(Debug)]
struct SharedTables {
    prompt_cos: Tensor,
    prompt_sin: Tensor,
    response_cos: Tensor,
    response_sin: Tensor,
    group: Tensor,
    mask: Tensor,
}

/// The gradient accumulated in leaf `t`, or `None` when nothing reached it.
fn grad_of(t: &Tensor) -> Result<Option<Tensor>> {
    let g = t.f_grad()?;
    Ok(if g.defined() { Some(g) } else { None })
}

/// `sum_i sum(ys[i] * grads[i])` over the streams that received a gradient.
fn weighted_sum(ys: &[Tensor], grads: &[Option<Tensor>]) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for (y, g) in ys.iter().zip(grads) {
        if let Some(g) = g {
            let term = y.f_mul(g)?.f_sum(y.kind())?;
            total = Some(match total {
                Some(t) => t.f_add(&term)?,
                None => term,
            });
        }
    }
    total.ok_or_else(|| Error::InvalidInput("no gradient reached the trunk".into()))
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
