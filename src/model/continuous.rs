//! The continuous-batching loop behind [`super::generate`].
//!
//! Up to `rows` sequences decode together, one token per step. All rows share
//! the cache's column pointer: a row's tokens sit in columns `start..len` and
//! the columns before `start` are padding (masked out, and positions count
//! from `start`, so a row's values do not depend on where it sits). When rows
//! finish they leave the batch (their cache rows are dropped); before the next
//! step, pending prompts are prefilled together (a group's identical prompts
//! once) and their cache rows are appended, right-aligned at the current
//! column. Columns that became padding for every row are then trimmed, so the
//! cache never holds more than the longest running row: at most
//! `max_prompt + max_new_tokens` positions, the budget's unit.
//!
//! Each row draws its uniforms from its own `StdRng` (one per sampled token),
//! so sampling is independent of batch composition.

use super::distinct_rows;
use super::generation::{Generation, StopCheck};
use super::kv_cache::KvCache;
use super::sampling::{apply_presence_penalty, sample_with_uniforms, SamplingParams};
use super::transformer::{positions_from_mask, CausalLm};
use crate::error::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::ops::Range;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// What to generate: validated by [`super::generate_with`].
pub(crate) struct Job<'a> {
    /// Token ids of every prompt (non-empty, in the vocabulary).
    pub(crate) prompts: &'a [Vec<i64>],
    /// Seed of each prompt's random stream.
    pub(crate) seeds: &'a [u64],
    /// How tokens are picked.
    pub(crate) params: SamplingParams,
    /// Most tokens per response (at least 1).
    pub(crate) max_new_tokens: usize,
    /// Stop token ids.
    pub(crate) eos: &'a [i64],
    /// Left-padding id inside a prefill.
    pub(crate) pad: i64,
    /// Rows decoding at once (at least 1).
    pub(crate) rows: usize,
    /// Cache positions per row: `max_prompt + max_new_tokens`.
    pub(crate) capacity: i64,
    /// Decoded-text stop strings.
    pub(crate) stop: Option<&'a StopCheck<'a>>,
}

/// Where a generation's time went (wall seconds, summed over steps).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationProfile {
    /// Prefilling admitted prompts (forward over the prompt tokens).
    pub prefill_s: f64,
    /// Decoding forwards (one token per running row).
    pub decode_s: f64,
    /// Choosing tokens (softmax, truncation, draw) and reading them back.
    pub sample_s: f64,
    /// Cache bookkeeping: dropping finished rows, appending admitted ones, trimming.
    pub cache_s: f64,
    /// Stop-string checks (decoding response tails).
    pub stop_s: f64,
    /// Decoding steps run.
    pub steps: usize,
    /// Row-steps run (sum over steps of the rows decoding): the work done.
    pub row_steps: usize,
    /// Tokens generated (each row's first comes from its prefill's logits).
    pub tokens: usize,
    /// Prompts prefilled (a group's identical prompts once per admission).
    pub prefills: usize,
}

/// A running sequence.
struct Row {
    /// Its prompt's index.
    idx: usize,
    /// Its own random stream.
    rng: StdRng,
    /// Cache column of its first prompt token.
    start: i64,
}

/// Generate every prompt of `job` (under `no_grad`).
pub(crate) fn run(lm: &CausalLm, job: &Job<'_>) -> Result<(Vec<Generation>, GenerationProfile)> {
    let mut d = Decoding::new(lm, job);
    loop {
        d.admit_waiting()?;
        let Some(lg) = d.logits.take() else { break };
        let ids = d.sample(&lg)?;
        let keep = d.record(&ids)?;
        let Some(step_ids) = d.keep_rows(&keep, ids)? else {
            continue; // every row finished: admit the next prompts
        };
        d.decode(&step_ids)?;
    }
    Ok((d.out, d.prof))
}

/// The state of one continuous-batching run.
pub(super) struct Decoding<'a, 'j> {
    lm: &'a CausalLm,
    job: &'a Job<'j>,
    /// One continuation per prompt, filled as tokens are sampled.
    out: Vec<Generation>,
    /// The running rows, in cache-row order.
    rows: Vec<Row>,
    cache: KvCache,
    /// Next-token logits of `rows`, `[rows, V]`.
    logits: Option<Tensor>,
    /// Prompts admitted so far.
    pending: usize,
    prof: GenerationProfile,
}

