//! A group's prompt computed once in the train step.
//!
//! The `G` responses of a group follow the same prompt. The plain train
//! forward runs `prompt + response` for every row: `B x (P + L)` positions.
//! Shared, each distinct prompt of a micro-batch runs once (with gradients)
//! and each response runs only its own tokens, attending to its prompt's
//! keys and values followed by its own:
//!
//! ```text
//! prompts    [G, P]      causal among themselves (right-padded)
//! responses  [B, R]      keys = [prompt K of row b's group ; own K], mask [B, 1, R, P + R]
//! ```
//!
//! `R = max(1, L - 1)`: a response's last token predicts nothing, and its
//! first token is predicted by the last prompt position. The prompt's keys
//! and values reach each response through `index_select` on the group index,
//! so the backward sums the `G` responses' contributions into the prompt's
//! activations: the gradient is the plain path's, up to summation order.
//! Only the positions that predict response tokens go through the output
//! head. Cost: `G x P + B x R` positions instead of `B x (P + L)`.

use crate::error::Result;
use crate::policy::PromptResponse;
use std::collections::{HashMap, HashSet};
use tch::{Device, Kind, Tensor};

/// A micro-batch laid out for the shared-prompt trunk (see the module docs).
#[derive(Debug)]
pub struct SharedPrompt {
    /// `[G, P]` the distinct prompts in first-seen order, right-padded with 0.
    pub(crate) prompt_ids: Tensor,
    /// `[G, P]` positions `0..P`.
    pub(crate) prompt_positions: Tensor,
    /// `[B, R]` each response without its last token, right-padded with 0.
    pub(crate) response_ids: Tensor,
    /// `[B, R]` positions `P_b + j` (`P_b` the row's own prompt length).
    pub(crate) response_positions: Tensor,
    /// `[B]` the prompt row of each response.
    pub(crate) group: Tensor,
    /// `[B, 1, R, P + R]` true where a response position may attend: its
    /// prompt's real positions, then its own positions up to itself.
    pub(crate) mask: Tensor,
}

impl SharedPrompt {
    /// Lay out `batch`; also returns, for every response token in row-major
    /// order, the index of the position predicting it in the trunk's flat
    /// output (`G * P` prompt positions, then `B * R` response positions).
    pub(crate) fn new(
        batch: &[PromptResponse],
        device: Device,
    ) -> Result<(SharedPrompt, Vec<i64>)> {
        let mut distinct: Vec<&[i64]> = Vec::new();
        let mut seen: HashMap<&[i64], usize> = HashMap::new();
        let group: Vec<i64> = batch
            .iter()
            .map(|pr| {
                *seen.entry(pr.prompt.as_slice()).or_insert_with(|| {
                    distinct.push(&pr.prompt);
                    distinct.len() - 1
                }) as i64
            })
            .collect();
        let (g, b) = (distinct.len(), batch.len());
        let p = distinct.iter().map(|d| d.len()).max().unwrap_or(0).max(1);
        let l = batch.iter().map(|s| s.response.len()).max().unwrap_or(0);
        let r = l.saturating_sub(1).max(1);
        let mut prompt_ids = vec![0i64; g * p];
        for (i, d) in distinct.iter().enumerate() {
            prompt_ids[i * p..i * p + d.len()].copy_from_slice(d);
        }
        let mut response_ids = vec![0i64; b * r];
        let mut response_positions = vec![0i64; b * r];
        let mut prompt_len = vec![0i64; b];
        let mut sel = Vec::new();
        for (row, pr) in batch.iter().enumerate() {
            let plen = pr.prompt.len();
            prompt_len[row] = plen as i64;
            let n = pr.response.len().saturating_sub(1);
            response_ids[row * r..row * r + n].copy_from_slice(&pr.response[..n]);
            for j in 0..r {
                response_positions[row * r + j] = (plen + j) as i64;
            }
            for j in 0..pr.response.len() {
                sel.push(if j == 0 {
                    (group[row] as usize * p + plen - 1) as i64
                } else {
                    (g * p + row * r + j - 1) as i64
                });
            }
        }
        let on = |v: &[i64], shape: &[i64]| -> Result<Tensor> {
            Ok(Tensor::f_from_slice(v)?
                .f_view(shape)?
                .f_to_device(device)?)
        };
        let (g, b, p, r) = (g as i64, b as i64, p as i64, r as i64);
        // Prompt part: key j < P_b; response part: key j <= query i.
        let prompt_keys = Tensor::f_arange(p, (Kind::Int64, device))?
            .f_view([1, p])?
            .f_lt_tensor(&on(&prompt_len, &[b, 1])?)?
            .f_view([b, 1, 1, p])?
            .f_expand([b, 1, r, p], false)?;
        let own = Tensor::f_ones([r, r], (Kind::Bool, device))?
            .f_tril(0)?
            .f_view([1, 1, r, r])?
            .f_expand([b, 1, r, r], false)?;
        let mask = Tensor::f_cat(&[&prompt_keys, &own], 3)?;
        let shared = SharedPrompt {
            prompt_ids: on(&prompt_ids, &[g, p])?,
            prompt_positions: Tensor::f_arange(p, (Kind::Int64, device))?
                .f_view([1, p])?
                .f_expand([g, p], true)?,
            response_ids: on(&response_ids, &[b, r])?,
            response_positions: on(&response_positions, &[b, r])?,
            group: on(&group, &[b])?,
            mask,
        };
        Ok((shared, sel))
    }

