//! Decoder-only transformers that load Hugging Face checkpoints directly.
//!
//! A checkpoint folder holds `config.json` ([`Config`], both transformers-4 and
//! -5 forms), `model.safetensors` or a sharded index ([`weights`]), and
//! `tokenizer.json` with its chat template ([`Tokenizer`]). [`LoadedModel`]
//! bundles the var store, the network ([`CausalLm`]), the config and the
//! tokenizer; it saves back in the same format so transformers can load a
//! model trained here.
//!
//! What the rest of the crate uses:
//! - [`CausalLm::forward_all`]: logits `[B, T, V]` for training and teacher scoring;
//! - [`token_logprobs`]: log-prob of every response token (no grad);
//! - [`generate`] / [`generate_with`]: continuously batched, KV-cached
//!   sampling under a KV-cache budget, one seeded stream per prompt, EOS ids
//!   and stop strings, returning the sampling log-prob of each token;
//! - `impl Policy for LoadedModel`: response log-probs and entropies with grad,
//!   and the chunked, optionally checkpointed backward of [`chunked`];
//! - [`WeightSnapshot`]: versioned deep copies of the weights.

pub mod attention;
pub mod chat_template;
pub mod chunked;
pub mod config;
mod continuous;
pub mod generate;
pub mod generation;
pub mod kv_cache;
pub mod layers;
pub mod logprobs;
pub mod lora;
pub mod lora_config;
pub mod lora_dropout;
pub mod random;
pub mod sampling;
pub mod shared;
pub mod shared_base;
pub mod snapshot;
mod snapshot_share;
pub mod support;
pub mod tokenizer;
pub mod transformer;
pub mod turns;
pub mod vision;
pub mod weights;

pub use chat_template::{ChatMessage, ChatTemplate};
pub use config::{Arch, Config, Llama3RopeScaling};
pub use generate::{
    cut_at_stop, generate, generate_profiled, generate_with, kv_bytes_per_position,
    max_concurrent_rows, prompt_seed, prompt_seeds, Detokenize, GenerateOptions, Generation,
    GenerationProfile,
};
pub use kv_cache::KvCache;
pub use logprobs::{
    score_responses, shared_prompt_logprobs, token_logprobs, token_logprobs_by_prompt,
    token_logprobs_by_prompt_within,
};
pub use lora_config::LoraConfig;
pub use shared::{shares_prompt, trunk_positions};
pub use shared_base::SharedBase;
pub use snapshot::{LoadCount, WeightSnapshot};
pub use support::{score_responses_on_support, teacher_support};
pub use tokenizer::Tokenizer;
pub use transformer::CausalLm;
pub use turns::{generate_turns, TurnRequest, TurnSource};
pub use weights::parse_kind;

use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// A model with its parameters, configuration and (optional) tokenizer.
#[derive(Debug)]
pub struct LoadedModel {
    /// Owns every parameter; names are the safetensors keys.
    pub vs: nn::VarStore,
    /// The network, holding handles into `vs`.
    pub lm: CausalLm,
    /// The configuration it was built from.
    pub config: Config,
    /// The tokenizer, when the checkpoint has a `tokenizer.json`.
    pub tokenizer: Option<Tokenizer>,
    /// The attached LoRA adapter's settings ([`lora`]), if any.
    pub lora: Option<LoraConfig>,
    /// True for a replica computing with another model's frozen base
    /// ([`shared_base`]): its base tensors are never written (no snapshot
    /// load, no merge).
    pub shares_base: bool,
    /// The train step's key for the adapters' dropout masks (unset: no
    /// dropout; [`lora_dropout`]).
    pub dropout_key: lora_dropout::DropoutKey,
}

impl LoadedModel {
    /// A float32 model with seeded random weights (normal, std 0.02, for
    /// matrices; ones for norms; zeros for biases), independent of torch's
    /// global RNG and of the device.
    pub fn random(config: Config, device: Device, seed: u64) -> Result<LoadedModel> {
        let model = LoadedModel::empty(config, device)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut vars: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        tch::no_grad(|| -> Result<()> {
            for (name, var) in vars {
                if name.ends_with("norm.weight") || name.ends_with(".bias") {
                    continue; // ones / zeros from construction
                }
                let n = var.numel();
                let values: Vec<f32> = (0..n).map(|_| 0.02 * standard_normal(&mut rng)).collect();
                let t = Tensor::from_slice(&values).f_view(var.size().as_slice())?;
                var.shallow_clone().f_copy_(&t)?;
            }
            Ok(())
        })?;
        Ok(model)
    }

    /// A float32 model whose matrices are zero (norm scales one), with no
    /// random init: the cheap start for a replica that will load a snapshot.
    pub fn empty(config: Config, device: Device) -> Result<LoadedModel> {
        let vs = nn::VarStore::new(device);
        let lm = CausalLm::new(&vs.root(), &config)?;
        Ok(LoadedModel {
            vs,
            lm,
            config,
            tokenizer: None,
            lora: None,
            shares_base: false,
            dropout_key: Default::default(),
        })
    }

