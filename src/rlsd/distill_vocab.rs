//! The OPSD `kl` / `jsd` distillation term as a [`VocabLoss`]: the train
//! step's chunked scoring hands it the student's log-softmax one chunk of
//! response tokens at a time, so the term never needs the micro-batch's
//! `[tokens x vocab]` log-probs at once (a real vocabulary: 151,936 columns).
//!
//! For each response token `t` of sample `i` (numbered row-major, as
//! [`VocabLoss`] says) it adds `coef * w_t * D_t`, where `D_t` is
//! [`support_divergence`] between the teacher's log-probs on its support and
//! the student's log-probs of the same token ids (gathered from the chunk's
//! log-softmax), and `w_t` is the aggregation weight of that token:
//! `1 / sum_i |y_i|` for token-mean, `1 / (B * |y_i|)` for
//! seq-mean-token-mean. The sum over all tokens is `coef * agg(D)`, exactly
//! what [`crate::train::distill_loss`] computes from an unchunked forward.

use super::config::{LossAgg, OpsdLoss};
use super::distill::{support_divergence, TokenSupport};
use super::policy_loss::LossNorm;
use crate::error::{Error, Result};
use crate::policy::VocabLoss;
use std::ops::Range;
use tch::{Device, Kind, Tensor};

/// `coef * agg(D(P_T, P_S))` over a micro-batch's response tokens, chunk by chunk.
#[derive(Debug)]
pub struct SupportVocabLoss {
    form: OpsdLoss,
    tail: bool,
    coef: f64,
    /// `[N, k]` support token ids, one row per response token.
    ids: Tensor,
    /// `[N, k]` teacher log-probs of those ids (f64).
    teacher: Tensor,
    /// `[N]` aggregation weight of each token (f64).
    weight: Tensor,
    /// `sum_t w_t * D_t` over the chunks seen so far (no `coef`).
    value: f64,
}

impl SupportVocabLoss {
    /// The term for samples whose response lengths are `lens` and whose
    /// teacher supports are `support` (one per sample, in the same order).
    /// Positions a support does not cover (shorter than its response) get
    /// token id 0 and teacher log-prob 0, as the unchunked path pads them.
    pub fn new(
        form: OpsdLoss,
        support: &[TokenSupport],
        lens: &[usize],
        agg: LossAgg,
        norm: LossNorm,
        coef: f64,
        device: Device,
    ) -> Result<Self> {
        Self::new_masked(form, support, lens, None, agg, norm, coef, device)
    }

    /// [`SupportVocabLoss::new`] over the trained tokens only: `token_mask`
    /// (one row per response, one value per token; 1 = the model's token,
    /// 0 = an environment token) gives environment tokens weight 0, and
    /// seq-mean-token-mean divides each response by its trained tokens.
    /// `None` trains every token.
    #[allow(clippy::too_many_arguments)]
    pub fn new_masked(
        form: OpsdLoss,
        support: &[TokenSupport],
        lens: &[usize],
        token_mask: Option<&[Vec<f32>]>,
        agg: LossAgg,
        norm: LossNorm,
        coef: f64,
        device: Device,
    ) -> Result<Self> {
        if !form.needs_distribution() {
            return Err(Error::InvalidInput(format!(
                "SupportVocabLoss: opsd_loss `{}` is not a distribution divergence",
                form.name()
            )));
        }
        if support.len() != lens.len() {
            return Err(Error::InvalidInput(format!(
                "SupportVocabLoss: {} supports for {} responses",
                support.len(),
                lens.len()
            )));
        }
        let k = support.first().map_or(1, |s| s.k.max(1));
        let n: usize = lens.iter().sum();
        let mut ids = vec![0i64; n * k];
        let mut lps = vec![0f64; n * k];
        let mut weight = Vec::with_capacity(n);
        let mut at = 0;
        if let Some(m) = token_mask {
            let fits = m.len() == lens.len() && m.iter().zip(lens).all(|(r, &l)| r.len() == l);
            if !fits {
                return Err(Error::InvalidInput(format!(
                    "SupportVocabLoss: the token mask does not cover {} responses of lengths {lens:?}",
                    lens.len()
                )));
            }
        }
        for (i, (s, &len)) in support.iter().zip(lens).enumerate() {
            if s.k != k {
                return Err(Error::InvalidInput(format!(
                    "teacher_support rows have k = {} and {k}",
                    s.k
                )));
            }
            let m = s.ids.len().min(len * k);
            ids[at * k..at * k + m].copy_from_slice(&s.ids[..m]);
            for (d, &x) in lps[at * k..at * k + m].iter_mut().zip(&s.logprobs) {
                *d = f64::from(x);
            }
            let row = token_mask.map(|m| m[i].as_slice());
            let trained = row.map_or(len as f64, |r| r.iter().map(|&x| f64::from(x)).sum());
            let w = match agg {
                LossAgg::TokenMean => 1.0 / norm.total_tokens.max(1.0),
                LossAgg::SeqMeanTokenMean => 1.0 / (trained.max(1.0) * norm.total_seqs.max(1.0)),
            };
            match row {
                None => weight.extend(std::iter::repeat_n(w, len)),
                Some(r) => weight.extend(r.iter().map(|&x| w * f64::from(x))),
            }
            at += len;
        }
        let shape = [n as i64, k as i64];
        Ok(SupportVocabLoss {
            form,
            tail: !support.first().is_some_and(|s| s.full_vocab),
            coef,
            ids: Tensor::f_from_slice(&ids)?
                .f_view(shape)?
                .f_to_device(device)?,
            teacher: Tensor::f_from_slice(&lps)?
                .f_view(shape)?
                .f_to_device(device)?,
            weight: Tensor::f_from_slice(&weight)?.f_to_device(device)?,
            value: 0.0,
        })
    }

    /// `agg(D)` over the tokens seen so far (without `coef`): after a full
    /// pass, the micro-batch's distillation term as the logs report it.
    pub fn value(&self) -> f64 {
        self.value
    }
}

impl VocabLoss for SupportVocabLoss {
    fn chunk_loss(&mut self, tokens: Range<usize>, logp: &Tensor) -> Result<Option<Tensor>> {
        let (start, n) = (tokens.start as i64, tokens.len() as i64);
        if n == 0 {
            return Ok(None);
        }
        if start + n > self.ids.size()[0] || logp.size().first() != Some(&n) {
            return Err(Error::InvalidInput(format!(
                "SupportVocabLoss: chunk {tokens:?} with log-probs {:?} does not fit {} tokens",
                logp.size(),
                self.ids.size()[0]
            )));
        }
        let ids = self.ids.f_narrow(0, start, n)?;
        let student = logp.f_gather(1, &ids, false)?.f_to_kind(Kind::Double)?;
        let d = support_divergence(
            self.form,
            &self.teacher.f_narrow(0, start, n)?,
            &student,
            self.tail,
        )?;
        let term = d
            .f_mul(&self.weight.f_narrow(0, start, n)?)?
            .f_sum(Kind::Double)?;
        self.value += term.f_double_value(&[])?;
        Ok(Some(term.f_mul_scalar(self.coef)?))
    }
}
