//! Bucketed all-reduce: tensors of the same dtype and device are flattened
//! into buckets of about `bucket_bytes`, every bucket is reduced as one
//! collective (all in flight together), and the sums are copied back. Few
//! large messages instead of one per parameter; one extra copy of the
//! gradients while they are in flight.

use super::ProcessGroup;
use crate::error::Result;
use tch::{Device, Kind, Tensor};

/// Consecutive runs of `sizes` (bytes, with a `(kind, device)` key each)
/// packed into buckets of at most `bucket_bytes`; a tensor larger than
/// that is a bucket of its own. Returns index ranges into the input.
pub fn plan_buckets(
    sizes: &[(usize, Kind, Device)],
    bucket_bytes: usize,
) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    let mut bytes = 0usize;
    for (i, &(b, kind, device)) in sizes.iter().enumerate() {
        let joins = out.last().is_some_and(|r| {
            let (_, k, d) = sizes[r.start];
            k == kind && d == device && bytes + b <= bucket_bytes
        });
        if joins {
            if let Some(r) = out.last_mut() {
                r.end = i + 1;
            }
            bytes += b;
        } else {
            out.push(i..i + 1);
            bytes = b;
        }
    }
    out
}

/// What one bucketed all-reduce moved.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReduceReport {
    /// Collectives issued (buckets).
    pub buckets: usize,
    /// Bytes reduced (per rank).
    pub bytes: usize,
}

/// Sum `tensors` over the ranks of `pg`, in place, in buckets of about
/// `bucket_bytes`.
pub fn all_reduce_bucketed(
    pg: &dyn ProcessGroup,
    tensors: &[Tensor],
    bucket_bytes: usize,
) -> Result<ReduceReport> {
    let sizes: Vec<(usize, Kind, Device)> = tensors
        .iter()
        .map(|t| {
            (
                t.numel() * t.kind().elt_size_in_bytes(),
                t.kind(),
                t.device(),
            )
        })
        .collect();
    let plan = plan_buckets(&sizes, bucket_bytes);
    tch::no_grad(|| -> Result<ReduceReport> {
        let flats = plan
            .iter()
            .map(|r| {
                let views = tensors[r.clone()]
                    .iter()
                    .map(|t| t.f_reshape([-1]))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok(Tensor::f_cat(&views, 0)?)
            })
            .collect::<Result<Vec<Tensor>>>()?;
        pg.all_reduce_sum(&flats)?;
        for (r, flat) in plan.iter().zip(&flats) {
            let mut offset = 0i64;
            for t in &tensors[r.clone()] {
                let n = t.numel() as i64;
                let part = flat.f_narrow(0, offset, n)?.f_view(t.size().as_slice())?;
                t.shallow_clone().f_copy_(&part)?;
                offset += n;
            }
        }
        Ok(ReduceReport {
            buckets: flats.len(),
            bytes: sizes.iter().map(|s| s.0).sum(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::plan_buckets;
    use tch::{Device, Kind};

    #[test]
    fn packs_runs_by_size_kind_and_device() {
        let f = |b| (b, Kind::Float, Device::Cpu);
        let sizes = [
            f(10),
            f(10),
            f(5),
            f(30),
            f(1),
            (4, Kind::Double, Device::Cpu),
            f(2),
        ];
        // 25-byte buckets: [10,10,5] [30] [1] [4 (double)] [2]
        assert_eq!(plan_buckets(&sizes, 25), vec![0..3, 3..4, 4..5, 5..6, 6..7]);
        assert_eq!(plan_buckets(&sizes[..3], 1000), vec![0..3]);
        assert!(plan_buckets(&[], 25).is_empty());
    }
}
