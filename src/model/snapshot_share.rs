//! Replicas that share a frozen snapshot's host memory instead of copying it.
//!
//! On the CPU the sampler's and the teacher's replicas hold the same values as
//! the frozen snapshots the optimizer publishes (`actors::commit::Frozen`),
//! which stay alive anyway (the commit board keeps them for restarts and
//! checkpoints). Copying them doubled those weights: at the real vocabulary
//! (Qwen2-shaped, hidden 256, vocabulary 151,936: 0.15 GiB of float32 weights)
//! the two replicas were 0.30 GiB of a run's 3.06 GiB peak
//! (docs/benchmarks/memory.md). [`LoadedModel::share_snapshot`] points the
//! replica's parameters at the snapshot's tensors instead: no new memory.
//!
//! Safe because a frozen snapshot is never written after it is made, and a
//! replica is never written in place: it runs forward passes without
//! gradients, and a newer version replaces its parameters' storage again
//! ([`LoadedModel::share_snapshot`] or [`LoadedModel::replace_snapshot`]),
//! never copies into it.

use super::LoadedModel;
use super::WeightSnapshot;
use crate::error::{Error, Result};
use tch::Device;

impl LoadedModel {
    /// Whether [`LoadedModel::share_snapshot`] can use `snap` as it is: this
    /// model lives in host memory and every tensor of `snap` is a host tensor
    /// of this model's dtype.
    pub fn can_share(&self, snap: &WeightSnapshot) -> bool {
        let kind = self.lm.kind();
        self.vs.device() == Device::Cpu
            && snap
                .tensors
                .iter()
                .all(|(_, t)| t.device() == Device::Cpu && t.kind() == kind)
    }

    /// Make this model's parameters the tensors of `snap` (shared storage, no
    /// copy). Every parameter must be present with the same shape, and
    /// [`LoadedModel::can_share`] must hold. The model must not be written in
    /// place afterwards (see the module docs).
    pub fn share_snapshot(&mut self, snap: &WeightSnapshot) -> Result<()> {
        if !self.can_share(snap) {
            return Err(Error::InvalidInput(format!(
                "snapshot v{} is not host memory of dtype {:?}; it cannot be shared",
                snap.version,
                self.lm.kind()
            )));
        }
        self.set_parameters(snap, |t| Ok(t.shallow_clone()))
    }

    /// Replace this model's parameters with fresh copies of `snap`'s tensors
    /// (cast to this model's dtype and device): new storage, so a parameter
    /// that shared an older snapshot's memory never writes into it.
    pub fn replace_snapshot(&mut self, snap: &WeightSnapshot) -> Result<()> {
        let (kind, device) = (self.lm.kind(), self.vs.device());
        self.set_parameters(snap, |t| {
            Ok(t.f_to_device(device)?.f_to_kind(kind)?.f_detach_copy()?)
        })
    }

    /// Point every parameter at `make(snapshot tensor)`, after checking that
    /// the names and shapes match exactly (nothing is changed otherwise).
    fn set_parameters(
        &mut self,
        snap: &WeightSnapshot,
        make: impl Fn(&tch::Tensor) -> Result<tch::Tensor>,
    ) -> Result<()> {
        let vars = self.vs.variables();
        for (name, t) in &snap.tensors {
            super::snapshot::matching_parameter(&vars, name, t)?;
        }
        if snap.tensors.len() != vars.len() {
            return Err(Error::InvalidInput(format!(
                "snapshot v{} has {} tensors for {} parameters",
                snap.version,
                snap.tensors.len(),
                vars.len()
            )));
        }
        for (name, t) in &snap.tensors {
            let data = make(t)?;
            if let Some(var) = vars.get(name) {
                tch::no_grad(|| var.shallow_clone().f_set_data(&data))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Config;
    use tch::{Kind, Tensor};

    fn ptrs(m: &LoadedModel) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> =
            m.vs.variables()
                .into_iter()
                .map(|(n, t)| (n, t.data_ptr() as usize))
                .collect();
        v.sort();
        v
    }

    #[test]
    fn a_replica_shares_a_snapshot_and_never_writes_into_it() {
        let policy = LoadedModel::random(Config::tiny(), Device::Cpu, 1).unwrap();
        let v1 = policy.snapshot(1).unwrap();
        let mut replica = LoadedModel::random(Config::tiny(), Device::Cpu, 2).unwrap();
        assert!(replica.can_share(&v1));
        replica.share_snapshot(&v1).unwrap();
        // Same storage as the snapshot, and the same values as the policy.
        let snap_ptrs: Vec<(String, usize)> = v1
            .tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.data_ptr() as usize))
            .collect();
        assert_eq!(ptrs(&replica), snap_ptrs);
        let ids = Tensor::from_slice(&[1i64, 2, 3]).view([1, 3]);
        let out = |m: &LoadedModel| tch::no_grad(|| m.lm.forward_all(&ids, None).unwrap());
        assert!(out(&replica).equal(&out(&policy)));
        // A newer version that cannot be shared (another dtype) goes into
        // fresh storage: the first snapshot keeps its values.
        let before: Vec<Tensor> = v1.tensors.iter().map(|(_, t)| t.copy()).collect();
        let other = LoadedModel::random(Config::tiny(), Device::Cpu, 3).unwrap();
        let mut v2 = other.snapshot(2).unwrap();
        for (_, t) in v2.tensors.iter_mut() {
            *t = t.to_kind(Kind::Double);
        }
        assert!(!replica.can_share(&v2));
        assert!(replica.share_snapshot(&v2).is_err());
        replica.replace_snapshot(&v2).unwrap();
        for ((_, t), b) in v1.tensors.iter().zip(&before) {
            assert!(t.equal(b));
        }
        assert!(out(&replica).allclose(&out(&other), 1e-5, 1e-6, false));
        assert!(ptrs(&replica)
            .iter()
            .zip(&snap_ptrs)
            .all(|(a, b)| a.1 != b.1));
        // A snapshot missing a parameter is refused, and nothing changes.
        let mut short = other.snapshot(3).unwrap();
        let held = ptrs(&replica);
        short.tensors.pop();
        assert!(replica.share_snapshot(&short).is_err());
        assert_eq!(ptrs(&replica), held);
    }
}