impl<'a, 'j> Decoding<'a, 'j> {
    pub(super) fn new(lm: &'a CausalLm, job: &'a Job<'j>) -> Self {
        let out = (0..job.prompts.len())
            .map(|_| Generation {
                tokens: vec![],
                logprobs: vec![],
                stopped_on_eos: false,
                stop_string: None,
            })
            .collect();
        Decoding {
            lm,
            job,
            out,
            rows: Vec::with_capacity(job.rows),
            cache: lm.new_cache(job.capacity),
            logits: None,
            pending: 0,
            prof: GenerationProfile::default(),
        }
    }

    /// Prefill waiting prompts into free rows; their logits join the rows'.
    fn admit_waiting(&mut self) -> Result<()> {
        let (job, n) = (self.job, self.job.prompts.len());
        if self.rows.len() >= job.rows || self.pending >= n {
            return Ok(());
        }
        let k = (job.rows - self.rows.len()).min(n - self.pending);
        let range = self.pending..self.pending + k;
        let fresh = admit(
            self.lm,
            job,
            range,
            &mut self.cache,
            &mut self.rows,
            &mut self.prof,
        )?;
        self.pending += k;
        self.logits = Some(match self.logits.take() {
            Some(old) => Tensor::f_cat(&[&old, &fresh], 0)?,
            None => fresh,
        });
        let t = Instant::now();
        trim(&mut self.cache, &mut self.rows)?;
        self.prof.cache_s += t.elapsed().as_secs_f64();
        Ok(())
    }

    /// Prefill `prompts` (seeded `seeds`) into new rows now, beside the
    /// running ones, as continuations numbered after every earlier one
    /// (multi-turn rollouts admit each turn as it becomes ready; the caller
    /// keeps the rows within `job.rows`). Returns their numbers.
    pub(super) fn admit_now(
        &mut self,
        prompts: &[Vec<i64>],
        seeds: &[u64],
    ) -> Result<Range<usize>> {
        let first = self.out.len();
        if prompts.is_empty() {
            return Ok(first..first);
        }
        let job = Job {
            prompts,
            seeds,
            params: self.job.params,
            max_new_tokens: self.job.max_new_tokens,
            eos: self.job.eos,
            pad: self.job.pad,
            rows: self.job.rows,
            // Room for the longest row and its new tokens (the cache grows
            // past it if a later turn needs more).
            capacity: self
                .cache
                .len()
                .max(prompts.iter().map(|p| p.len() as i64).max().unwrap_or(0))
                + self.job.max_new_tokens as i64,
            stop: self.job.stop,
        };
        let before = self.rows.len();
        let fresh = admit(
            self.lm,
            &job,
            0..prompts.len(),
            &mut self.cache,
            &mut self.rows,
            &mut self.prof,
        )?;
        for r in &mut self.rows[before..] {
            r.idx += first;
        }
        self.out.extend(prompts.iter().map(|_| Generation {
            tokens: vec![],
            logprobs: vec![],
            stopped_on_eos: false,
            stop_string: None,
        }));
        self.logits = Some(match self.logits.take() {
            Some(old) => Tensor::f_cat(&[&old, &fresh], 0)?,
            None => fresh,
        });
        let t = Instant::now();
        trim(&mut self.cache, &mut self.rows)?;
        self.prof.cache_s += t.elapsed().as_secs_f64();
        Ok(first..first + prompts.len())
    }

    /// One step of every running row (sample, record, drop the finished
    /// ones, decode the rest); the numbers of the continuations that finished.
    pub(super) fn step(&mut self) -> Result<Vec<usize>> {
        let Some(lg) = self.logits.take() else {
            return Ok(vec![]);
        };
        let ids = self.sample(&lg)?;
        let keep = self.record(&ids)?;
        let mut kept = keep.iter().peekable();
        let finished = (0..self.rows.len())
            .filter(|r| kept.next_if_eq(&r).is_none())
            .map(|r| self.rows[r].idx)
            .collect();
        if let Some(step_ids) = self.keep_rows(&keep, ids)? {
            self.decode(&step_ids)?;
        }
        Ok(finished)
    }

