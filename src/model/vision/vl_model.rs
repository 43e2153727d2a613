//! `Qwen2_5_VLForConditionalGeneration` and `Qwen3VLForConditionalGeneration`:
//! the vision tower's features replace the `<|image_pad|>` embeddings, and the
//! Qwen2 / Qwen3 decoder runs with the multimodal rotary (M-RoPE) of
//! [`super::rope_index`]; Qwen3-VL also adds its deepstack features to the
//! image positions after its first decoder layers.
//!
//! Mirrors `Qwen2_5_VLModel.forward` / `Qwen3VLModel.forward` in transformers'
//! `modeling_qwen2_5_vl.py` / `modeling_qwen3_vl.py` (`get_image_features`,
//! `masked_scatter` into the embeddings, `get_rope_index`, the text rotary's
//! `mrope_section`, contiguous or interleaved, `_deepstack_process`).
//! Parameters carry the Hub's names: `visual.*` for the tower, `model.*` and
//! `lm_head.weight` for the decoder (the text models' [`CausalLm`] as is);
//! the transformers-5 names (`model.visual.*`, `model.language_model.*`)
//! load too. Generation continues the positions with the prompt's `delta`
//! (transformers' `rope_deltas`) through a caller-owned [`KvCache`].

use super::preprocess::ProcessedImage;
use super::rope_index::rope_index;
use super::tower::VisionTower;
use super::tower3::Qwen3VisionTower;
use super::vl_config::{VlConfig, VlFamily};
use super::ImageProcessor;
use crate::error::{Error, Result};
use crate::model::kv_cache::KvCache;
use crate::model::sampling::{sample_next, SamplingParams};
use crate::model::tokenizer::Tokenizer;
use crate::model::transformer::CausalLm;
use crate::model::weights;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// The images of one forward, in the order of their `<|image_pad|>` runs
/// (rows first, then left to right inside a row).
#[derive(Debug)]
pub struct VisionInput {
    /// `[sum(t*h*w), patch_dim]`: every image's patches, concatenated.
    pub pixel_values: Tensor,
    /// `(t, h, w)` patch grid of each image.
    pub grids: Vec<[usize; 3]>,
}

impl VisionInput {
    /// Stack processed images (from [`ImageProcessor`]) onto `device`.
    pub fn from_processed(images: &[ProcessedImage], device: Device) -> Result<VisionInput> {
        let mut values = Vec::new();
        let mut grids = Vec::with_capacity(images.len());
        let mut width = 0;
        for img in images {
            width = img.patch_dim;
            values.extend_from_slice(&img.pixel_values);
            grids.push(img.grid_thw);
        }
        let pixel_values = Tensor::from_slice(&values)
            .f_view([-1, width.max(1) as i64])?
            .f_to_device(device)?;
        Ok(VisionInput {
            pixel_values,
            grids,
        })
    }
}

/// Encoded images of one forward, in the order of their `<|image_pad|>` runs.
#[derive(Debug)]
pub struct ImageFeatures {
    /// `[tokens, hidden]`: one row per image token (merged patch).
    pub features: Tensor,
    /// Qwen3-VL's deepstack features, one `[tokens, hidden]` per level (empty
    /// for Qwen2.5-VL).
    pub deepstack: Vec<Tensor>,
    /// `(t, h, w)` patch grid of each image.
    pub grids: Vec<[usize; 3]>,
}

/// The vision tower of either family.
#[derive(Debug)]
pub enum Tower {
    /// Qwen2.5-VL's.
    Qwen2_5(VisionTower),
    /// Qwen3-VL's (with deepstack features).
    Qwen3(Qwen3VisionTower),
}

/// A Qwen2.5-VL or Qwen3-VL model: vision tower and decoder. `&self` everywhere.
#[derive(Debug)]
pub struct VlModel {
    /// The configuration it was built from.
    pub config: VlConfig,
    /// The vision tower (`visual.*`).
    pub visual: Tower,
    /// The language model (`model.*`, `lm_head`).
    pub lm: CausalLm,
    /// `[head_dim / 2]` i64: the (t, h, w) axis of each rotary frequency.
    axis_of: Tensor,
}

