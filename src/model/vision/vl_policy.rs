//! The train step's [`Policy`] for a vision-language model: log-probs and
//! entropies of response tokens given prompts that carry images.
//!
//! [`PromptResponse`] holds token ids only, so the images travel beside the
//! batch: the caller binds each prompt's processed images to its token ids
//! and its `image_key` ([`VlPolicy::bind_images`]) before scoring, and every
//! row whose prompt has `<|image_pad|>` tokens finds its images there. The key
//! tells apart prompts whose ids are equal but whose pictures differ (two
//! rendered problems of the same size behind the same text). The images of each distinct
//! prompt of a batch go through the vision tower once per scoring call (one
//! tower call for the batch); rows sharing a prompt (a GRPO group) reuse its
//! features, so a trainable tower still receives every row's gradient. A
//! frozen tower's features are also kept across calls until
//! [`VlPolicy::clear_images`], so a train step's micro-batches encode each
//! prompt's images once in all.
//!
//! The tower is frozen by default (`model.train_vision = false`): its
//! parameters do not require grad, so the optimizer (which takes the
//! variables that require grad) leaves them out, and the tower runs under
//! `no_grad`. With `train_vision = true` it trains with the decoder.

use super::preprocess::ProcessedImage;
use super::vl_model::{ImageFeatures, LoadedVlModel, VisionInput};
use crate::error::{Error, Result};
use crate::model::chunked::{chunk_tokens, chunked_scores, Layout};
use crate::model::distinct_rows;
use crate::model::support::check_row;
use crate::model::transformer::TrunkInput;
use crate::policy::{Policy, PromptResponse, ResponseScores};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use tch::{nn, Kind, Tensor};

/// Name prefix of the vision tower's parameters (the Hub's `visual.*`).
pub const TOWER_PREFIX: &str = "visual.";

/// One prompt's encoded images: features `[tokens, hidden]` and the
/// deepstack levels (Qwen3-VL; empty for Qwen2.5-VL).
type Encoded = (Tensor, Vec<Tensor>);

/// The map key of a prompt: its image key, then its token ids.
fn keyed(image_key: u64, prompt: &[i64]) -> Vec<i64> {
    let mut key = Vec::with_capacity(prompt.len() + 1);
    key.push(image_key as i64);
    key.extend_from_slice(prompt);
    key
}

/// A Qwen2.5-VL / Qwen3-VL model as a trainable [`Policy`].
#[derive(Debug)]
pub struct VlPolicy {
    /// The model, its tokenizer and image processor.
    pub model: LoadedVlModel,
    /// Processed images of each prompt the batch may score, by [`keyed`]
    /// prompt (its image key, then its token ids).
    images: RefCell<HashMap<Vec<i64>, Arc<[ProcessedImage]>>>,
    /// With a frozen tower: each bound prompt's encoded features and
    /// deepstack levels, kept until [`VlPolicy::clear_images`].
    features: RefCell<HashMap<Vec<i64>, Encoded>>,
    /// Whether the vision tower trains (`model.train_vision`).
    train_vision: bool,
}

impl VlPolicy {
    /// Wrap `model`; the tower is frozen unless `train_vision`.
    pub fn new(model: LoadedVlModel, train_vision: bool) -> VlPolicy {
        let policy = VlPolicy {
            model,
            images: RefCell::new(HashMap::new()),
            features: RefCell::new(HashMap::new()),
            train_vision,
        };
        policy.apply_train_vision();
        policy
    }

    /// Whether the vision tower trains.
    pub fn train_vision(&self) -> bool {
        self.train_vision
    }

    /// Set `requires_grad` of every tower parameter to `train_vision`.
    /// Build the optimizer after this: it takes the parameters that require grad.
    fn apply_train_vision(&self) {
        for (name, t) in self.model.vs.variables() {
            if name.starts_with(TOWER_PREFIX) {
                let _ = t.set_requires_grad(self.train_vision);
            }
        }
    }

    /// Make `images` (in the order of their `<|image_pad|>` runs) the images
    /// of the prompt `prompt` under `image_key` (the rows'
    /// [`PromptResponse::image_key`]) for the scoring calls that follow.
    /// Binding the same key and prompt again with equal images is a no-op;
    /// with different images it is an error, since the rows could not be
    /// told apart.
    pub fn bind_images(
        &self,
        image_key: u64,
        prompt: &[i64],
        images: Arc<[ProcessedImage]>,
    ) -> Result<()> {
        let key = keyed(image_key, prompt);
        let mut bound = self.images.borrow_mut();
        match bound.get(&key) {
            Some(old) if Arc::ptr_eq(old, &images) || **old == *images => Ok(()),
            Some(_) => Err(Error::InvalidInput(format!(
                "two prompts with identical token ids and image key {image_key} carry \
                 different images; give each its own PromptResponse::image_key"
            ))),
            None => {
                bound.insert(key, images);
                Ok(())
            }
        }
    }

