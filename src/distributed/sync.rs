//! One data-parallel step's collectives, in the order every rank issues them:
//!
//! 1. [`crate::train::sync::agree`]: sum `[response tokens, responses, bad input]` so the loss
//!    is normalised by the *global* batch (token-mean over all ranks'
//!    tokens) and every rank skips the step together;
//! 2. backward on the rank's own samples (gradients of its share of the
//!    global loss);
//! 3. [`crate::train::sync::reduce_step`]: sum the gradients (bucketed), then the logged sums
//!    and a bad-loss flag. The summed gradient is the one-rank gradient of
//!    the global batch, so clipping and AdamW give the same update on every
//!    rank (bit-identical: each bucket is reduced once and sent to all).

use super::bucket::{all_reduce_bucketed, ReduceReport};
use super::{ProcessGroup, DEFAULT_BUCKET_BYTES};
use crate::error::Result;
use crate::train::GradSync;
use tch::{Device, Kind, Tensor};

/// [`GradSync`] over a [`ProcessGroup`].
#[derive(Debug)]
pub struct DataParallel {
    pg: Box<dyn ProcessGroup>,
    device: Device,
    bucket_bytes: usize,
    /// What the last gradient all-reduce moved.
    pub last: ReduceReport,
}

impl DataParallel {
    /// Sync over `pg`; small value vectors travel on `device` (the
    /// gradients' device: NCCL reduces only device memory).
    pub fn new(pg: Box<dyn ProcessGroup>, device: Device) -> DataParallel {
        DataParallel {
            pg,
            device,
            bucket_bytes: DEFAULT_BUCKET_BYTES,
            last: ReduceReport::default(),
        }
    }

    /// Change the bucket size (bytes).
    pub fn with_bucket_bytes(mut self, bytes: usize) -> DataParallel {
        self.bucket_bytes = bytes.max(1);
        self
    }

    /// The process group.
    pub fn group(&self) -> &dyn ProcessGroup {
        self.pg.as_ref()
    }

    /// Overwrite `params` with rank 0's, so every replica starts equal.
    pub fn broadcast_params(&self, params: &[Tensor]) -> Result<()> {
        broadcast_params(self.pg.as_ref(), params, 0)
    }
}

/// Overwrite `params` with rank `root`'s over `pg`, in place (every rank
/// passes its replica's parameters in the same order).
pub fn broadcast_params(pg: &dyn ProcessGroup, params: &[Tensor], root: usize) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        let flat: Vec<Tensor> = params
            .iter()
            .map(|p| p.f_detach()?.f_contiguous())
            .collect::<std::result::Result<_, _>>()?;
        pg.broadcast(&flat, root)?;
        for (p, f) in params.iter().zip(&flat) {
            if f.data_ptr() != p.data_ptr() {
                p.shallow_clone().f_copy_(f)?;
            }
        }
        Ok(())
    })
}

impl GradSync for DataParallel {
    fn world(&self) -> usize {
        self.pg.world()
    }

    fn sum_values(&mut self, values: &mut [f64]) -> Result<()> {
        let t = Tensor::f_from_slice(values)?.f_to_device(self.device)?;
        self.pg.all_reduce_sum(std::slice::from_ref(&t))?;
        let back = Vec::<f64>::try_from(t.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?)?;
        values.copy_from_slice(&back);
        Ok(())
    }

    fn sum_grads(&mut self, params: &[Tensor]) -> Result<()> {
        // A rank whose samples never reached a parameter (or that has no
        // samples) holds no gradient for it; give it zeros so every rank
        // reduces the same list.
        for p in params {
            if p.requires_grad() && !p.grad().defined() {
                p.f_mul_scalar(0.0)?.f_sum(p.kind())?.f_backward()?;
            }
        }
        let grads: Vec<Tensor> = params
            .iter()
            .map(|p| p.grad())
            .filter(|g| g.defined())
            .collect();
        self.last = all_reduce_bucketed(self.pg.as_ref(), &grads, self.bucket_bytes)?;
        Ok(())
    }
}
