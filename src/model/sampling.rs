//! Choosing the next token from logits: greedy, or sampling at a temperature
//! after optional top-k and top-p (nucleus) truncation, driven by a seeded
//! `StdRng` so that a rollout can be reproduced.
//!
//! The returned log-prob is always `log_softmax(logits / temperature)` over the
//! full vocabulary at the chosen token (what training uses as `logp_old`);
//! top-k and top-p only restrict where the token is drawn from. A presence
//! penalty ([`apply_presence_penalty`], validation decoding only) changes the
//! logits themselves, so the log-prob is then of the penalised distribution.

use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::Rng;
use tch::{Kind, Tensor};

/// How to pick tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// Take the arg-max instead of sampling.
    pub greedy: bool,
    /// Logits are divided by this before the softmax (also for the returned log-probs).
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1.0 = all).
    pub top_p: f64,
    /// Subtracted from the logit of every token the row has already generated
    /// (0 = off); see [`apply_presence_penalty`].
    pub presence_penalty: f64,
}

/// The presence penalty as vLLM applies it (the engine behind the
/// reference's validation, `presence_penalty: 1.5` in iie-ycx/RLSD
/// `examples/visual_rl/rlsd_config.yaml` 99-104): before the temperature,
/// `logit_v -= penalty` for every token `v` that occurs at least once in the
/// row's generated tokens (the prompt does not count), however often.
///
/// `logits` is `[B, V]`; `generated[i]` are row `i`'s tokens so far. Ids
/// outside the vocabulary are an error.
pub fn apply_presence_penalty(
    logits: &Tensor,
    generated: &[&[i64]],
    penalty: f64,
) -> Result<Tensor> {
    let size = logits.size();
    let (b, v) = (size[0], size[1]);
    if generated.len() as i64 != b {
        return Err(Error::InvalidInput(format!(
            "presence penalty: {} rows of generated tokens for {b} rows of logits",
            generated.len()
        )));
    }
    if penalty == 0.0 {
        return Ok(logits.shallow_clone());
    }
    let mut flat: Vec<i64> = Vec::new();
    for (i, row) in generated.iter().enumerate() {
        for &t in *row {
            if !(0..v).contains(&t) {
                return Err(Error::InvalidInput(format!(
                    "presence penalty: token {t} of row {i} outside the vocabulary (size {v})"
                )));
            }
            flat.push(i as i64 * v + t);
        }
    }
    flat.sort_unstable();
    flat.dedup();
    let idx = Tensor::f_from_slice(&flat)?.f_to_device(logits.device())?;
    let seen = Tensor::f_zeros([b * v], (logits.kind(), logits.device()))?
        .f_index_fill(0, &idx, penalty)?
        .f_view([b, v])?;
    Ok(logits.f_sub(&seen)?)
}

/// Pick one token per row of `logits [B, V]`; returns `(ids [B] int64,
/// logprobs [B] float32)` on the logits' device. Draws `B` uniforms from
/// `rng` when sampling, none when greedy.
pub fn sample_next(
    logits: &Tensor,
    p: &SamplingParams,
    rng: &mut StdRng,
) -> Result<(Tensor, Tensor)> {
    let u: Vec<f32> = if p.greedy {
        vec![]
    } else {
        (0..logits.size()[0]).map(|_| rng.random::<f32>()).collect()
    };
    sample_with_uniforms(logits, p, &u)
}

/// [`sample_next`] with row `i` drawn by inverse-CDF from the uniform `u[i]`
/// in `[0, 1)` (ignored when greedy): how generation gives every prompt its
/// own random stream, so a row's draw does not depend on its batch.
pub fn sample_with_uniforms(
    logits: &Tensor,
    p: &SamplingParams,
    u: &[f32],
) -> Result<(Tensor, Tensor)> {
    let (b, v) = (logits.size()[0], *logits.size().last().unwrap_or(&1));
    let step = sampling_rows(v) as i64;
    if b <= step {
        return sample_rows(logits, p, u);
    }
    if !p.greedy && u.len() as i64 != b {
        return Err(Error::InvalidInput(format!(
            "sampling {b} rows needs {b} uniforms, got {}",
            u.len()
        )));
    }
    let (mut ids, mut lps) = (Vec::new(), Vec::new());
    let mut start = 0;
    while start < b {
        let len = step.min(b - start);
        let draws = if p.greedy {
            &u[..0]
        } else {
            &u[start as usize..(start + len) as usize]
        };
        let (i, lp) = sample_rows(&logits.f_narrow(0, start, len)?, p, draws)?;
        ids.push(i);
        lps.push(lp);
        start += len;
    }
    Ok((Tensor::f_cat(&ids, 0)?, Tensor::f_cat(&lps, 0)?))
}

