//! LoRA adapters ("LoRA: Low-Rank Adaptation of Large Language Models", Hu et
//! al. 2021) on the decoder's linear layers, in peft's file format.
//!
//! Mirrors peft's `tuners/lora/layer.py` (`Linear.forward`,
//! `get_delta_weight`, `merge`): an adapted projection computes
//! `y = W x + b + scale * B (A x)` with `A [r, in]` drawn Kaiming-uniform
//! (`U(-1/sqrt(in), 1/sqrt(in))`, torch's `kaiming_uniform_(a = sqrt(5))`),
//! `B [out, r]` zero, so a fresh adapter starts exactly at the base model.
//! The base is frozen (no gradients); `A` and `B` stay float32 whatever the
//! base's dtype, and are the only variables that require grad, so
//! [`crate::optim::AdamW`] over the var store updates them alone.
//!
//! Adapter variables live in the model's var store next to the weight they
//! adapt (`model.layers.N.self_attn.q_proj.lora_A.weight`); peft's files
//! prefix those names with `base_model.model.` ([`PEFT_PREFIX`]).

use super::lora_config::LoraConfig;
use super::lora_dropout::LoraDropout;
use super::LoadedModel;
use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Kind, Tensor};

/// What peft puts before a var-store name in `adapter_model.safetensors`.
pub const PEFT_PREFIX: &str = "base_model.model.";
/// peft's adapter configuration file.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// peft's adapter weights file.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// Whether a var-store name is an adapter matrix (not a base weight).
pub fn is_adapter_name(name: &str) -> bool {
    name.contains(".lora_A.") || name.contains(".lora_B.")
}

/// The adapter of one linear layer: `scale * B (A x)`.
#[derive(Debug)]
pub struct LoraBranch {
    /// `A [r, in]`, float32.
    a: Tensor,
    /// `B [out, r]`, float32.
    b: Tensor,
    /// `alpha / r` (or `alpha / sqrt(r)`).
    scale: f64,
    /// Dropout on the input while training (`None` when `p = 0`).
    dropout: Option<LoraDropout>,
    /// Already folded into the weight ([`super::shared_base::SharedBase::merged_replica`]):
    /// the forward adds nothing.
    pub(crate) merged: bool,
}

impl LoraBranch {
    /// `y + scale * B (A dropout(x))`, computed in the adapter's dtype and
    /// added in `y`'s (peft casts the same way). Dropout acts only while the
    /// train step has set the model's key ([`super::lora_dropout`]); it is
    /// the identity in generation, evaluation and the teacher's pass.
    pub fn add_to(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        if self.merged {
            return Ok(y.shallow_clone());
        }
        let h = x.f_to_kind(self.a.kind())?;
        let h = match &self.dropout {
            Some(d) => d.apply(&h)?,
            None => h,
        };
        let delta = h
            .f_linear::<Tensor>(&self.a, None)?
            .f_linear::<Tensor>(&self.b, None)?
            .f_mul_scalar(self.scale)?;
        Ok(y.f_add(&delta.f_to_kind(y.kind())?)?)
    }

    /// `scale * B A`, `[out, in]`: what merging adds to the base weight.
    pub fn delta_weight(&self) -> Result<Tensor> {
        Ok(self.b.f_matmul(&self.a)?.f_mul_scalar(self.scale)?)
    }
}

impl LoadedModel {
    /// Freeze every present parameter and attach fresh adapters (`A`
    /// Kaiming-uniform from `cfg.init_seed`, `B` zero) to the targeted
    /// projections of every layer.
    pub fn attach_lora(&mut self, cfg: &LoraConfig) -> Result<()> {
        cfg.validate()?;
        if self.lora.is_some() {
            return Err(Error::InvalidInput(
                "the model already has an adapter attached".into(),
            ));
        }
        self.vs.freeze();
        let mut rng = StdRng::seed_from_u64(cfg.init_seed);
        let device = self.lm.device();
        let root = self.vs.root();
        let r = cfg.rank;
        for (i, layer) in self.lm.layers_mut().iter_mut().enumerate() {
            for (module, linear) in layer.linears_mut() {
                let short = module.rsplit('.').next().unwrap_or(&module);
                if !cfg.targets(short) {
                    continue;
                }
                let size = linear.weight.size();
                let (out_dim, in_dim) = (size[0], size[1]);
                let bound = 1.0 / (in_dim as f64).sqrt();
                let values: Vec<f32> = (0..r * in_dim)
                    .map(|_| ((2.0 * rng.random::<f64>() - 1.0) * bound) as f32)
                    .collect();
                let a = Tensor::from_slice(&values)
                    .f_view([r, in_dim])?
                    .f_to_device(device)?;
                let b = Tensor::f_zeros([out_dim, r], (Kind::Float, device))?;
                let mut path = &root / "model" / "layers" / i;
                for part in module.split('.') {
                    path = &path / part;
                }
                let a = (&path / "lora_A").add("weight", a, true);
                let b = (&path / "lora_B").add("weight", b, true);
                let dropout = (cfg.dropout > 0.0)
                    .then(|| LoraDropout::new(cfg.dropout, i, &module, self.dropout_key.clone()));
                linear.lora = Some(LoraBranch {
                    a,
                    b,
                    scale: cfg.scale(),
                    dropout,
                    merged: false,
                });
            }
        }
        self.lora = Some(cfg.clone());
        Ok(())
    }