    /// Another handle to the same tensors.
    pub(crate) fn shallow_clone(&self) -> SharedPrompt {
        SharedPrompt {
            prompt_ids: self.prompt_ids.shallow_clone(),
            prompt_positions: self.prompt_positions.shallow_clone(),
            response_ids: self.response_ids.shallow_clone(),
            response_positions: self.response_positions.shallow_clone(),
            group: self.group.shallow_clone(),
            mask: self.mask.shallow_clone(),
        }
    }
}

/// Token positions of one micro-batch's trunk pass, with the quantities
/// that decide it; grown one sample at a time by the micro-batch planner.
#[derive(Debug, Default, Clone)]
pub struct TrunkCost<'a> {
    prompts: HashSet<&'a [i64]>,
    rows: usize,
    longest_prompt: usize,
    longest_response: usize,
    longest_row: usize,
}

impl<'a> TrunkCost<'a> {
    /// Add one sample.
    pub fn add(&mut self, s: &'a PromptResponse) {
        self.prompts.insert(&s.prompt);
        self.rows += 1;
        self.longest_prompt = self.longest_prompt.max(s.prompt.len());
        self.longest_response = self.longest_response.max(s.response.len());
        self.longest_row = self.longest_row.max(s.prompt.len() + s.response.len());
    }

    /// Rows so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Whether the shared layout applies: `share` is on and some prompt
    /// repeats (otherwise it would only add a mask).
    pub fn shares(&self, share: bool) -> bool {
        share && self.prompts.len() < self.rows
    }

    /// Positions the trunk runs: `G x P + B x max(1, L - 1)` shared,
    /// `B x max(P + L)` plain (padding included).
    pub fn positions(&self, share: bool) -> usize {
        if self.shares(share) {
            self.prompts.len() * self.longest_prompt
                + self.rows * self.longest_response.saturating_sub(1).max(1)
        } else {
            self.rows * self.longest_row.max(1)
        }
    }
}

/// [`TrunkCost::positions`] of a whole micro-batch.
pub fn trunk_positions(batch: &[PromptResponse], share: bool) -> usize {
    let mut c = TrunkCost::default();
    batch.iter().for_each(|s| c.add(s));
    c.positions(share)
}

/// Whether a micro-batch takes the shared layout ([`TrunkCost::shares`]).
pub fn shares_prompt(batch: &[PromptResponse], share: bool) -> bool {
    let mut c = TrunkCost::default();
    batch.iter().for_each(|s| c.add(s));
    c.shares(share)
}
