//! Where RLSD's token reweighting applies: the reference's
//! `rlsd_negative_only` and `rlsd_thought_only` options
//! (iie-ycx/RLSD `verl/trainer/opsd_config.py` 181-195,
//! `verl/workers/actor/dp_opsd_actor.py` 209-238,
//! `verl/trainer/opsd_trainer.py` 1879-1909).
//!
//! Outside the chosen tokens the reweighting factor is 1, so the credit there
//! is plain GRPO's `A_i`.

use crate::error::Result;
use tch::Tensor;

/// 1.0 on the response tokens strictly inside a `<thought> ... </thought>`
/// span, 0.0 elsewhere (the tag tokens themselves included), as the
/// reference's `_build_thought_span_mask` (opsd_trainer.py 1879-1909):
/// scanning left to right, outside a span the token sequence `open` starts
/// one; inside, `close` ends it; the tags are matched on token ids (the
/// tokenizer's encoding of the tag text alone). An unclosed span runs to the
/// end of the response.
pub fn thought_span_mask(response: &[i64], open: &[i64], close: &[i64]) -> Vec<f32> {
    let mut mask = vec![0f32; response.len()];
    if open.is_empty() || close.is_empty() {
        return mask;
    }
    let (mut t, mut inside) = (0, false);
    while t < response.len() {
        if !inside && response[t..].starts_with(open) {
            inside = true;
            t += open.len();
            continue;
        }
        if inside {
            if response[t..].starts_with(close) {
                inside = false;
                t += close.len();
                continue;
            }
            mask[t] = 1.0;
        }
        t += 1;
    }
    mask
}

/// RLSD's credit with the reweighting kept only where it applies:
/// `Ahat'_t = applied_t * Ahat_t + (1 - applied_t) * A_i * mask_t`, with
/// `applied_t = [A_i < 0 if negative_only] * [thought_t if thought mask given]`
/// (the reference forms `reweight = neg * reweight + (1 - neg) * mask`, then
/// the same with the thought mask, then `A_i * reweight`: dp_opsd_actor.py
/// 230-238).
///
/// `ahat`, `mask`, `thought` are `[B, L]`; `advantages` is `[B]`.
pub fn restrict_reweighting(
    ahat: &Tensor,
    advantages: &Tensor,
    mask: &Tensor,
    negative_only: bool,
    thought: Option<&Tensor>,
) -> Result<Tensor> {
    let mut applied = mask.f_ones_like()?;
    if negative_only {
        let neg = advantages
            .detach()
            .f_lt(0.0)?
            .f_to_kind(mask.kind())?
            .f_unsqueeze(-1)?;
        applied = applied.f_mul(&neg)?;
    }
    if let Some(th) = thought {
        applied = applied.f_mul(&th.f_to_kind(mask.kind())?)?;
    }
    let plain = advantages.detach().f_unsqueeze(-1)?.f_mul(mask)?;
    let rest = applied.f_neg()?.f_add_scalar(1.0)?;
    Ok(ahat.f_mul(&applied)?.f_add(&plain.f_mul(&rest)?)?)
}
