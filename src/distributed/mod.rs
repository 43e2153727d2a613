//! Data-parallel training: R learner ranks, each with a replica of the
//! policy and its share of every step's prompt groups, whose gradients are
//! summed so that every rank takes the same AdamW step (docs/DISTRIBUTED.md).
//!
//! - [`ProcessGroup`]: the collectives a rank needs (sum all-reduce,
//!   broadcast, barrier), each bounded by a timeout. On CPU they come from
//!   libtorch's c10d `ProcessGroupGloo` through the C++ shim in
//!   `csrc/rlsd_dist.cpp` ([`gloo`]); on GPUs from NCCL itself
//!   (`nccl`, behind the `gpu` feature).
//! - [`bucket`]: gradients flattened into ~25 MB buckets, all in flight together.
//! - [`sync`]: [`DataParallel`], the train step's [`GradSync`] seam
//!   (defined in [`crate::train::sync`]) over a process group.
//! - [`shard`]: which prompt groups of a step a rank trains on.
//! - [`env`]: rank, world size and rendezvous from `RANK`/`WORLD_SIZE`/
//!   `MASTER_ADDR`/`MASTER_PORT` (torchrun) or `SLURM_PROCID`/`SLURM_NTASKS`.
//! - [`launch`]: `rlsd train --nproc N` / `--gpus 0,1`: start the ranks as
//!   child processes of this binary and supervise them.
//! - [`train_loop`]: one rank's training loop (the sequential step loop
//!   with rank hooks: sharded prompts, global statistics, checkpoints).
//! - [`rank_checkpoint`]: a checkpoint committed for all ranks or none, and
//!   `--resume` on every rank (through [`crate::checkpoint`]'s atomic commit).
//! - [`rank_memory`]: the memory plan ([`crate::memory`]) of each kind of rank.
//! - [`split`]: split placement (`runtime.placement = "split"`): sampler
//!   ranks send each step's verified responses to the learner ranks, which
//!   broadcast the new weights back; [`sampler_loop`]: a sampler rank.
//! - [`report`]: each rank's `ranks/rank<r>.json` (role, weights digest,
//!   stage seconds, tokens/s, peak memory).

use crate::error::Result;
use tch::Tensor;

pub mod bucket;
pub mod env;
pub mod gloo;
pub mod launch;
mod learner;
#[cfg(feature = "gpu")]
pub mod nccl;
pub mod rank_checkpoint;
pub mod rank_memory;
pub mod report;
pub mod sampler_loop;
pub mod shard;
pub mod split;
pub mod sync;
pub mod train_loop;

pub use env::DistEnv;
pub use gloo::{GlooGroup, Store};
pub use sync::DataParallel;

/// The default bucket size of the gradient all-reduce, in bytes.
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// Collectives over the ranks of one job. Every rank must call the same
/// collectives in the same order; each returns an error (never hangs) when
/// a peer is gone or the group's timeout passes.
pub trait ProcessGroup: std::fmt::Debug + Send {
    /// This rank, `0..world()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world(&self) -> usize;
    /// The engine's name (`gloo`, `nccl`).
    fn backend(&self) -> &'static str;
    /// Replace each tensor by its sum over ranks, in place. The tensors are
    /// reduced separately (not added to each other) and may be in flight
    /// together; they must be contiguous.
    fn all_reduce_sum(&self, tensors: &[Tensor]) -> Result<()>;
    /// Overwrite each tensor with rank `root`'s, in place.
    fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<()>;
    /// Return once every rank has called it.
    fn barrier(&self) -> Result<()>;
}

pub use crate::train::GradSync;
