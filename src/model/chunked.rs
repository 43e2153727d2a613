//! Response-token scores without a `[tokens, vocab]` tensor for the whole
//! batch: the output head, temperature and log-softmax run over at most
//! `chunk` response tokens at a time.
//!
//! With gradients ([`backward_scores`]) the loss is taken in two stages so
//! that no chunk's logits outlive the chunk:
//!
//! 1. the trunk runs once and the final hidden states of the positions that
//!    predict response tokens are picked (`h [N, hidden]`, no padding);
//!    a detached copy `h'` of them is scored chunk by chunk without gradients,
//!    giving `logp_t` and the entropy `H_t`, which become leaves of the loss;
//! 2. the loss (any function of `logp` and `H`) is back-propagated to those
//!    leaves, giving `g_t = dL/dlogp_t` and `e_t = dL/dH_t`; then each chunk
//!    is recomputed with gradients and `sum_t g_t logp_t + e_t H_t` (plus the
//!    chunk's [`VocabLoss`] term) is back-propagated, which accumulates the
//!    head's gradient and `dL/dh'`; finally `sum(h * dL/dh')` carries that
//!    into the trunk ([`CausalLm::trunk_backward`], checkpointed or not).
//!
//! By the chain rule the parameters receive exactly the gradient of the
//! one-pass computation; only summation order differs. A batch whose tokens
//! fit in one chunk takes the one-pass route (no recomputation).

use super::shared::{shares_prompt, SharedPrompt};
use super::transformer::{CausalLm, TrunkInput};
use crate::error::{Error, Result};
use crate::policy::{PromptResponse, ResponseScores, ScoreOptions, VocabLoss};
use tch::{Device, Kind, Tensor};

/// Bytes of float32 logits one chunk may hold: 64 MiB, i.e. 110 tokens at
/// Qwen2's vocabulary of 151,936 and 262,144 tokens at a 64-token vocabulary.
pub const LOGIT_CHUNK_BYTES: usize = 64 << 20;

/// Tokens per chunk: `requested`, or when 0 as many as fit in
/// [`LOGIT_CHUNK_BYTES`] of float32 logits (at least 1).
pub fn chunk_tokens(vocab: i64, requested: usize) -> usize {
    if requested > 0 {
        return requested;
    }
    (LOGIT_CHUNK_BYTES / (4 * vocab.max(1) as usize)).max(1)
}

/// Where a batch's response tokens sit in the trunk's input and output.
#[derive(Debug)]
pub(crate) struct Layout {
    /// What the trunk runs: `[B, S]` prompt then response, right-padded with
    /// 0, or the shared-prompt layout ([`SharedPrompt`]).
    pub(crate) input: TrunkInput,
    /// `[N]` flat index into the trunk's output positions (`B * S`, or
    /// `G * P + B * R` shared) of the position predicting each response token.
    pub(crate) sel: Tensor,
    /// `[N]` flat index into `B * L` of each response token in the padded scores.
    pub(crate) out: Tensor,
    /// `[N]` the response tokens.
    pub(crate) targets: Tensor,
    /// `[B, L]` 1.0 on response tokens (float32).
    pub(crate) mask: Tensor,
    /// Rows, longest response, response tokens.
    pub(crate) b: i64,
    pub(crate) l: i64,
    pub(crate) n: i64,
}

