//! Versioned weight snapshots: detached deep copies that the optimizer sends to
//! the sampler and the teacher, and that they load into their own replicas.

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

impl LoadedModel {
    /// A replica of this model on `device`: same config, tokenizer, dtype and
    /// weights (deep copies). Parameters are copied one at a time straight
    /// into the replica, so no third copy of the weights exists meanwhile.
    pub fn replicate(&self, device: tch::Device) -> Result<LoadedModel> {
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
        let mut tensors = self
            .vs
            .variables()
            .into_iter()
            .map(|(n, t)| Ok((n, t.f_detach_copy()?)))
            .collect::<Result<Vec<_>>>()?;
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(WeightSnapshot { version, tensors })
    }

    /// Copy a snapshot into this model's parameters (casting kind and device).
    /// Every parameter must be present with the same shape.
    pub fn load_snapshot(&mut self, snap: &WeightSnapshot) -> Result<()> {
        let vars = self.vs.variables();
        let mut seen = 0usize;
        for (name, t) in &snap.tensors {
            let Some(var) = vars.get(name) else {
                return Err(Error::InvalidInput(format!(
                    "snapshot tensor `{name}` is not a parameter of this model"
                )));
            };
            if var.size() != t.size() {
                return Err(Error::ShapeMismatch {
                    name: name.clone(),
                    expected: var.size(),
                    got: t.size(),
                });
            }
            tch::no_grad(|| var.shallow_clone().f_copy_(t))?;
            seen += 1;
        }
        if seen != vars.len() {
            let have: std::collections::BTreeSet<&String> =
                snap.tensors.iter().map(|(n, _)| n).collect();
            let missing = vars
                .keys()
                .find(|n| !have.contains(n))
                .cloned()
                .unwrap_or_default();
            return Err(Error::InvalidInput(format!(
                "snapshot v{} lacks parameter `{missing}`",
                snap.version
            )));
        }
        Ok(())
    }
}