    /// Load a Hugging Face checkpoint folder onto `device`, cast to `kind`
    /// (`Kind::Float`, `Kind::BFloat16` or `Kind::Half`).
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<LoadedModel> {
        if !matches!(
            kind,
            Kind::Float | Kind::BFloat16 | Kind::Half | Kind::Double
        ) {
            return Err(Error::InvalidInput(format!(
                "model kind must be floating point, got {kind:?}"
            )));
        }
        let config = Config::from_file(&dir.join("config.json"))?;
        let mut vs = nn::VarStore::new(device);
        // New variables take the store's kind: set it first, so that a bf16
        // model never exists as float32 (twice its size) before the weights
        // are read into it.
        vs.set_kind(kind);
        let lm = CausalLm::new(&vs.root(), &config)?;
        weights::load_weights(&vs, dir)?;
        let tokenizer = Tokenizer::from_dir(dir, &config.eos_token_id, config.pad_token_id)?;
        let mut model = LoadedModel {
            vs,
            lm,
            config,
            tokenizer,
            lora: None,
            shares_base: false,
            dropout_key: Default::default(),
        };
        // A folder saved with an adapter (a LoRA checkpoint) loads with it.
        if dir.join(lora::ADAPTER_CONFIG).exists() {
            model.load_adapter(dir)?;
        }
        Ok(model)
    }

    /// Save in the Hugging Face layout (`config.json`, `generation_config.json`,
    /// `model.safetensors`, tokenizer files) so `transformers` can load it;
    /// an attached adapter goes next to it in peft's files (the base weights
    /// stay unmerged).
    /// Files are written into a scratch folder inside `dir` first and then
    /// renamed into place one by one, so a crash never leaves a half-written
    /// file, and other files in `dir` are kept.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let staging = ScratchDir::new(dir.join(format!(".saving-{}", std::process::id())))?;
        self.write_files(staging.path())?;
        let entries =
            std::fs::read_dir(staging.path()).map_err(|e| Error::io(staging.path(), e))?;
        for entry in entries {
            let from = entry.map_err(|e| Error::io(staging.path(), e))?.path();
            let Some(name) = from.file_name() else {
                continue;
            };
            let to = dir.join(name);
            std::fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
        }
        Ok(())
    }

    fn write_files(&self, dir: &Path) -> Result<()> {
        let kind = self.lm.kind();
        let write_json = |name: &str, v: &serde_json::Value| -> Result<()> {
            let p = dir.join(name);
            let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
            std::fs::write(&p, text).map_err(|e| Error::io(&p, e))
        };
        write_json(
            "config.json",
            &self.config.to_hf_json(weights::dtype_name(kind)),
        )?;
        write_json(
            "generation_config.json",
            &serde_json::json!({
                "bos_token_id": self.config.bos_token_id,
                "eos_token_id": self.eos_ids(),
                "pad_token_id": self.pad_id(),
            }),
        )?;
        weights::save_weights(&self.vs, &dir.join("model.safetensors"))?;
        if self.lora.is_some() {
            self.save_adapter(dir, None)?;
        }
        if let Some(t) = &self.tokenizer {
            t.save(dir)?;
        }
        Ok(())
    }

    /// End-of-sequence ids: the tokenizer's (which include `config.json`'s), else `config.json`'s.
    pub fn eos_ids(&self) -> Vec<i64> {
        match &self.tokenizer {
            Some(t) if !t.eos_ids().is_empty() => t.eos_ids().to_vec(),
            _ => self.config.eos_token_id.clone(),
        }
    }

    /// Padding id: the tokenizer's, `config.json`'s, the first EOS id, or 0.
    pub fn pad_id(&self) -> i64 {
        self.tokenizer
            .as_ref()
            .and_then(Tokenizer::pad_id)
            .or(self.config.pad_token_id)
            .or_else(|| self.eos_ids().first().copied())
            .unwrap_or(0)
    }
}

/// One draw from N(0, 1) by the Box-Muller transform.
fn standard_normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// The distinct rows of `rows` in first-seen order, and for every row the
/// index of its distinct row: how a group's identical prompts are found so
/// that their shared work (prefill, teacher context) runs once.
pub(crate) fn distinct_rows(rows: &[Vec<i64>]) -> (Vec<&[i64]>, Vec<usize>) {
    let mut distinct: Vec<&[i64]> = Vec::new();
    let mut seen: std::collections::HashMap<&[i64], usize> = Default::default();
    let row_of = rows
        .iter()
        .map(|r| {
            *seen.entry(r.as_slice()).or_insert_with(|| {
                distinct.push(r.as_slice());
                distinct.len() - 1
            })
        })
        .collect();
    (distinct, row_of)
}

/// A folder removed again when dropped (also on error paths).
#[derive(Debug)]
pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Create `path` afresh (a leftover from a crashed process is removed first).
    pub(crate) fn new(path: PathBuf) -> Result<ScratchDir> {
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
        std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        Ok(ScratchDir(path))
    }

    /// The folder.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