impl Layout {
    /// Lay out `batch` on `device` (sequences already checked) as padded rows.
    pub(crate) fn new(batch: &[PromptResponse], device: Device) -> Result<Layout> {
        let b = batch.len();
        let s = batch
            .iter()
            .map(|p| p.prompt.len() + p.response.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut ids = vec![0i64; b * s];
        let mut sel = Vec::new();
        for (r, pr) in batch.iter().enumerate() {
            let row = &mut ids[r * s..(r + 1) * s];
            let p = pr.prompt.len();
            row[..p].copy_from_slice(&pr.prompt);
            row[p..p + pr.response.len()].copy_from_slice(&pr.response);
            sel.extend((0..pr.response.len()).map(|j| (r * s + p - 1 + j) as i64));
        }
        let ids = Tensor::f_from_slice(&ids)?
            .f_to_device(device)?
            .f_view([b as i64, s as i64])?;
        Layout::with(batch, TrunkInput::Rows(ids), &sel, device)
    }

    /// Lay out `batch` with each distinct prompt once ([`SharedPrompt`]).
    pub(crate) fn shared(batch: &[PromptResponse], device: Device) -> Result<Layout> {
        let (shared, sel) = SharedPrompt::new(batch, device)?;
        Layout::with(batch, TrunkInput::Shared(shared), &sel, device)
    }

    /// The shared layout when `share` is on and some prompt repeats, else rows.
    pub(crate) fn for_training(
        batch: &[PromptResponse],
        share: bool,
        device: Device,
    ) -> Result<Layout> {
        if shares_prompt(batch, share) {
            Layout::shared(batch, device)
        } else {
            Layout::new(batch, device)
        }
    }

    /// The parts common to both layouts: targets, output slots, mask.
    fn with(
        batch: &[PromptResponse],
        input: TrunkInput,
        sel: &[i64],
        device: Device,
    ) -> Result<Layout> {
        let b = batch.len();
        let l = batch.iter().map(|p| p.response.len()).max().unwrap_or(0);
        let (mut out, mut targets) = (Vec::new(), Vec::new());
        let mut mask = vec![0f32; b * l];
        for (r, pr) in batch.iter().enumerate() {
            for (j, &t) in pr.response.iter().enumerate() {
                out.push((r * l + j) as i64);
                targets.push(t);
                mask[r * l + j] = 1.0;
            }
        }
        let on =
            |v: &[i64]| -> Result<Tensor> { Ok(Tensor::f_from_slice(v)?.f_to_device(device)?) };
        Ok(Layout {
            input,
            sel: on(sel)?,
            out: on(&out)?,
            targets: on(&targets)?,
            mask: Tensor::f_from_slice(&mask)?
                .f_view([b as i64, l as i64])?
                .f_to_device(device)?,
            b: b as i64,
            l: l as i64,
            n: sel.len() as i64,
        })
    }

    /// Scatter per-token values `[N]` into right-padded `[B, L]` (0 on padding).
    pub(crate) fn pad(&self, values: &Tensor) -> Result<Tensor> {
        Ok(
            Tensor::f_zeros([self.b * self.l], (values.kind(), values.device()))?
                .f_index_copy(0, &self.out, values)?
                .f_view([self.b, self.l])?,
        )
    }

    /// Gather right-padded `[B, L]` values back to per-token `[N]`.
    fn unpad(&self, padded: &Tensor) -> Result<Tensor> {
        Ok(padded.f_reshape([-1])?.f_index_select(0, &self.out)?)
    }

    /// The picked hidden states `[N, hidden]` of the trunk's output (`[B, S,
    /// hidden]`, or flat positions when shared).
    pub(crate) fn pick(&self, hidden: &Tensor) -> Result<Tensor> {
        let width = *hidden.size().last().unwrap_or(&1);
        Ok(hidden
            .f_reshape([-1, width])?
            .f_index_select(0, &self.sel)?)
    }
}

/// Float32 `log_softmax(head(h) / temperature)`, `[n, vocab]`. At
/// temperature 1 the division is skipped: `x / 1 = x` exactly, and the
/// `[n, vocab]` copy it made (and its gradient) is one of the few chunk-sized
/// buffers a chunk holds.
pub(crate) fn log_softmax(lm: &CausalLm, h: &Tensor, temperature: f64) -> Result<Tensor> {
    let logits = lm.head(h)?.f_to_kind(Kind::Float)?;
    let scaled = if temperature == 1.0 {
        logits
    } else {
        logits.f_div_scalar(temperature)?
    };
    Ok(scaled.f_log_softmax(-1, Kind::Float)?)
}

/// Each row's log-prob of its target and (when asked) its entropy
/// `-sum_v p_v log p_v`, from a log-softmax `[n, vocab]`.
pub(crate) fn token_scores(
    logp: &Tensor,
    targets: &Tensor,
    entropy: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let lp = logp
        .f_gather(1, &targets.f_unsqueeze(1)?, false)?
        .f_squeeze_dim(1)?;
    let ent = if entropy {
        Some(
            logp.f_exp()?
                .f_mul(logp)?
                .f_sum_dim_intlist(-1, false, Kind::Float)?
                .f_neg()?,
        )
    } else {
        None
    };
    Ok((lp, ent))
}

/// Per-token log-probs `[N]` (and entropies) of picked hidden states `h [N,
/// hidden]`, `chunk` rows at a time. Gradients follow grad mode; without
/// them at most one chunk's logits exist at once.
pub(crate) fn chunked_scores(
    lm: &CausalLm,
    h: &Tensor,
    targets: &Tensor,
    temperature: f64,
    chunk: usize,
    entropy: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let n = h.size()[0];
    let (mut lps, mut ents) = (Vec::new(), Vec::new());
    let mut start = 0;
    while start < n {
        let len = (chunk as i64).min(n - start);
        let logp = log_softmax(lm, &h.f_narrow(0, start, len)?, temperature)?;
        let (lp, ent) = token_scores(&logp, &targets.f_narrow(0, start, len)?, entropy)?;
        lps.push(lp);
        ents.extend(ent);
        start += len;
    }
    let cat = |v: &[Tensor]| -> Result<Tensor> {
        if v.is_empty() {
            Ok(Tensor::f_zeros([0], (Kind::Float, h.device()))?)
        } else {
            Ok(Tensor::f_cat(v, 0)?)
        }
    };
    Ok((cat(&lps)?, if entropy { Some(cat(&ents)?) } else { None }))
}

/// The gradient accumulated in leaf `t`, or `None` when nothing reached it.
fn grad_of(t: &Tensor) -> Result<Option<Tensor>> {
    let g = t.f_grad()?;
    Ok(if g.defined() { Some(g) } else { None })
}

/// The one-chunk path: scores from the full `logp`, the caller's loss plus
/// the vocabulary loss; `None` when the caller skips the batch.
fn one_pass_loss(
    layout: &Layout,
    logp: &Tensor,
    loss: &mut dyn FnMut(&ResponseScores) -> Result<Option<Tensor>>,
    vocab_loss: Option<&mut dyn VocabLoss>,
) -> Result<Option<Tensor>> {
    let (lp, ent) = token_scores(logp, &layout.targets, true)?;
    let scores = ResponseScores {
        logprobs: layout.pad(&lp)?,
        entropy: layout.pad(&ent.unwrap_or(lp.f_zeros_like()?))?,
        mask: layout.mask.shallow_clone(),
    };
    let Some(mut total) = loss(&scores)? else {
        return Ok(None);
    };
    if let Some(v) = vocab_loss {
        if let Some(extra) = v.chunk_loss(0..layout.n as usize, logp)? {
            total = total.f_add(&extra.f_to_kind(total.kind())?)?;
        }
    }
    Ok(Some(total))
}

/// Stage 2 of the chunked backward for positions `start..start + len`: the
/// chunk's log-probs and entropies weighted by the loss's gradients with
/// respect to them (`grads`: d loss / d logp, d loss / d entropy), plus the
/// vocabulary loss of the chunk. Its backward is the chunk's share of the
/// loss's gradient.
fn chunk_surrogate<'v>(
    layout: &Layout,
    logp: &Tensor,
    start: i64,
    len: i64,
    (g_lp, g_ent): (Option<&Tensor>, Option<&Tensor>),
    vocab_loss: Option<&mut (dyn VocabLoss + 'v)>,
) -> Result<Option<Tensor>> {
    let targets = layout.targets.f_narrow(0, start, len)?;
    let (lp, ent) = token_scores(logp, &targets, g_ent.is_some())?;
    let mut terms = Vec::new();
    if let Some(g) = g_lp {
        terms.push(lp.f_mul(&g.f_narrow(0, start, len)?.f_to_kind(Kind::Float)?)?);
    }
    if let (Some(e), Some(g)) = (&ent, g_ent) {
        terms.push(e.f_mul(&g.f_narrow(0, start, len)?.f_to_kind(Kind::Float)?)?);
    }
    let mut surrogate = match terms.len() {
        0 => None,
        _ => Some(Tensor::f_cat(&terms, 0)?.f_sum(Kind::Float)?),
    };
    if let Some(v) = vocab_loss {
        let range = start as usize..(start + len) as usize;
        if let Some(extra) = v.chunk_loss(range, logp)? {
            let extra = extra.f_to_kind(Kind::Float)?;
            surrogate = Some(match surrogate {
                Some(s) => s.f_add(&extra)?,
                None => extra,
            });
        }
    }
    Ok(surrogate)
}

/// [`crate::policy::Policy::backward_scores`] for the transformer (see the
/// module docs). `batch` must have passed the sequence checks.
pub(crate) fn backward_scores(
    lm: &CausalLm,
    batch: &[PromptResponse],
    temperature: f64,
    opts: &ScoreOptions,
    loss: &mut dyn FnMut(&ResponseScores) -> Result<Option<Tensor>>,
    mut vocab_loss: Option<&mut dyn VocabLoss>,
) -> Result<bool> {
    let layout = Layout::for_training(batch, opts.share_prompt, lm.device())?;
    let chunk = chunk_tokens(lm.config.vocab_size, opts.chunk_tokens);
    if layout.n == 0 {
        let z = Tensor::f_zeros([layout.b, layout.l], (Kind::Float, lm.device()))?;
        let scores = ResponseScores {
            logprobs: z.f_zeros_like()?,
            entropy: z.f_zeros_like()?,
            mask: z,
        };
        return Ok(loss(&scores)?.is_some());
    }
    let pass = lm.trunk_forward(&layout.input, opts.activation_checkpointing)?;
    let h = layout.pick(&pass.hidden)?;
    if layout.n as usize <= chunk {
        // One chunk: the plain one-pass graph.
        let logp = log_softmax(lm, &h, temperature)?;
        let Some(total) = one_pass_loss(&layout, &logp, loss, vocab_loss)? else {
            return Ok(false);
        };
        lm.trunk_backward(pass, &total)?;
        return Ok(true);
    }
    // Stage 1: values without gradients, as leaves of the loss.
    let leaf = h.f_detach()?.f_set_requires_grad(true)?;
    let (lp, ent) =
        tch::no_grad(|| chunked_scores(lm, &leaf, &layout.targets, temperature, chunk, true))?;
    let ent = ent.ok_or_else(|| Error::InvalidInput("entropy missing".into()))?;
    let lp_leaf = layout.pad(&lp)?.f_set_requires_grad(true)?;
    let ent_leaf = layout.pad(&ent)?.f_set_requires_grad(true)?;
    let scores = ResponseScores {
        logprobs: lp_leaf.shallow_clone(),
        entropy: ent_leaf.shallow_clone(),
        mask: layout.mask.shallow_clone(),
    };
    let Some(total) = loss(&scores)? else {
        return Ok(false);
    };
    if total.requires_grad() {
        total.f_backward()?;
    }
    let g_lp = grad_of(&lp_leaf)?.map(|g| layout.unpad(&g)).transpose()?;
    let g_ent = grad_of(&ent_leaf)?.map(|g| layout.unpad(&g)).transpose()?;
    drop(scores);
    // Stage 2: each chunk again, with gradients, weighted by dL/dvalue.
    let n = layout.n;
    let mut start = 0;
    while start < n {
        let len = (chunk as i64).min(n - start);
        let logp = log_softmax(lm, &leaf.f_narrow(0, start, len)?, temperature)?;
        let grads = (g_lp.as_ref(), g_ent.as_ref());
        let surrogate =
            chunk_surrogate(&layout, &logp, start, len, grads, vocab_loss.as_deref_mut())?;
        if let Some(s) = surrogate {
            if s.requires_grad() {
                s.f_backward()?;
            }
        }
        start += len;
    }
    let Some(g_h) = grad_of(&leaf)? else {
        return Ok(true); // nothing reached the hidden states
    };
    let seed = h.f_mul(&g_h)?.f_sum(Kind::Float)?;
    lm.trunk_backward(pass, &seed)?;
    Ok(true)
}