    /// Forget every bound image (call between batches).
    pub fn clear_images(&self) {
        self.images.borrow_mut().clear();
        self.features.borrow_mut().clear();
    }

    /// Number of prompts whose encoded features the frozen tower keeps.
    pub fn cached_features(&self) -> usize {
        self.features.borrow().len()
    }

    /// Number of prompts with images bound.
    pub fn bound_prompts(&self) -> usize {
        self.images.borrow().len()
    }

    /// The features of every row's images, in row order; `None` when no row
    /// has an image. The distinct prompts' images not yet encoded go through
    /// the tower in one call; with a frozen tower their features are kept
    /// until [`VlPolicy::clear_images`], so the micro-batches of a train step
    /// and its scoring passes encode each prompt's images once.
    fn row_features(&self, batch: &[PromptResponse]) -> Result<Option<ImageFeatures>> {
        let pad = self.model.model.config.image_token_id;
        let prompts: Vec<Vec<i64>> = batch
            .iter()
            .map(|p| keyed(p.image_key, &p.prompt))
            .collect();
        let (distinct, row_of) = distinct_rows(&prompts);
        // Images of each distinct prompt (empty when it has no pad token).
        let mut per_prompt: Vec<Arc<[ProcessedImage]>> = Vec::with_capacity(distinct.len());
        {
            let bound = self.images.borrow();
            for (u, prompt) in distinct.iter().enumerate() {
                if !prompt[1..].contains(&pad) {
                    per_prompt.push(Arc::from(Vec::new()));
                    continue;
                }
                let row = row_of.iter().position(|&r| r == u).unwrap_or(0);
                let images = bound.get(*prompt).ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "row {row}'s prompt has image tokens (id {pad}) but no images were \
                         bound to it under image key {} (VlPolicy::bind_images)",
                        batch[row].image_key
                    ))
                })?;
                per_prompt.push(images.clone());
            }
        }
        if per_prompt.iter().all(|v| v.is_empty()) {
            return Ok(None);
        }
        let encoded = self.encode_prompts(&distinct, &per_prompt)?;
        let mut features = Vec::with_capacity(row_of.len());
        let levels = encoded
            .iter()
            .flatten()
            .map(|f| f.1.len())
            .max()
            .unwrap_or(0);
        let mut deepstack: Vec<Vec<Tensor>> = (0..levels).map(|_| Vec::new()).collect();
        let mut grids = Vec::new();
        for &u in &row_of {
            if let Some((f, d)) = &encoded[u] {
                features.push(f.shallow_clone());
                for (level, t) in deepstack.iter_mut().zip(d) {
                    level.push(t.shallow_clone());
                }
                grids.extend(per_prompt[u].iter().map(|i| i.grid_thw));
            }
        }
        Ok(Some(ImageFeatures {
            features: Tensor::f_cat(&features, 0)?,
            deepstack: deepstack
                .iter()
                .map(|l| Ok(Tensor::f_cat(l, 0)?))
                .collect::<Result<Vec<_>>>()?,
            grids,
        }))
    }

    /// Features and deepstack levels of each distinct prompt's images
    /// (`None` for a prompt without images): from the frozen tower's cache,
    /// or one tower call for all the others.
    fn encode_prompts(
        &self,
        distinct: &[&[i64]],
        images: &[Arc<[ProcessedImage]>],
    ) -> Result<Vec<Option<Encoded>>> {
        let merge = self.model.model.config.vision.spatial_merge_size.max(1) as usize;
        let mut out: Vec<Option<Encoded>> = Vec::with_capacity(distinct.len());
        let mut missing = Vec::new();
        {
            let cache = self.features.borrow();
            for (u, prompt) in distinct.iter().enumerate() {
                let hit = cache.get(*prompt).filter(|_| !self.train_vision);
                out.push(hit.map(|(f, d)| {
                    (
                        f.shallow_clone(),
                        d.iter().map(Tensor::shallow_clone).collect(),
                    )
                }));
                if out[u].is_none() && !images[u].is_empty() {
                    missing.push(u);
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let all: Vec<ProcessedImage> = missing
            .iter()
            .flat_map(|&u| images[u].iter().cloned())
            .collect();
        let input = VisionInput::from_processed(&all, self.model.vs.device())?;
        let encoded = if self.train_vision {
            self.model.model.encode_features(&input)?
        } else {
            tch::no_grad(|| self.model.model.encode_features(&input))?
        };
        let total: usize = all.iter().map(|i| i.num_patches() / (merge * merge)).sum();
        if total as i64 != encoded.features.size()[0] {
            return Err(Error::ShapeMismatch {
                name: "vision tower output rows".into(),
                expected: vec![total as i64],
                got: encoded.features.size(),
            });
        }
        let mut at = 0i64;
        let mut cache = self.features.borrow_mut();
        for &u in &missing {
            let n: usize = images[u]
                .iter()
                .map(|i| i.num_patches() / (merge * merge))
                .sum();
            let cut = |t: &Tensor| -> Result<Tensor> { Ok(t.f_narrow(0, at, n as i64)?) };
            let f = cut(&encoded.features)?;
            let d = encoded
                .deepstack
                .iter()
                .map(cut)
                .collect::<Result<Vec<_>>>()?;
            at += n as i64;
            if !self.train_vision {
                let keep = (
                    f.shallow_clone(),
                    d.iter().map(Tensor::shallow_clone).collect(),
                );
                cache.insert(distinct[u].to_vec(), keep);
            }
            out[u] = Some((f, d));
        }
        Ok(out)
    }

    /// When a response holds `<|image_pad|>` or `<|video_pad|>` (sampled
    /// tokens are text), the row layout `ids [B, S]` with those response
    /// tokens replaced by 0, so that only the prompt's pads place images
    /// and positions; `None` when no response holds one.
    fn structure_ids(&self, batch: &[PromptResponse], ids: &Tensor) -> Result<Option<Tensor>> {
        let cfg = &self.model.model.config;
        let special = [cfg.image_token_id, cfg.video_token_id];
        if !batch
            .iter()
            .any(|pr| pr.response.iter().any(|t| special.contains(t)))
        {
            return Ok(None);
        }
        let s = ids.size()[1] as usize;
        let mut flat = vec![0i64; batch.len() * s];
        for (r, pr) in batch.iter().enumerate() {
            let row = &mut flat[r * s..(r + 1) * s];
            let p = pr.prompt.len();
            row[..p].copy_from_slice(&pr.prompt);
            for (j, &t) in pr.response.iter().enumerate() {
                row[p + j] = if special.contains(&t) { 0 } else { t };
            }
        }
        Ok(Some(
            Tensor::f_from_slice(&flat)?
                .f_view([batch.len() as i64, s as i64])?
                .f_to_device(ids.device())?,
        ))
    }

    /// Temperature, non-empty prompts and every id inside the vocabulary.
    fn check_batch(&self, batch: &[PromptResponse], temperature: f64) -> Result<()> {
        if temperature.is_nan() || temperature <= 0.0 {
            return Err(Error::InvalidInput(format!(
                "temperature must be > 0, got {temperature}"
            )));
        }
        let vocab = self.model.model.lm.config.vocab_size;
        for (i, pr) in batch.iter().enumerate() {
            check_row(i, pr, vocab)?;
        }
        Ok(())
    }
}

impl Policy for VlPolicy {
    fn var_store(&self) -> &nn::VarStore {
        &self.model.vs
    }

    fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.model.vs
    }

    /// One forward over `prompt + response` right-padded with 0 (causal
    /// attention never reads the padding after a row's tokens, and the
    /// M-RoPE positions of a row's tokens do not depend on it); only the
    /// positions predicting response tokens go through the head.
    fn response_scores(
        &self,
        batch: &[PromptResponse],
        temperature: f64,
    ) -> Result<ResponseScores> {
        self.check_batch(batch, temperature)?;
        let device = self.model.vs.device();
        let layout = Layout::new(batch, device)?;
        let lm = &self.model.model.lm;
        let (lp, ent) = if layout.n == 0 {
            let z = Tensor::f_zeros([0], (Kind::Float, device))?;
            (z.f_zeros_like()?, z)
        } else {
            let TrunkInput::Rows(ids) = &layout.input else {
                return Err(Error::InvalidInput("expected a row layout".into()));
            };
            let features = self.row_features(batch)?;
            let structure = self.structure_ids(batch, ids)?;
            let (ids, embed_ids) = match &structure {
                Some(s) => (s, Some(ids)),
                None => (ids, None),
            };
            let hidden =
                self.model
                    .model
                    .hidden_with_features(ids, embed_ids, None, features.as_ref())?;
            let h = layout.pick(&hidden)?;
            let chunk = chunk_tokens(lm.config.vocab_size, 0);
            let (lp, ent) = chunked_scores(lm, &h, &layout.targets, temperature, chunk, true)?;
            let ent = ent.ok_or_else(|| Error::InvalidInput("entropy missing".into()))?;
            (lp, ent)
        };
        Ok(ResponseScores {
            logprobs: layout.pad(&lp)?,
            entropy: layout.pad(&ent)?,
            mask: layout.mask,
        })
    }
}
