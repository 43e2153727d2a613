//! A GRPO group's responses to one prompt with images: the prompt (and its
//! images, through the vision tower) runs once, its KV cache is copied to
//! the group's `G` rows, and the rows decode together, each drawing from its
//! own seeded stream (so a response does not depend on its group's size).
//!
//! One group at a time: prompts of different groups are not batched
//! together (no continuous batching across groups with images yet).

use super::vl_model::{VisionInput, VlModel};
use crate::error::{Error, Result};
use crate::model::sampling::{sample_with_uniforms, SamplingParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

/// One sampled response.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupResponse {
    /// The new token ids, the stop token included when one ended it.
    pub tokens: Vec<i64>,
    /// The sampling log-prob of each new token.
    pub logprobs: Vec<f32>,
    /// Whether an end-of-sequence id ended it.
    pub stopped_on_eos: bool,
}

impl VlModel {
    /// Sample one response per seed of `seeds` after the prompt `ids` with
    /// `images`, each up to `max_new` tokens, stopping a row after any id of
    /// `eos`. No gradients.
    pub fn generate_group(
        &self,
        ids: &[i64],
        images: Option<&VisionInput>,
        max_new: usize,
        eos: &[i64],
        params: &SamplingParams,
        seeds: &[u64],
    ) -> Result<Vec<GroupResponse>> {
        if ids.is_empty() {
            return Err(Error::InvalidInput("the prompt is empty".into()));
        }
        let g = seeds.len();
        let mut out: Vec<GroupResponse> = (0..g)
            .map(|_| GroupResponse {
                tokens: Vec::new(),
                logprobs: Vec::new(),
                stopped_on_eos: false,
            })
            .collect();
        if g == 0 || max_new == 0 {
            return Ok(out);
        }
        tch::no_grad(|| {
            let device = self.lm.device();
            let prompt = Tensor::f_from_slice(ids)?
                .f_view([1, -1])?
                .f_to_device(device)?;
            let mut cache = self.lm.new_cache(ids.len() as i64 + max_new as i64);
            let (logits, deltas) = self.prefill(&prompt, None, images, &mut cache)?;
            cache.select_rows(&Tensor::f_zeros([g as i64], (Kind::Int64, device))?)?;
            let mut logits = logits.f_expand([g as i64, -1], false)?;
            let mut rngs: Vec<StdRng> = seeds.iter().map(|&s| StdRng::seed_from_u64(s)).collect();
            let filler = eos.first().copied().unwrap_or(0);
            let mut done = vec![false; g];
            for _ in 0..max_new {
                let u: Vec<f32> = rngs.iter_mut().map(|r| r.random::<f32>()).collect();
                let (next, lp) = sample_with_uniforms(&logits, params, &u)?;
                let next: Vec<i64> = Vec::try_from(next.f_to_device(Device::Cpu)?)?;
                let lp: Vec<f32> =
                    Vec::try_from(lp.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?)?;
                let mut feed = Vec::with_capacity(g);
                for r in 0..g {
                    if done[r] {
                        feed.push(filler);
                        continue;
                    }
                    out[r].tokens.push(next[r]);
                    out[r].logprobs.push(lp[r]);
                    if eos.contains(&next[r]) {
                        out[r].stopped_on_eos = true;
                        done[r] = true;
                    } else if out[r].tokens.len() == max_new {
                        done[r] = true;
                    }
                    feed.push(next[r]);
                }
                if done.iter().all(|&d| d) {
                    break;
                }
                // A finished row keeps decoding a filler token nobody reads.
                let step = Tensor::f_from_slice(&feed)?
                    .f_view([g as i64, 1])?
                    .f_to_device(device)?;
                let pos = Tensor::f_from_slice(&[cache.len() + deltas[0]])?
                    .f_view([1, 1])?
                    .f_expand([g as i64, 1], true)?
                    .f_to_device(device)?;
                logits = self.decode(&step, &pos, None, &mut cache)?;
            }
            Ok(out)
        })
    }
}
