//! Versioned weight snapshots: detached deep copies that the optimizer sends to
//! the sampler and the teacher, and that they load into their own replicas.

use super::lora::is_adapter_name;
use super::LoadedModel;
use crate::error::{Error, Result};
use tch::Tensor;

/// The weights of a policy at one version, as owned, detached tensors.
#[derive(Debug)]
pub struct WeightSnapshot {
    /// Policy version (number of optimizer steps that produced it).
    pub version: u64,
    /// `(safetensors key, tensor)` for every parameter, sorted by key.
    pub tensors: Vec<(String, Tensor)>,
}

impl WeightSnapshot {
    /// An independent copy (the optimizer keeps one to re-send after a restart).
    pub fn deep_copy(&self) -> Result<WeightSnapshot> {
        let tensors = self
            .tensors
            .iter()
            .map(|(n, t)| Ok((n.clone(), t.f_detach_copy()?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(WeightSnapshot {
            version: self.version,
            tensors,
        })
    }
}

/// What loading a snapshot wrote into a model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadCount {
    /// Tensors written.
    pub tensors: usize,
    /// Bytes written (in the model's dtypes).
    pub bytes: usize,
}

impl WeightSnapshot {
    /// Whether every tensor is an adapter matrix (a LoRA sync snapshot).
    pub fn is_adapter_only(&self) -> bool {
        !self.tensors.is_empty() && self.tensors.iter().all(|(n, _)| is_adapter_name(n))
    }

    /// The adapter tensors of this snapshot alone (handles, no copy).
    pub fn adapters_only(&self) -> WeightSnapshot {
        WeightSnapshot {
            version: self.version,
            tensors: self
                .tensors
                .iter()
                .filter(|(n, _)| is_adapter_name(n))
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect(),
        }
    }
}

impl LoadedModel {
    /// A replica of this model on `device`: same config, tokenizer, dtype and
    /// weights. A LoRA model's replica on its own device computes with this
    /// model's frozen base tensors ([`super::shared_base`]) and owns copies
    /// of the adapters only; otherwise every parameter is a deep copy, made
    /// one at a time straight into the replica, so no third copy of the
    /// weights exists meanwhile.
    pub fn replicate(&self, device: tch::Device) -> Result<LoadedModel> {
        if let Some(lora) = &self.lora {
            if device == self.vs.device() {
                let mut m = self.shared_base()?.replica(
                    self.config.clone(),
                    self.tokenizer.clone(),
                    lora,
                )?;
                m.load_snapshot(&self.sync_snapshot(0)?)?;
                return Ok(m);
            }
        }
        let mut m = LoadedModel::empty(self.config.clone(), device)?;
        m.vs.set_kind(self.lm.kind());
        m.tokenizer = self.tokenizer.clone();
        if let Some(lora) = &self.lora {
            m.attach_lora(lora)?; // the copy below fills the adapters too
        }
        let src = self.vs.variables();
        tch::no_grad(|| -> Result<()> {
            for (name, var) in m.vs.variables() {
                let from = src.get(&name).ok_or_else(|| {
                    Error::InvalidInput(format!("replicate: source has no parameter {name}"))
                })?;
                var.shallow_clone().f_copy_(from)?;
            }
            Ok(())
        })?;
        Ok(m)
    }

    /// Deep copies of every parameter, detached from autograd, tagged `version`.
    pub fn snapshot(&self, version: u64) -> Result<WeightSnapshot> {
        let mut snap = self.snapshot_where(version, |_| true)?;
        snap.tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(snap)
    }

    /// Deep, detached copies of the parameters whose name passes `keep`.
    pub(crate) fn snapshot_where(
        &self,
        version: u64,
        keep: impl Fn(&str) -> bool,
    ) -> Result<WeightSnapshot> {
        let tensors = self
            .vs
            .variables()
            .into_iter()
            .filter(|(n, _)| keep(n))
            .map(|(n, t)| Ok((n, t.f_detach_copy()?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(WeightSnapshot { version, tensors })
    }

    /// Copy a snapshot into this model's parameters (casting kind and device).
    /// See [`LoadedModel::load_snapshot_counted`].
    pub fn load_snapshot(&mut self, snap: &WeightSnapshot) -> Result<()> {
        self.load_snapshot_counted(snap).map(|_| ())
    }

    /// Copy a snapshot into this model's parameters (casting kind and
    /// device), and say how much was written. Every parameter must be
    /// present with the same shape, except that an adapter-only snapshot
    /// ([`WeightSnapshot::is_adapter_only`], a LoRA sync) covers the
    /// adapters alone. A replica that shares its frozen base never writes
    /// it: a full snapshot's base tensors are checked for shape and skipped
    /// (the base is frozen, so they hold the same values).
    pub fn load_snapshot_counted(&mut self, snap: &WeightSnapshot) -> Result<LoadCount> {
        let vars = self.vs.variables();
        let adapters_only = self.lora.is_some() && snap.is_adapter_only();
        let mut seen = 0usize;
        let mut count = LoadCount::default();
        for (name, t) in &snap.tensors {
            let var = matching_parameter(&vars, name, t)?;
            seen += 1;
            if self.shares_base && !is_adapter_name(name) {
                continue;
            }
            tch::no_grad(|| var.shallow_clone().f_copy_(t))?;
            count.tensors += 1;
            count.bytes += var.numel() * var.kind().elt_size_in_bytes();
        }
        let wanted = if adapters_only {
            vars.keys().filter(|n| is_adapter_name(n)).count()
        } else {
            vars.len()
        };
        if seen != wanted {
            let have: std::collections::BTreeSet<&String> =
                snap.tensors.iter().map(|(n, _)| n).collect();
            let missing = vars
                .keys()
                .filter(|n| !adapters_only || is_adapter_name(n))
                .find(|n| !have.contains(n))
                .cloned()
                .unwrap_or_default();
            return Err(Error::InvalidInput(format!(
                "snapshot v{} lacks parameter `{missing}`",
                snap.version
            )));
        }
        Ok(count)
    }
}

/// The parameter of `vars` that snapshot tensor `name` (`t`) is for: an error
/// when the model has no such parameter or its shape differs.
pub(crate) fn matching_parameter<'a>(
    vars: &'a std::collections::HashMap<String, tch::Tensor>,
    name: &str,
    t: &tch::Tensor,
) -> Result<&'a tch::Tensor> {
    let Some(var) = vars.get(name) else {
        return Err(Error::InvalidInput(format!(
            "snapshot tensor `{name}` is not a parameter of this model"
        )));
    };
    if var.size() != t.size() {
        return Err(Error::ShapeMismatch {
            name: name.to_string(),
            expected: var.size(),
            got: t.size(),
        });
    }
    Ok(var)
}