    /// Rows decoding now.
    pub(super) fn running(&self) -> usize {
        self.rows.len()
    }

    /// Continuation `idx`, moved out (call once it finished).
    pub(super) fn take(&mut self, idx: usize) -> Generation {
        std::mem::replace(
            &mut self.out[idx],
            Generation {
                tokens: vec![],
                logprobs: vec![],
                stopped_on_eos: false,
                stop_string: None,
            },
        )
    }

    /// Where the time went so far.
    pub(super) fn profile(&self) -> &GenerationProfile {
        &self.prof
    }

    /// Sample each row's next token from `logits` (each row's own uniforms);
    /// the ids on the device, and with their log-probs appended to `out`.
    fn sample(&mut self, logits: &Tensor) -> Result<Sampled> {
        let t = Instant::now();
        let u: Vec<f32> = if self.job.params.greedy {
            vec![]
        } else {
            self.rows
                .iter_mut()
                .map(|r| r.rng.random::<f32>())
                .collect()
        };
        let penalised;
        let logits = if self.job.params.presence_penalty != 0.0 {
            let seen: Vec<&[i64]> = self
                .rows
                .iter()
                .map(|r| self.out[r.idx].tokens.as_slice())
                .collect();
            penalised = apply_presence_penalty(logits, &seen, self.job.params.presence_penalty)?;
            &penalised
        } else {
            logits
        };
        let (ids, lp) = sample_with_uniforms(logits, &self.job.params, &u)?;
        let ids_v: Vec<i64> = Vec::try_from(&ids.f_to_device(Device::Cpu)?)?;
        let lp_v: Vec<f32> = Vec::try_from(&lp.f_to_device(Device::Cpu)?)?;
        self.prof.sample_s += t.elapsed().as_secs_f64();
        self.prof.tokens += self.rows.len();
        Ok(Sampled { ids, ids_v, lp_v })
    }

    /// Append the sampled tokens; the rows still running (no EOS, no stop
    /// string, under the token limit).
    fn record(&mut self, s: &Sampled) -> Result<Vec<usize>> {
        let t = Instant::now();
        let mut keep = Vec::with_capacity(self.rows.len());
        for (r, row) in self.rows.iter().enumerate() {
            let g = &mut self.out[row.idx];
            g.tokens.push(s.ids_v[r]);
            g.logprobs.push(s.lp_v[r]);
            if self.job.eos.contains(&s.ids_v[r]) {
                g.stopped_on_eos = true;
            } else if let Some(i) = match self.job.stop {
                Some(stop) => stop.hit(&g.tokens)?,
                None => None,
            } {
                g.stop_string = Some(i);
            } else if g.tokens.len() < self.job.max_new_tokens {
                keep.push(r);
            }
        }
        self.prof.stop_s += t.elapsed().as_secs_f64();
        Ok(keep)
    }

    /// Drop the finished rows from the cache; the next step's input ids of
    /// the kept ones (`None` when none is left).
    fn keep_rows(&mut self, keep: &[usize], s: Sampled) -> Result<Option<Tensor>> {
        let mut step_ids = s.ids.f_view([-1, 1])?;
        if keep.len() == self.rows.len() {
            return Ok(Some(step_ids));
        }
        let t = Instant::now();
        if keep.is_empty() {
            self.rows.clear();
            self.cache.clear();
            return Ok(None);
        }
        let idx: Vec<i64> = keep.iter().map(|&r| r as i64).collect();
        let idx = Tensor::from_slice(&idx).f_to_device(self.lm.device())?;
        self.cache.select_rows(&idx)?;
        step_ids = step_ids.f_index_select(0, &idx)?;
        let mut kept = keep.iter().peekable();
        self.rows = std::mem::take(&mut self.rows)
            .into_iter()
            .enumerate()
            .filter(|(r, _)| kept.next_if_eq(&r).is_some())
            .map(|(_, row)| row)
            .collect();
        trim(&mut self.cache, &mut self.rows)?;
        self.prof.cache_s += t.elapsed().as_secs_f64();
        Ok(Some(step_ids))
    }

