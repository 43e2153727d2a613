//! A model replica an actor owns (the sampler's policy, the teacher's
//! teacher): built from published weights when the actor starts, loaded
//! with the exact version each step needs, and used only inside blocking sections
//! on the actor's CUDA stream (a no-op stream on the CPU).

use super::commit::{Frozen, ReplicaSpec};
use super::shared::join_err;
use crate::cuda::Stream;
use crate::model::{LoadCount, LoadedModel, SharedBase};
use parking_lot::Mutex;
use ractor::ActorProcessingErr;
use std::sync::Arc;

/// A replica and the weights version it holds.
#[derive(Debug)]
pub struct Replica {
    /// Behind a lock only so blocking threads can use it; no other actor
    /// sees it.
    model: Arc<Mutex<LoadedModel>>,
    version: u64,
    stream: Stream,
    /// What the last sync wrote (adapters only when the base is shared).
    last_sync: LoadCount,
    /// The base to re-merge the adapters from after a sync (merged
    /// generation, [`ReplicaSpec::merged`]).
    merge_base: Option<SharedBase>,
}

impl Replica {
    /// A new replica of `spec` holding `weights`, built on `stream`.
    pub async fn build(
        spec: ReplicaSpec,
        weights: Frozen,
        stream: Stream,
    ) -> Result<Replica, ActorProcessingErr> {
        let version = weights.version();
        let merge_base = spec.merge_base();
        let model = tokio::task::spawn_blocking(move || {
            let _on = stream.enter()?;
            spec.build(&weights)
        })
        .await
        .map_err(join_err)??;
        Ok(Replica {
            model: Arc::new(Mutex::new(model)),
            version,
            stream,
            last_sync: LoadCount::default(),
            merge_base,
        })
    }

    /// The weights version the replica holds.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Load `weights` unless the replica already holds that version (an
    /// older version is loaded too: a step is computed with exactly the
    /// version its plan names, docs/RUNTIME.md "Staleness").
    pub async fn install(&mut self, weights: &Frozen) -> Result<(), ActorProcessingErr> {
        if weights.version() == self.version {
            return Ok(());
        }
        let version = weights.version();
        let weights = weights.clone();
        let merge_base = self.merge_base.clone();
        self.last_sync = self
            .run(move |m| {
                let n = weights.load_into(m)?;
                if let Some(base) = &merge_base {
                    m.remerge(base)?;
                }
                Ok(n)
            })
            .await?;
        tracing::debug!(
            version,
            tensors = self.last_sync.tensors,
            bytes = self.last_sync.bytes,
            "replica synced"
        );
        self.version = version;
        Ok(())
    }

    /// What the last [`Replica::install`] wrote into the replica.
    pub fn last_sync(&self) -> LoadCount {
        self.last_sync
    }

    /// Run `f` on the replica in a blocking section on the actor's stream.
    pub async fn run<T, F>(&self, f: F) -> Result<T, ActorProcessingErr>
    where
        T: Send + 'static,
        F: FnOnce(&mut LoadedModel) -> crate::Result<T> + Send + 'static,
    {
        let model = self.model.clone();
        let stream = self.stream;
        Ok(tokio::task::spawn_blocking(move || {
            let _on = stream.enter()?;
            f(&mut model.lock())
        })
        .await
        .map_err(join_err)??)
    }
}