impl VlModel {
    /// Create every parameter under `root`.
    pub fn new(root: &nn::Path, cfg: &VlConfig) -> Result<VlModel> {
        let axis = mrope_axes(&cfg.mrope_section, cfg.mrope_interleaved);
        let visual = match cfg.vision.family {
            VlFamily::Qwen2_5 => Tower::Qwen2_5(VisionTower::new(root / "visual", &cfg.vision)?),
            VlFamily::Qwen3 => Tower::Qwen3(Qwen3VisionTower::new(root / "visual", &cfg.vision)?),
        };
        Ok(VlModel {
            config: cfg.clone(),
            visual,
            lm: CausalLm::new(root, &cfg.text)?,
            axis_of: Tensor::from_slice(&axis).to_device(root.device()),
        })
    }

    /// Image features `[tokens, hidden]` of `images`, in pad-token order.
    pub fn encode_images(&self, images: &VisionInput) -> Result<Tensor> {
        Ok(self.encode(images)?.0)
    }

    /// Image features and (Qwen3-VL) deepstack features, one per level.
    pub fn encode(&self, images: &VisionInput) -> Result<(Tensor, Vec<Tensor>)> {
        match &self.visual {
            Tower::Qwen2_5(t) => Ok((t.forward(&images.pixel_values, &images.grids)?, vec![])),
            Tower::Qwen3(t) => {
                let out = t.forward(&images.pixel_values, &images.grids)?;
                Ok((out.features, out.deepstack))
            }
        }
    }

    /// [`VlModel::encode`] with the grids kept beside the features, the form
    /// [`VlModel::hidden_with_features`] splices.
    pub fn encode_features(&self, images: &VisionInput) -> Result<ImageFeatures> {
        let (features, deepstack) = self.encode(images)?;
        Ok(ImageFeatures {
            features,
            deepstack,
            grids: images.grids.clone(),
        })
    }

    /// Final-norm hidden states `[B, T, hidden]` of `ids [B, T]` with images
    /// already encoded (a training batch encodes each distinct prompt's
    /// images once and repeats the features for its rows). No KV cache.
    ///
    /// `embed_ids` (same shape), when given, are the ids whose embeddings
    /// the decoder reads, while `ids` alone place the images and the M-RoPE
    /// positions: a response that sampled `<|image_pad|>` or `<|video_pad|>`
    /// holds plain text tokens there (as cached decoding embedded them), so
    /// its `ids` carry a text id at those positions and `embed_ids` the
    /// sampled one.
    pub fn hidden_with_features(
        &self,
        ids: &Tensor,
        embed_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        images: Option<&ImageFeatures>,
    ) -> Result<Tensor> {
        Ok(self
            .hidden_of(ids, embed_ids, attention_mask, images, None)?
            .0)
    }

    /// Logits `[B, T, V]` of a prompt batch `ids [B, T]` with its images.
    /// `attention_mask [B, T]` (1 = token) for padded rows; `None` = no padding.
    pub fn forward_all(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
        images: Option<&VisionInput>,
    ) -> Result<Tensor> {
        let (hidden, _) = self.prefill_hidden(ids, attention_mask, images, None)?;
        self.lm.head(&hidden)
    }

    /// Run a prompt batch through an empty `cache`; returns the last
    /// position's logits `[B, V]` and each row's position `delta` (the next
    /// token of row `b` sits at position `cache.len() + delta[b]` on all three axes).
    pub fn prefill(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
        images: Option<&VisionInput>,
        cache: &mut KvCache,
    ) -> Result<(Tensor, Vec<i64>)> {
        if !cache.is_empty() {
            return Err(Error::InvalidInput(
                "VlModel::prefill needs an empty KV cache".into(),
            ));
        }
        let t = ids.size()[1];
        let (hidden, deltas) = self.prefill_hidden(ids, attention_mask, images, Some(cache))?;
        Ok((self.lm.head(&hidden.f_select(1, t - 1)?)?, deltas))
    }

    /// One cached step of text tokens `ids [B, T]` at positions `positions
    /// [B, T]` (index + delta; equal on the three axes); logits of the last
    /// position, `[B, V]`. `attention_mask [B, cached + T]` as in [`CausalLm::forward`].
    /// Generated tokens are text: a sampled `<|image_pad|>` / `<|video_pad|>`
    /// is embedded as it is (as transformers' decoding steps do).
    pub fn decode(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let t = ids.size()[1];
        let x = self.lm.embed_ids(ids)?;
        let pos3 = positions.f_unsqueeze(0)?.f_expand([3, -1, -1], false)?;
        let (cos, sin) = self
            .lm
            .rope()
            .cos_sin_multimodal(&pos3, &self.axis_of, x.kind())?;
        let hidden =
            self.lm
                .hidden_from_embeds(x, (&cos, &sin), attention_mask, Some(cache), &[])?;
        self.lm.head(&hidden.f_select(1, t - 1)?)
    }