/// Bytes of float32 `[rows, vocab]` work one slice of [`sample_with_uniforms`]
/// may hold per temporary (8 MiB: 13 rows at Qwen2's vocabulary of 151,936).
/// Each row's draw depends on its own logits and uniform only, so slicing
/// the rows changes no result; it bounds the five float32 temporaries
/// (scaled logits, log-softmax, probabilities, their cumulative sum, the
/// comparison) to a slice instead of the whole batch: 64 rows at that
/// vocabulary held 0.18 GiB of them at once (docs/benchmarks/memory.md).
pub const SAMPLING_CHUNK_BYTES: usize = 8 << 20;

/// Rows per slice of [`sample_with_uniforms`] at vocabulary `vocab` (at least 1).
pub fn sampling_rows(vocab: i64) -> usize {
    (SAMPLING_CHUNK_BYTES / (4 * vocab.max(1) as usize)).max(1)
}

/// [`sample_with_uniforms`] on all rows of `logits` at once.
fn sample_rows(logits: &Tensor, p: &SamplingParams, u: &[f32]) -> Result<(Tensor, Tensor)> {
    let logits = logits.f_to_kind(Kind::Float)?;
    // `x / 1 = x` exactly: no copy at temperature 1.
    let scaled = if p.temperature == 1.0 {
        logits
    } else {
        logits.f_div_scalar(p.temperature)?
    };
    let logp = scaled.f_log_softmax(-1, Kind::Float)?;
    let ids = if p.greedy {
        scaled.f_argmax(-1, true)?
    } else {
        let filtered = truncate(&scaled, p.top_k, p.top_p)?;
        let probs = filtered.f_softmax(-1, Kind::Float)?;
        let cdf = probs.f_cumsum(-1, Kind::Float)?;
        let b = cdf.size()[0];
        let v = cdf.size()[1];
        if u.len() as i64 != b {
            return Err(Error::InvalidInput(format!(
                "sampling {b} rows needs {b} uniforms, got {}",
                u.len()
            )));
        }
        let u = Tensor::from_slice(u)
            .f_to_device(cdf.device())?
            .f_view([b, 1])?;
        let target = u.f_mul(&cdf.f_narrow(1, v - 1, 1)?)?;
        // Index of the first entry whose cumulative probability exceeds u.
        cdf.f_le_tensor(&target)?
            .f_sum_dim_intlist(-1, true, Kind::Int64)?
            .f_clamp_max(v - 1)?
    };
    let lp = logp.f_gather(1, &ids, false)?.f_squeeze_dim(1)?;
    Ok((ids.f_squeeze_dim(1)?, lp))
}

