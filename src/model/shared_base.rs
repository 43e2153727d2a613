//! One frozen base per device: the replicas of a LoRA policy (the sampler's,
//! the teacher's) hold the policy's own base tensors, not copies, and only
//! their adapters are their own.
//!
//! With LoRA the base never changes during training (it has no gradient and
//! AdamW does not see it), so a replica on the policy's device can compute
//! with the very same storage. A [`SharedBase`] is that set of frozen tensors
//! (handles, no copy), shareable between actor threads; a replica built from
//! it ([`SharedBase::replica`]) registers those handles in its var store
//! before the network is built, so the network picks them up instead of
//! allocating ([`super::layers::param`]), then gets fresh adapters that a
//! sync fills. A sync then sends adapters only ([`LoadedModel::sync_snapshot`]),
//! and loading a snapshot never writes a shared base tensor
//! ([`LoadedModel::load_snapshot_counted`]).
//!
//! Reading one tensor from several threads at once is safe in libtorch; the
//! base is written once, at load, before any replica exists. A replica on
//! another device gets a copy of the base made once for that device
//! ([`SharedBase::to_device`]), which the actors placed there share in turn.

use super::lora::is_adapter_name;
use super::snapshot::WeightSnapshot;
use super::{LoadedModel, LoraConfig, Tokenizer};
use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::sync::Arc;
use tch::{nn, Device, Kind, Tensor};

/// The frozen base tensors of a LoRA model, by var-store name, on one device.
///
/// Cloning a `SharedBase` clones handles, never the tensors. The lock exists
/// only because a tensor handle is `Send` but not `Sync`; it is held while
/// handles are taken, never while computing.
#[derive(Debug, Clone)]
pub struct SharedBase {
    /// Where the tensors live.
    device: Device,
    /// The base's parameter dtype.
    kind: Kind,
    /// `(name, tensor)` for every non-adapter parameter, sorted by name.
    tensors: Arc<Mutex<Vec<(String, Tensor)>>>,
}

impl SharedBase {
    /// The device of the tensors.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The bytes of the base (what a replica does not allocate).
    pub fn bytes(&self) -> usize {
        self.tensors
            .lock()
            .iter()
            .map(|(_, t)| t.numel() * t.kind().elt_size_in_bytes())
            .sum()
    }