    /// Greedy decoding of one prompt (`ids`, its images) for up to `max_new`
    /// tokens, stopping after any of `eos`; returns the new ids.
    pub fn generate_greedy(
        &self,
        ids: &[i64],
        images: Option<&VisionInput>,
        max_new: usize,
        eos: &[i64],
    ) -> Result<Vec<i64>> {
        let greedy = SamplingParams {
            greedy: true,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            presence_penalty: 0.0,
        };
        let mut rng = StdRng::seed_from_u64(0);
        Ok(self
            .generate(ids, images, max_new, eos, &greedy, &mut rng)?
            .0)
    }

    /// Sample up to `max_new` tokens after one prompt (`ids`, its images)
    /// through a KV cache, stopping after any of `eos`; returns the new ids
    /// and the sampling log-prob of each.
    pub fn generate(
        &self,
        ids: &[i64],
        images: Option<&VisionInput>,
        max_new: usize,
        eos: &[i64],
        params: &SamplingParams,
        rng: &mut StdRng,
    ) -> Result<(Vec<i64>, Vec<f32>)> {
        let device = self.lm.device();
        let prompt = Tensor::from_slice(ids)
            .f_view([1, -1])?
            .f_to_device(device)?;
        let mut cache = self.lm.new_cache(ids.len() as i64 + max_new as i64);
        let (mut logits, deltas) = self.prefill(&prompt, None, images, &mut cache)?;
        let (mut out, mut logprobs) = (Vec::with_capacity(max_new), Vec::with_capacity(max_new));
        for _ in 0..max_new {
            let (next, lp) = sample_next(&logits, params, rng)?;
            let next = next.f_int64_value(&[0])?;
            out.push(next);
            logprobs.push(lp.f_double_value(&[0])? as f32);
            if eos.contains(&next) || out.len() == max_new {
                break;
            }
            let pos = cache.len() + deltas[0];
            let step = Tensor::from_slice(&[next])
                .f_view([1, 1])?
                .f_to_device(device)?;
            let pos = Tensor::from_slice(&[pos])
                .f_view([1, 1])?
                .f_to_device(device)?;
            logits = self.decode(&step, &pos, None, &mut cache)?;
        }
        Ok((out, logprobs))
    }

    /// Final-norm hidden states of a prompt batch, and each row's delta.
    fn prefill_hidden(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
        images: Option<&VisionInput>,
        cache: Option<&mut KvCache>,
    ) -> Result<(Tensor, Vec<i64>)> {
        let features = images.map(|i| self.encode_features(i)).transpose()?;
        self.hidden_of(ids, None, attention_mask, features.as_ref(), cache)
    }

    /// [`VlModel::prefill_hidden`] from encoded images, embedding
    /// `embed_ids` (default `ids`; see [`VlModel::hidden_with_features`]).
    fn hidden_of(
        &self,
        ids: &Tensor,
        embed_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        images: Option<&ImageFeatures>,
        cache: Option<&mut KvCache>,
    ) -> Result<(Tensor, Vec<i64>)> {
        self.refuse_video(ids)?;
        let size = ids.size();
        if size.len() != 2 || size[1] == 0 {
            return Err(Error::InvalidInput(format!(
                "token ids must be [batch, time] with time > 0, got {size:?}"
            )));
        }
        if embed_ids.is_some_and(|e| e.size() != size) {
            return Err(Error::InvalidInput(format!(
                "embed_ids must have the shape of ids {size:?}"
            )));
        }
        let mut x = self.lm.embed_ids(embed_ids.unwrap_or(ids))?;
        let mut deepstack = Vec::new();
        if let Some(images) = images {
            (x, deepstack) = self.splice_images(ids, x, images)?;
        }
        let grids = images.map(|i| i.grids.as_slice()).unwrap_or(&[]);
        let (positions, deltas) = self.positions(ids, attention_mask, grids)?;
        let (cos, sin) = self
            .lm
            .rope()
            .cos_sin_multimodal(&positions, &self.axis_of, x.kind())?;
        let hidden =
            self.lm
                .hidden_from_embeds(x, (&cos, &sin), attention_mask, cache, &deepstack)?;
        Ok((hidden, deltas))
    }

