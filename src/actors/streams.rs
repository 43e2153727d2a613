//! The CUDA streams of the actors that launch GPU work (docs/RUNTIME.md,
//! "CUDA streams"): one from libtorch's pool for each of the sampler, the
//! teacher and the optimizer on its device, and one more on the optimizer's
//! device for its weight snapshots. Chosen once per run and kept by the
//! supervisor, so a respawned actor queues on its predecessor's stream, after
//! whatever that one left in flight. On CPU devices, and in builds without
//! the `gpu` feature, each is [`Stream::none`] and nothing changes.

use crate::cuda::Stream;
use crate::error::Result;
use tch::Device;

/// One stream per GPU actor, plus the optimizer's snapshot stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct ActorStreams {
    /// The sampler's (generation, loading published policy weights).
    pub sampler: Stream,
    /// The teacher-scorer's (scoring, loading published teacher weights).
    pub teacher: Stream,
    /// The optimizer's (train step, validation, checkpoints).
    pub optimizer: Stream,
    /// The optimizer's weight snapshots (the published policy copies).
    pub snapshot: Stream,
}

impl ActorStreams {
    /// Pool streams for actors placed on these devices.
    pub fn for_devices(
        sampler: Device,
        teacher: Device,
        optimizer: Device,
    ) -> Result<ActorStreams> {
        Ok(ActorStreams {
            sampler: Stream::from_pool(sampler)?,
            teacher: Stream::from_pool(teacher)?,
            optimizer: Stream::from_pool(optimizer)?,
            snapshot: Stream::from_pool(optimizer)?,
        })
    }
}