    /// One decoding step of the running rows: the new token sits at column
    /// `len`, position `len - start`.
    fn decode(&mut self, step_ids: &Tensor) -> Result<()> {
        let device = self.lm.device();
        let len = self.cache.len();
        let starts: Vec<i64> = self.rows.iter().map(|r| r.start).collect();
        let st = Tensor::from_slice(&starts)
            .f_to_device(device)?
            .f_view([-1, 1])?;
        let pos = st.f_neg()?.f_add_scalar(len)?;
        let mask = if starts.iter().any(|&s| s > 0) {
            let cols = Tensor::f_arange(len + 1, (Kind::Int64, device))?.f_view([1, -1])?;
            Some(cols.f_ge_tensor(&st)?)
        } else {
            None
        };
        let t = Instant::now();
        self.logits = Some(
            self.lm
                .forward(step_ids, &pos, mask.as_ref(), &mut self.cache)?,
        );
        self.prof.decode_s += t.elapsed().as_secs_f64();
        self.prof.steps += 1;
        self.prof.row_steps += self.rows.len();
        Ok(())
    }
}

/// One sampling step's tokens: on the device, and on the host with their
/// log-probs.
struct Sampled {
    ids: Tensor,
    ids_v: Vec<i64>,
    lp_v: Vec<f32>,
}

/// Prefill prompts `range` together (identical prompts once), append their
/// cache rows after the running ones and return their next-token logits.
fn admit(
    lm: &CausalLm,
    job: &Job<'_>,
    range: Range<usize>,
    cache: &mut KvCache,
    rows: &mut Vec<Row>,
    prof: &mut GenerationProfile,
) -> Result<Tensor> {
    let t = Instant::now();
    let device = lm.device();
    let prompts = &job.prompts[range.clone()];
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let padded = prompts.iter().any(|p| p.len() < width);
    let (uniq, row_of) = distinct_rows(prompts);
    let mut ids = Vec::with_capacity(uniq.len() * width);
    let mut mask = Vec::with_capacity(uniq.len() * width);
    for p in &uniq {
        let n_pad = width - p.len();
        ids.extend(std::iter::repeat_n(job.pad, n_pad).chain(p.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, n_pad).chain(std::iter::repeat_n(1, p.len())));
    }
    let (u_i, w_i) = (uniq.len() as i64, width as i64);
    let ids = Tensor::from_slice(&ids)
        .f_view([u_i, w_i])?
        .f_to_device(device)?;
    let mask = Tensor::from_slice(&mask)
        .f_view([u_i, w_i])?
        .f_to_device(device)?;
    let positions = positions_from_mask(&mask)?;
    let mut fresh = lm.new_cache(w_i);
    let mut logits = lm.forward(&ids, &positions, padded.then_some(&mask), &mut fresh)?;
    if uniq.len() < prompts.len() {
        let row_of: Vec<i64> = row_of.into_iter().map(|u| u as i64).collect();
        let sel = Tensor::from_slice(&row_of).f_to_device(device)?;
        fresh.select_rows(&sel)?;
        logits = logits.f_index_select(0, &sel)?;
    }
    prof.prefill_s += t.elapsed().as_secs_f64();
    prof.prefills += uniq.len();
    let t = Instant::now();
    let (shift_old, shift_new) = cache.append_rows(&fresh, job.capacity)?;
    for r in rows.iter_mut() {
        r.start += shift_old;
    }
    for i in range {
        rows.push(Row {
            idx: i,
            rng: StdRng::seed_from_u64(job.seeds[i]),
            start: shift_new + (width - job.prompts[i].len()) as i64,
        });
    }
    prof.cache_s += t.elapsed().as_secs_f64();
    Ok(logits)
}

/// Drop the cache columns that are padding for every row.
fn trim(cache: &mut KvCache, rows: &mut [Row]) -> Result<()> {
    let Some(front) = rows.iter().map(|r| r.start).min() else {
        return Ok(());
    };
    if front > 0 {
        cache.trim_front(front)?;
        for r in rows.iter_mut() {
            r.start -= front;
        }
    }
    Ok(())
}