    /// `x` with the rows at `<|image_pad|>` tokens replaced by the images'
    /// features, and the deepstack levels as `[B, T, hidden]` additions
    /// (zero away from the image tokens).
    fn splice_images(
        &self,
        ids: &Tensor,
        x: Tensor,
        images: &ImageFeatures,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let deepstack = &images.deepstack;
        let features = images.features.f_to_kind(x.kind())?;
        let is_pad = ids.f_eq(self.config.image_token_id)?;
        let count = is_pad.f_sum(Kind::Int64)?.f_int64_value(&[])?;
        if count != features.size()[0] {
            return Err(Error::InvalidInput(format!(
                "the prompt has {count} image tokens (id {}) but the images give {} features",
                self.config.image_token_id,
                features.size()[0]
            )));
        }
        let mask = is_pad.f_unsqueeze(-1)?.f_expand_as(&x)?;
        let zeros = x.f_zeros_like()?;
        let deepstack = deepstack
            .iter()
            .map(|f| Ok(zeros.f_masked_scatter(&mask, &f.f_to_kind(x.kind())?)?))
            .collect::<Result<Vec<_>>>()?;
        Ok((x.f_masked_scatter(&mask, &features)?, deepstack))
    }

    /// M-RoPE positions `[3, B, T]` of a batch and each row's delta; the
    /// images' grids are dealt to rows in order, by their runs of pad tokens.
    fn positions(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
        grids: &[[usize; 3]],
    ) -> Result<(Tensor, Vec<i64>)> {
        let (b, t) = (ids.size()[0], ids.size()[1]);
        let pad = self.config.image_token_id;
        let merge = self.config.vision.spatial_merge_size as usize;
        let rows: Vec<Vec<i64>> = Vec::<Vec<i64>>::try_from(ids.f_to_device(Device::Cpu)?)?;
        let keep: Option<Vec<Vec<bool>>> = match attention_mask {
            Some(m) => {
                let m: Vec<Vec<i64>> =
                    Vec::try_from(m.f_to_kind(Kind::Int64)?.f_to_device(Device::Cpu)?)?;
                Some(
                    m.into_iter()
                        .map(|r| r.into_iter().map(|v| v != 0).collect())
                        .collect(),
                )
            }
            None => None,
        };
        let mut axes: Vec<Vec<i64>> = (0..3)
            .map(|_| Vec::with_capacity((b * t) as usize))
            .collect();
        let mut deltas = Vec::with_capacity(b as usize);
        let mut used = 0;
        for (r, row) in rows.iter().enumerate() {
            let keep_row = keep.as_ref().map(|k| k[r].as_slice());
            let runs = image_runs(row, keep_row, pad);
            let mine = grids.get(used..used + runs).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "row {r} has {runs} image(s) but only {} of {} grids are left",
                    grids.len().saturating_sub(used),
                    grids.len()
                ))
            })?;
            used += runs;
            let index = rope_index(row, keep_row, pad, mine, merge)?;
            for (axis, p) in axes.iter_mut().zip(index.positions) {
                axis.extend(p);
            }
            deltas.push(index.delta);
        }
        if used != grids.len() {
            return Err(Error::InvalidInput(format!(
                "{} image grids given but the prompts have {used} images",
                grids.len()
            )));
        }
        let flat: Vec<i64> = axes.concat();
        let positions = Tensor::from_slice(&flat)
            .f_view([3, b, t])?
            .f_to_device(ids.device())?;
        Ok((positions, deltas))
    }

    fn refuse_video(&self, ids: &Tensor) -> Result<()> {
        let video = ids
            .f_eq(self.config.video_token_id)?
            .f_any()?
            .f_int64_value(&[])?;
        if video != 0 {
            return Err(Error::InvalidInput(format!(
                "the prompt has video tokens (id {}): video input is not supported",
                self.config.video_token_id
            )));
        }
        Ok(())
    }
}

/// The (t, h, w) axis of each rotary frequency: `mrope_section` as three
/// contiguous blocks (Qwen2.5-VL), or interleaved (Qwen3-VL: frequency `j`
/// follows h when `j % 3 == 1` and `j < 3 * section[1]`, w when `j % 3 == 2`
/// and `j < 3 * section[2]`, else t).
fn mrope_axes(section: &[i64], interleaved: bool) -> Vec<i64> {
    let half: i64 = section.iter().sum();
    if !interleaved {
        return section
            .iter()
            .enumerate()
            .flat_map(|(axis, &n)| std::iter::repeat_n(axis as i64, n.max(0) as usize))
            .collect();
    }
    (0..half)
        .map(|j| match j % 3 {
            1 if j < 3 * section[1] => 1,
            2 if j < 3 * section[2] => 2,
            _ => 0,
        })
        .collect()
}