/// Set logits outside the top-k / top-p sets to `-inf`.
fn truncate(scaled: &Tensor, top_k: usize, top_p: f64) -> Result<Tensor> {
    let v = scaled.size()[1];
    let mut out = scaled.shallow_clone();
    if top_k > 0 && (top_k as i64) < v {
        let (vals, _) = out.f_topk(top_k as i64, -1, true, true)?;
        let kth = vals.f_narrow(1, top_k as i64 - 1, 1)?;
        out = out.f_masked_fill(&out.f_lt_tensor(&kth)?, f64::NEG_INFINITY)?;
    }
    if top_p < 1.0 {
        let (sorted, idx) = out.f_sort(-1, true)?;
        let probs = sorted.f_softmax(-1, Kind::Float)?;
        let before = probs.f_cumsum(-1, Kind::Float)?.f_sub(&probs)?;
        // Drop a token when the more likely ones already reach top_p (the first always stays).
        let drop = before.f_ge(top_p.max(0.0))?;
        let drop = drop.f_index_fill(
            1,
            &Tensor::from_slice(&[0i64]).f_to_device(drop.device())?,
            0,
        )?;
        let kept = sorted.f_masked_fill(&drop, f64::NEG_INFINITY)?;
        out = out.f_scatter(1, &idx, &kept)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn params(greedy: bool, top_k: usize, top_p: f64) -> SamplingParams {
        SamplingParams {
            greedy,
            temperature: 1.0,
            top_k,
            top_p,
            presence_penalty: 0.0,
        }
    }

    /// vLLM's rule (`vllm/model_executor/layers/utils.py` `apply_penalties`:
    /// `logits -= presence_penalties.unsqueeze(1) * output_mask`), by hand:
    /// row 0 generated [2, 2, 0] -> tokens 0 and 2 lose 1.5 once each;
    /// row 1 generated nothing -> unchanged.
    #[test]
    fn presence_penalty_subtracts_once_per_generated_token() {
        let logits = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 0.5, 0.0, -1.0, 4.0, 2.5]).view([2, 4]);
        let out = apply_presence_penalty(&logits, &[&[2, 2, 0], &[]], 1.5).unwrap();
        let got: Vec<f32> = Vec::try_from(out.view([-1])).unwrap();
        assert_eq!(got, vec![-0.5, 2.0, 1.5, 0.5, 0.0, -1.0, 4.0, 2.5]);
        // Then temperature 0.7 and the full-vocabulary log-prob of the draw:
        // greedy on row 0 takes token 1 (2.0 is now the largest), with
        // log p = 2/0.7 - ln(e^(-0.5/0.7) + e^(2/0.7) + e^(1.5/0.7) + e^(0.5/0.7))
        //       = 2.857143 - ln(0.489542 + 17.411708 + 8.523756 + 2.042727) = -0.491628.
        let p = SamplingParams {
            greedy: true,
            temperature: 0.7,
            top_k: 20,
            top_p: 0.8,
            presence_penalty: 1.5,
        };
        let (ids, lp) = sample_with_uniforms(&out.narrow(0, 0, 1), &p, &[]).unwrap();
        assert_eq!(ids.int64_value(&[0]), 1);
        assert!((lp.double_value(&[0]) + 0.491628).abs() < 1e-5, "{lp}");
        // Off, and bad input.
        assert!(apply_presence_penalty(&logits, &[&[2], &[]], 0.0)
            .unwrap()
            .equal(&logits));
        assert!(apply_presence_penalty(&logits, &[&[4], &[]], 1.5).is_err());
        assert!(apply_presence_penalty(&logits, &[&[1]], 1.5).is_err());
    }

    #[test]
    fn slicing_the_rows_changes_no_draw() {
        // 600,000 float32 logits a row: 3 rows per 8 MiB slice, so 7 rows
        // are sampled as slices of 3, 3 and 1.
        let v = 600_000i64;
        assert_eq!(sampling_rows(v), 3);
        tch::manual_seed(7);
        let logits = Tensor::randn([7, v], (Kind::Float, tch::Device::Cpu)) * 3.0;
        let u = [0.01f32, 0.5, 0.99, 0.25, 0.75, 0.3, 0.999];
        for (greedy, temperature) in [(false, 1.0), (false, 0.7), (true, 1.0)] {
            let p = SamplingParams {
                temperature,
                ..params(greedy, 0, 1.0)
            };
            let draws = if greedy { &u[..0] } else { &u[..] };
            let (ids, lp) = sample_with_uniforms(&logits, &p, draws).unwrap();
            let (ids_all, lp_all) = sample_rows(&logits, &p, draws).unwrap();
            assert_eq!(ids.size(), [7]);
            assert!(ids.equal(&ids_all), "{ids} vs {ids_all}");
            assert!(lp.equal(&lp_all), "{lp} vs {lp_all}");
        }
        // The uniforms' count is still checked.
        assert!(sample_with_uniforms(&logits, &params(false, 0, 1.0), &u[..6]).is_err());
    }

    #[test]
    fn greedy_takes_argmax_and_full_vocab_logprob() {
        let logits = Tensor::from_slice(&[0.0f32, 2.0, 1.0]).view([1, 3]);
        let mut rng = StdRng::seed_from_u64(0);
        let (ids, lp) = sample_next(&logits, &params(true, 0, 1.0), &mut rng).unwrap();
        assert_eq!(ids.int64_value(&[0]), 1);
        // log(e^2 / (1 + e^2 + e)) = 2 - ln(1 + e + e^2) = -0.407606
        assert!((lp.double_value(&[0]) + 0.407606).abs() < 1e-5);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_draw() {
        // probs ~ [0.05, 0.6, 0.3, 0.05]: top_k = 2 and top_p = 0.7 both keep {1, 2}.
        let p = [0.05f32, 0.6, 0.3, 0.05];
        let logits = Tensor::from_slice(&p.map(f32::ln))
            .view([1, 4])
            .repeat([256, 1]);
        for (k, tp) in [(2, 1.0), (0, 0.7)] {
            let mut rng = StdRng::seed_from_u64(1);
            let (ids, lp) = sample_next(&logits, &params(false, k, tp), &mut rng).unwrap();
            let ids: Vec<i64> = Vec::try_from(ids).unwrap();
            assert!(ids.iter().all(|&i| i == 1 || i == 2), "{ids:?}");
            let ones = ids.iter().filter(|&&i| i == 1).count();
            assert!(
                (150..=210).contains(&ones),
                "token 1 drawn {ones}/256 times (expect ~171)"
            );
            // Log-probs are over the full vocabulary.
            let lp: Vec<f32> = Vec::try_from(lp).unwrap();
            for (i, l) in ids.iter().zip(lp) {
                assert!((l - p[*i as usize].ln()).abs() < 1e-5);
            }
        }
        // Same seed, same draws.
        let mut r1 = StdRng::seed_from_u64(7);
        let mut r2 = StdRng::seed_from_u64(7);
        let a = sample_next(&logits, &params(false, 0, 1.0), &mut r1)
            .unwrap()
            .0;
        let b = sample_next(&logits, &params(false, 0, 1.0), &mut r2)
            .unwrap()
            .0;
        assert!(a.equal(&b));
    }
}
