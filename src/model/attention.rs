//! Grouped-query self-attention with rotary embeddings, optional q/k/v biases
//! (Qwen2) and optional per-head RMSNorm on queries and keys (Qwen3).
//!
//! Mirrors the attention of transformers' `modeling_llama.py`,
//! `modeling_qwen2.py` and `modeling_qwen3.py`; the product itself is
//! libtorch's `scaled_dot_product_attention` with `enable_gqa`, so key/value
//! heads are never materialised per query head.

use super::config::Config;
use super::kv_cache::KvCache;
use super::layers::{apply_rope, Linear, RmsNorm};
use crate::error::Result;
use tch::{nn, Tensor};

/// Which positions a query may attend to.
#[derive(Debug, Clone, Copy)]
pub enum AttnMask<'a> {
    /// Causal over the whole key sequence, no padding (query `i` of `T` sees keys `..= S - T + i`).
    Causal,
    /// An explicit boolean mask `[B, 1, T, S]`, true where attention is allowed.
    Explicit(&'a Tensor),
}

/// One attention block: `q_proj`, `k_proj`, `v_proj`, `o_proj` (+ `q_norm`, `k_norm`).
#[derive(Debug)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    num_heads: i64,
    num_kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    /// The projections by their peft names, for attaching adapters.
    pub(crate) fn linears_mut(&mut self) -> [(&'static str, &mut Linear); 4] {
        [
            ("q_proj", &mut self.q_proj),
            ("k_proj", &mut self.k_proj),
            ("v_proj", &mut self.v_proj),
            ("o_proj", &mut self.o_proj),
        ]
    }

    /// Create the projections under `path` (`model.layers.N.self_attn`).
    pub fn new(path: nn::Path, cfg: &Config) -> Result<Attention> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let (nq, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let (q_norm, k_norm) = if cfg.qk_norm {
            (
                Some(RmsNorm::new(&path / "q_norm", d, cfg.rms_norm_eps)?),
                Some(RmsNorm::new(&path / "k_norm", d, cfg.rms_norm_eps)?),
            )
        } else {
            (None, None)
        };
        Ok(Attention {
            q_proj: Linear::new(&path / "q_proj", h, nq * d, cfg.qkv_bias)?,
            k_proj: Linear::new(&path / "k_proj", h, nkv * d, cfg.qkv_bias)?,
            v_proj: Linear::new(&path / "v_proj", h, nkv * d, cfg.qkv_bias)?,
            o_proj: Linear::new(&path / "o_proj", nq * d, h, cfg.o_bias)?,
            q_norm,
            k_norm,
            num_heads: nq,
            num_kv_heads: nkv,
            head_dim: d,
        })
    }

    /// `x [B, T, hidden]` -> `[B, T, hidden]`. With a cache, the new keys and
    /// values are appended to layer `layer` and attention spans the whole cache.
    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: AttnMask<'_>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let (q, k, v) = self.qkv(x, cos, sin)?;
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &k, &v)?,
            None => (k, v),
        };
        self.attend(&q, &k, &v, mask)
    }

    /// A group's shared prompt and its responses in one layer: `xp [G, P,
    /// hidden]` (the distinct prompts, right-padded) attend causally among
    /// themselves; `xr [B, R, hidden]` (the responses) attend to their
    /// prompt's keys and values followed by their own, under `mask [B, 1, R,
    /// P + R]`. `group [B]` names each response's prompt row; its keys and
    /// values are gathered per response (`index_select`), so the backward
    /// sums every response's contribution into the prompt's activations.
    /// Returns the outputs of both, `([G, P, hidden], [B, R, hidden])`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_shared(
        &self,
        xp: &Tensor,
        xr: &Tensor,
        prompt_rope: (&Tensor, &Tensor),
        response_rope: (&Tensor, &Tensor),
        group: &Tensor,
        mask: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (qp, kp, vp) = self.qkv(xp, prompt_rope.0, prompt_rope.1)?;
        let out_p = self.attend(&qp, &kp, &vp, AttnMask::Causal)?;
        let (qr, kr, vr) = self.qkv(xr, response_rope.0, response_rope.1)?;
        let k = Tensor::f_cat(&[&kp.f_index_select(0, group)?, &kr], 2)?;
        let v = Tensor::f_cat(&[&vp.f_index_select(0, group)?, &vr], 2)?;
        let out_r = self.attend(&qr, &k, &v, AttnMask::Explicit(mask))?;
        Ok((out_p, out_r))
    }

    /// Queries, keys and values `[B, heads, T, D]` of `x [B, T, hidden]`,
    /// with the per-head norms (Qwen3) and rotary embeddings applied.
    fn qkv(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let size = x.size();
        let (b, t) = (size[0], size[1]);
        let heads = |lin: &Linear, n: i64, norm: &Option<RmsNorm>| -> Result<Tensor> {
            let y = lin.forward(x)?.f_view([b, t, n, self.head_dim])?;
            let y = match norm {
                Some(norm) => norm.forward(&y)?,
                None => y,
            };
            Ok(y.f_transpose(1, 2)?) // [B, n, T, D]
        };
        let q = apply_rope(
            &heads(&self.q_proj, self.num_heads, &self.q_norm)?,
            cos,
            sin,
        )?;
        let k = apply_rope(
            &heads(&self.k_proj, self.num_kv_heads, &self.k_norm)?,
            cos,
            sin,
        )?;
        let v = heads(&self.v_proj, self.num_kv_heads, &None)?;
        Ok((q, k, v))
    }

    /// Attention of queries `q [B, heads, T, D]` over keys and values `[B,
    /// kv_heads, S, D]` under `mask`, then the output projection: `[B, T, hidden]`.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: AttnMask<'_>) -> Result<Tensor> {
        let (b, t) = (q.size()[0], q.size()[2]);
        let s = k.size()[2];
        let gqa = self.num_heads != self.num_kv_heads;
        let out = if t == 1 && gqa {
            // One query per row (decoding): grouped attention as two batched
            // matmuls over [B, kv_heads, group, .], cheaper than the fused
            // kernel on the cache's strided view.
            self.decode_attention(q, k, v, mask)?
        } else {
            match mask {
                AttnMask::Causal if t == 1 => Tensor::f_scaled_dot_product_attention::<Tensor>(
                    q, k, v, None, 0.0, false, None, gqa,
                )?,
                AttnMask::Causal if t == s => Tensor::f_scaled_dot_product_attention::<Tensor>(
                    q, k, v, None, 0.0, true, None, gqa,
                )?,
                AttnMask::Causal => {
                    // Queries sit at the end of the key sequence.
                    let m = Tensor::f_ones([t, s], (tch::Kind::Bool, q.device()))?.f_tril(s - t)?;
                    Tensor::f_scaled_dot_product_attention(
                        q,
                        k,
                        v,
                        Some(&m),
                        0.0,
                        false,
                        None,
                        gqa,
                    )?
                }
                AttnMask::Explicit(m) => {
                    Tensor::f_scaled_dot_product_attention(q, k, v, Some(m), 0.0, false, None, gqa)?
                }
            }
        };
        let out = out.f_transpose(1, 2)?.f_contiguous()?.f_view([
            b,
            t,
            self.num_heads * self.head_dim,
        ])?;
        self.o_proj.forward(&out)
    }

    /// `softmax(q k^T / sqrt(d)) v` for a single query position, with query
    /// head `h` reading key/value head `h / group` (transformers' `repeat_kv`).
    fn decode_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: AttnMask<'_>,
    ) -> Result<Tensor> {
        let b = q.size()[0];
        let group = self.num_heads / self.num_kv_heads;
        let qg = q.f_reshape([b, self.num_kv_heads, group, self.head_dim])?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut scores = qg.f_matmul(&k.f_transpose(-1, -2)?)?.f_mul_scalar(scale)?; // [B, kv, g, S]
        if let AttnMask::Explicit(m) = mask {
            // m: [B, 1, 1, S], true where allowed.
            scores = scores.f_masked_fill(&m.f_logical_not()?, f64::NEG_INFINITY)?;
        }
        let probs = scores.f_softmax(-1, scores.kind())?;
        Ok(probs
            .f_matmul(v)?
            .f_reshape([b, self.num_heads, 1, self.head_dim])?)
    }
}