/// Number of runs of `pad` among the kept tokens of `row`.
fn image_runs(row: &[i64], keep: Option<&[bool]>, pad: i64) -> usize {
    let mut runs = 0;
    let mut inside = false;
    for (i, &id) in row.iter().enumerate() {
        if keep.is_some_and(|k| !k[i]) {
            continue;
        }
        let is_pad = id == pad;
        if is_pad && !inside {
            runs += 1;
        }
        inside = is_pad;
    }
    runs
}

/// A vision-language checkpoint loaded for inference or training.
#[derive(Debug)]
pub struct LoadedVlModel {
    /// Owns every parameter; names are the Hub's safetensors keys.
    pub vs: nn::VarStore,
    /// The network.
    pub model: VlModel,
    /// The tokenizer, when the folder has a `tokenizer.json`.
    pub tokenizer: Option<Tokenizer>,
    /// The image processor, when the folder has a `preprocessor_config.json`.
    pub processor: Option<ImageProcessor>,
}

impl LoadedVlModel {
    /// Load a Hugging Face checkpoint folder (`config.json` in either layout,
    /// `model.safetensors` or shards) onto `device`, cast to `kind`. Weights are
    /// copied tensor by tensor from memory-mapped files (the text loader's rules).
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<LoadedVlModel> {
        if !matches!(
            kind,
            Kind::Float | Kind::BFloat16 | Kind::Half | Kind::Double
        ) {
            return Err(Error::InvalidInput(format!(
                "model kind must be floating point, got {kind:?}"
            )));
        }
        let config = VlConfig::from_file(&dir.join("config.json"))?;
        let mut vs = nn::VarStore::new(device);
        // New variables take the store's kind: set it first, so that a bf16
        // model never exists as float32 (twice its size) before the weights
        // are read into it.
        vs.set_kind(kind);
        let model = VlModel::new(&vs.root(), &config)?;
        weights::load_weights_renamed(&vs, dir, &hub_name)?;
        let tokenizer =
            Tokenizer::from_dir(dir, &config.text.eos_token_id, config.text.pad_token_id)?;
        let pre = dir.join("preprocessor_config.json");
        let processor = if pre.exists() {
            Some(ImageProcessor::load(&pre)?)
        } else {
            None
        };
        Ok(LoadedVlModel {
            vs,
            model,
            tokenizer,
            processor,
        })
    }
}

/// transformers-5 tensor names -> the Hub's (`model.visual.x` -> `visual.x`,
/// `model.language_model.x` -> `model.x`); `None` keeps the name.
fn hub_name(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix("model.visual.") {
        return Some(format!("visual.{rest}"));
    }
    name.strip_prefix("model.language_model.")
        .map(|rest| format!("model.{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrope_axes_contiguous_and_interleaved() {
        assert_eq!(mrope_axes(&[1, 1, 2], false), vec![0, 1, 2, 2]);
        // Qwen3-VL's [24, 20, 20] pattern at small scale: [2, 1, 1] over 4
        // frequencies -> t h w t; [3, 2, 2] over 7 -> t h w t h w t.
        assert_eq!(mrope_axes(&[2, 1, 1], true), vec![0, 1, 2, 0]);
        assert_eq!(mrope_axes(&[3, 2, 2], true), vec![0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn image_runs_skip_padding_and_count_runs() {
        let row = [0, 1, 9, 9, 2, 9, 3];
        assert_eq!(image_runs(&row, None, 9), 2);
        let keep = [false, true, true, true, true, false, true];
        assert_eq!(image_runs(&row, Some(&keep), 9), 1);
    }

    #[test]
    fn transformers5_names_map_to_the_hub_names() {
        assert_eq!(
            hub_name("model.visual.blocks.0.attn.qkv.weight").as_deref(),
            Some("visual.blocks.0.attn.qkv.weight")
        );
        assert_eq!(
            hub_name("model.language_model.norm.weight").as_deref(),
            Some("model.norm.weight")
        );
        assert_eq!(hub_name("lm_head.weight"), None);
    }
}