    /// The adapter matrices under peft's names
    /// (`base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`),
    /// sorted; empty without an adapter.
    pub fn adapter_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(n, _)| is_adapter_name(n))
            .map(|(n, t)| (format!("{PEFT_PREFIX}{n}"), t))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Write `adapter_config.json` and `adapter_model.safetensors` into `dir`,
    /// loadable with peft's `PeftModel.from_pretrained(base, dir)`.
    pub fn save_adapter(&self, dir: &Path, base_model: Option<&str>) -> Result<()> {
        let cfg = self
            .lora
            .as_ref()
            .ok_or_else(|| Error::InvalidInput("the model has no adapter to save".into()))?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tensors = self
            .adapter_tensors()
            .into_iter()
            .map(|(n, t)| {
                Ok((
                    n,
                    t.f_detach()?
                        .f_to_device(tch::Device::Cpu)?
                        .f_contiguous()?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let weights = dir.join(ADAPTER_WEIGHTS);
        Tensor::write_safetensors(&tensors, &weights).map_err(|e| Error::Model {
            path: weights.clone(),
            msg: format!("cannot write safetensors: {e}"),
        })?;
        let path = dir.join(ADAPTER_CONFIG);
        let json = cfg.to_peft_json(base_model);
        let text = serde_json::to_string_pretty(&json).unwrap_or_else(|_| json.to_string());
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
    }

    /// Attach the peft adapter saved in `dir` (`adapter_config.json` +
    /// `adapter_model.safetensors`). Every adapter matrix must be present
    /// with its exact shape, and the file may hold nothing else.
    pub fn load_adapter(&mut self, dir: &Path) -> Result<()> {
        let cfg = LoraConfig::from_peft_file(&dir.join(ADAPTER_CONFIG))?;
        let path = dir.join(ADAPTER_WEIGHTS);
        if !path.exists() {
            let msg = if dir.join("adapter_model.bin").exists() {
                "only adapter_model.safetensors is read; adapter_model.bin (pickle) is not"
            } else {
                "missing"
            };
            return Err(Error::Model {
                path,
                msg: msg.into(),
            });
        }
        let stored = Tensor::read_safetensors(&path).map_err(|e| Error::Model {
            path: path.clone(),
            msg: format!("cannot read safetensors: {e}"),
        })?;
        self.attach_lora(&cfg)?;
        let mut wanted: BTreeMap<String, Tensor> = self.adapter_tensors().into_iter().collect();
        tch::no_grad(|| -> Result<()> {
            for (name, t) in stored {
                let Some(var) = wanted.remove(&name) else {
                    return Err(Error::Model {
                        path: path.clone(),
                        msg: format!(
                            "tensor `{name}` matches no adapter of this model \
                             (target_modules {:?})",
                            cfg.target_modules
                        ),
                    });
                };
                if var.size() != t.size() {
                    return Err(Error::ShapeMismatch {
                        name,
                        expected: var.size(),
                        got: t.size(),
                    });
                }
                var.shallow_clone().f_copy_(&t)?;
            }
            Ok(())
        })?;
        if let Some((name, var)) = wanted.into_iter().next() {
            return Err(Error::MissingTensor {
                path,
                name,
                expected: var.size(),
            });
        }
        Ok(())
    }

    /// Fold every adapter into its base weight, `W += scale * B A` (peft's
    /// `merge_and_unload`), and detach the adapters: the model then computes
    /// as a plain one and saves as a plain Hugging Face folder. The adapter
    /// variables stay in the var store (unused, never saved).
    pub fn merge_lora(&mut self) -> Result<()> {
        if self.shares_base {
            return Err(Error::InvalidInput(
                "cannot merge an adapter into a base shared with other models \
                 (make a copy of its own first)"
                    .into(),
            ));
        }
        tch::no_grad(|| -> Result<()> {
            for layer in self.lm.layers_mut() {
                for (_, linear) in layer.linears_mut() {
                    if let Some(lora) = linear.lora.take() {
                        let w = &linear.weight;
                        let merged = w
                            .f_to_kind(Kind::Float)?
                            .f_add(&lora.delta_weight()?)?
                            .f_to_kind(w.kind())?;
                        w.shallow_clone().f_copy_(&merged)?;
                    }
                }
            }
            Ok(())
        })?;
        self.lora = None;
        Ok(())
    }
}