    /// This base on `device`: itself when it already lives there, else one
    /// detached copy made now (to be shared by every replica on `device`).
    pub fn to_device(&self, device: Device) -> Result<SharedBase> {
        if device == self.device {
            return Ok(self.clone());
        }
        let copied = tch::no_grad(|| {
            self.tensors
                .lock()
                .iter()
                .map(|(n, t)| Ok((n.clone(), t.f_to_device(device)?.f_detach_copy()?)))
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(SharedBase {
            device,
            kind: self.kind,
            tensors: Arc::new(Mutex::new(copied)),
        })
    }

    /// A model of `config` computing with this base and fresh adapters of
    /// `lora` (filled by the caller, e.g. from a sync snapshot). Its base
    /// tensors are these very tensors: no base memory is allocated.
    pub fn replica(
        &self,
        config: super::Config,
        tokenizer: Option<Tokenizer>,
        lora: &LoraConfig,
    ) -> Result<LoadedModel> {
        self.build(config, tokenizer, lora, |_| false)
    }

    /// A replica that generates with its adapters merged, `W + scale B A`
    /// (faster: no adapter matmuls per token). The weights the adapters
    /// target are its own copies (re-merged from this base at every sync,
    /// [`LoadedModel::remerge`]); every other base tensor is shared.
    pub fn merged_replica(
        &self,
        config: super::Config,
        tokenizer: Option<Tokenizer>,
        lora: &LoraConfig,
    ) -> Result<LoadedModel> {
        let adapted = |name: &str| {
            name.strip_suffix(".weight")
                .and_then(|n| n.rsplit('.').next())
                .is_some_and(|module| name.starts_with("model.layers.") && lora.targets(module))
        };
        let mut m = self.build(config, tokenizer, lora, adapted)?;
        m.remerge(self)?;
        Ok(m)
    }

    /// A replica whose base tensors are these, except those `own` names,
    /// which are copied.
    fn build(
        &self,
        config: super::Config,
        tokenizer: Option<Tokenizer>,
        lora: &LoraConfig,
        own: impl Fn(&str) -> bool,
    ) -> Result<LoadedModel> {
        let vs = nn::VarStore::new(self.device);
        {
            let root = vs.root();
            for (name, t) in self.tensors.lock().iter() {
                let t = if own(name) {
                    t.f_detach_copy()?
                } else {
                    t.shallow_clone()
                };
                let mut parts: Vec<&str> = name.split('.').collect();
                let last = parts.pop().unwrap_or_default();
                let mut path = root.clone();
                for p in parts {
                    path = &path / p;
                }
                let _ = path.add(last, t, false);
            }
        }
        let lm = super::CausalLm::new(&vs.root(), &config)?;
        let registered = self.tensors.lock().len();
        if vs.variables().len() != registered {
            return Err(Error::InvalidInput(format!(
                "the shared base holds {registered} tensors but a model of this config has {}",
                vs.variables().len()
            )));
        }
        let mut m = LoadedModel {
            vs,
            lm,
            config,
            tokenizer,
            lora: None,
            shares_base: true,
            dropout_key: Default::default(),
        };
        m.attach_lora(lora)?;
        Ok(m)
    }
}

impl LoadedModel {
    /// Merge the adapters into the weights they target, from the base:
    /// `W = W_base + scale B A` (peft's merge), for a replica built by
    /// [`SharedBase::merged_replica`]; call again after each sync. The
    /// adapters then add nothing in the forward.
    pub fn remerge(&mut self, base: &SharedBase) -> Result<()> {
        let tensors = base.tensors.lock();
        let find = |name: &str| {
            tensors
                .binary_search_by(|(n, _)| n.as_str().cmp(name))
                .map(|i| tensors[i].1.shallow_clone())
                .map_err(|_| Error::InvalidInput(format!("the shared base has no `{name}`")))
        };
        tch::no_grad(|| -> Result<()> {
            for (i, layer) in self.lm.layers_mut().iter_mut().enumerate() {
                for (module, linear) in layer.linears_mut() {
                    let Some(lora) = linear.lora.as_mut() else {
                        continue;
                    };
                    let w_base = find(&format!("model.layers.{i}.{module}.weight"))?;
                    if w_base.data_ptr() == linear.weight.data_ptr() {
                        return Err(Error::InvalidInput(format!(
                            "model.layers.{i}.{module}.weight is the shared base itself; \
                             merge only into a merged replica's own copy"
                        )));
                    }
                    let merged = w_base
                        .f_to_kind(Kind::Float)?
                        .f_add(&lora.delta_weight()?)?
                        .f_to_kind(linear.weight.kind())?;
                    linear.weight.shallow_clone().f_copy_(&merged)?;
                    lora.merged = true;
                }
            }
            Ok(())
        })
    }

    /// The frozen base of this LoRA model, as handles to its own tensors.
    /// Refused without an adapter: a fully trained model's weights change
    /// at every step and cannot be shared.
    pub fn shared_base(&self) -> Result<SharedBase> {
        if self.lora.is_none() {
            return Err(Error::InvalidInput(
                "only a LoRA model's frozen base can be shared with replicas".into(),
            ));
        }
        let mut tensors: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(n, _)| !is_adapter_name(n))
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(SharedBase {
            device: self.vs.device(),
            kind: self.lm.kind(),
            tensors: Arc::new(Mutex::new(tensors)),
        })
    }

    /// What a replica needs to catch up with this model at `version`: the
    /// adapters alone for a LoRA model (the base is frozen, and shared or
    /// copied once), every parameter otherwise. Deep, detached copies.
    pub fn sync_snapshot(&self, version: u64) -> Result<WeightSnapshot> {
        let mut snap =
            self.snapshot_where(version, |n| self.lora.is_none() || is_adapter_name(n))?;
        snap.tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(snap)
    }
}
