//! The key/value cache, owned by the caller so the model stays `&self`.
//!
//! Per layer, keys and values live in preallocated `[B, kv_heads, capacity, head_dim]`
//! buffers; each forward writes its new positions at `len..len + T` and attends
//! over `0..len + T`. When a forward would run past `capacity` the buffers grow
//! (doubling), so a cache made with a good capacity never copies.

use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Keys and values of every layer for a batch of sequences.
#[derive(Debug)]
pub struct KvCache {
    /// `(keys, values)` per layer, `[B, kv_heads, capacity, head_dim]`; `None` until first use.
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Positions already written (the same for every layer after a full forward).
    len: i64,
    /// Positions the buffers can hold before growing.
    capacity: i64,
}

impl KvCache {
    /// An empty cache for `num_layers` layers, sized for `capacity` positions.
    pub fn new(num_layers: usize, capacity: i64) -> KvCache {
        KvCache {
            layers: (0..num_layers).map(|_| None).collect(),
            len: 0,
            capacity: capacity.max(1),
        }
    }

    /// Positions cached so far.
    pub fn len(&self) -> i64 {
        self.len
    }

    /// True before the first forward.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drop everything (keeps nothing allocated).
    pub fn clear(&mut self) {
        for l in &mut self.layers {
            *l = None;
        }
        self.len = 0;
    }

    /// Write `k, v [B, kv_heads, T, D]` of `layer` after the cached positions and
    /// return views of all cached keys and values `[B, kv_heads, len + T, D]`.
    /// The last layer of a forward advances `len` (see [`KvCache::advance`]).
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let n_layers = self.layers.len();
        let slot = self.layers.get_mut(layer).ok_or_else(|| {
            Error::InvalidInput(format!(
                "KV cache has {n_layers} layers, asked for layer {layer}"
            ))
        })?;
        let size = k.size();
        let (b, h, t, d) = (size[0], size[1], size[2], size[3]);
        let needed = self.len + t;
        let (kind, device): (Kind, Device) = (k.kind(), k.device());
        match slot {
            None => {
                self.capacity = self.capacity.max(needed);
                let kb = Tensor::f_zeros([b, h, self.capacity, d], (kind, device))?;
                let vb = Tensor::f_zeros([b, h, self.capacity, d], (kind, device))?;
                *slot = Some((kb, vb));
            }
            Some((kb, _)) => {
                let have = kb.size();
                if have[0] != b || have[1] != h || have[3] != d {
                    return Err(Error::ShapeMismatch {
                        name: format!("kv_cache.layers.{layer}"),
                        expected: vec![have[0], have[1], t, have[3]],
                        got: size,
                    });
                }
                if have[2] < needed {
                    // Grow by doubling; copies once per doubling.
                    let new_cap = needed.max(2 * have[2]);
                    let Some((kb, vb)) = slot.take() else {
                        return Err(Error::InvalidInput("KV cache slot vanished".into()));
                    };
                    let grow = |x: Tensor| -> Result<Tensor> {
                        let pad = Tensor::f_zeros([b, h, new_cap - have[2], d], (kind, device))?;
                        Ok(Tensor::f_cat(&[&x, &pad], 2)?)
                    };
                    *slot = Some((grow(kb)?, grow(vb)?));
                    self.capacity = new_cap;
                }
            }
        }
        let Some((kb, vb)) = slot.as_mut() else {
            return Err(Error::InvalidInput("KV cache slot vanished".into()));
        };
        kb.f_narrow(2, self.len, t)?.f_copy_(k)?;
        vb.f_narrow(2, self.len, t)?.f_copy_(v)?;
        Ok((kb.f_narrow(2, 0, needed)?, vb.f_narrow(2, 0, needed)?))
    }

    /// Keep only the batch rows `rows` (int64 indices, in the new order): used
    /// to drop finished sequences from a generation batch.
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        for (kb, vb) in self.layers.iter_mut().flatten() {
            *kb = kb.f_index_select(0, rows)?;
            *vb = vb.f_index_select(0, rows)?;
        }
        Ok(())
    }

    /// Rows (sequences) held; 0 before the first forward.
    pub fn rows(&self) -> i64 {
        self.layers
            .iter()
            .flatten()
            .next()
            .map_or(0, |(kb, _)| kb.size()[0])
    }

    /// Add the rows of `other` after this cache's rows. Both are right-aligned
    /// at the longer one's length: the shorter one's positions move right and
    /// the columns in front of them are zero (the caller masks them out as
    /// padding). The new buffers hold `capacity` positions (at least the
    /// merged length). Returns the columns added in front of `(self, other)`.
    pub fn append_rows(&mut self, other: &KvCache, capacity: i64) -> Result<(i64, i64)> {
        if other.layers.len() != self.layers.len() {
            return Err(Error::InvalidInput(format!(
                "cannot merge a {}-layer KV cache into a {}-layer one",
                other.layers.len(),
                self.layers.len()
            )));
        }
        if self.rows() == 0 {
            self.clear();
        }
        let len = self.len.max(other.len);
        let cap = capacity.max(len).max(1);
        let (shift_a, shift_b) = (len - self.len, len - other.len);
        for (mine, theirs) in self.layers.iter_mut().zip(&other.layers) {
            let Some((ob, ov)) = theirs else {
                return Err(Error::InvalidInput(
                    "cannot merge a KV cache that was never written".into(),
                ));
            };
            let merge = |a: Option<&Tensor>, b: &Tensor| -> Result<Tensor> {
                let s = b.size();
                let rows_a = a.map_or(0, |a| a.size()[0]);
                let out =
                    Tensor::f_zeros([rows_a + s[0], s[1], cap, s[3]], (b.kind(), b.device()))?;
                if let Some(a) = a {
                    out.f_narrow(0, 0, rows_a)?
                        .f_narrow(2, shift_a, len - shift_a)?
                        .f_copy_(&a.f_narrow(2, 0, len - shift_a)?)?;
                }
                out.f_narrow(0, rows_a, s[0])?
                    .f_narrow(2, shift_b, len - shift_b)?
                    .f_copy_(&b.f_narrow(2, 0, len - shift_b)?)?;
                Ok(out)
            };
            let merged = match mine.as_ref() {
                Some((kb, vb)) => (merge(Some(kb), ob)?, merge(Some(vb), ov)?),
                None => (merge(None, ob)?, merge(None, ov)?),
            };
            *mine = Some(merged);
        }
        self.len = len;
        self.capacity = cap;
        Ok((shift_a, shift_b))
    }

    /// Drop the first `n` cached positions of every row (columns that are
    /// padding for all rows), keeping the capacity.
    pub fn trim_front(&mut self, n: i64) -> Result<()> {
        if n <= 0 {
            return Ok(());
        }
        if n > self.len {
            return Err(Error::InvalidInput(format!(
                "cannot trim {n} positions from a KV cache holding {}",
                self.len
            )));
        }
        let keep = self.len - n;
        for (kb, vb) in self.layers.iter_mut().flatten() {
            for buf in [kb, vb] {
                let out = buf.f_zeros_like()?;
                if keep > 0 {
                    out.f_narrow(2, 0, keep)?
                        .f_copy_(&buf.f_narrow(2, n, keep)?)?;
                }
                *buf = out;
            }
        }
        self.len = keep;
        Ok(())
    }

    /// Mark `t` more positions as written; called once per forward, after all layers.
    pub fn advance(&mut self, t: i64) {
        self.len += t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[rows, 1, t, 1]` keys/values holding `base + column`.
    fn kv(rows: i64, t: i64, base: f64) -> Tensor {
        Tensor::arange(t, (Kind::Float, Device::Cpu))
            .f_add_scalar(base)
            .unwrap()
            .view([1, 1, t, 1])
            .repeat([rows, 1, 1, 1])
    }

    fn column(c: &KvCache, row: i64) -> Vec<f32> {
        let (k, _) = c.layers[0].as_ref().unwrap();
        Vec::try_from(k.narrow(0, row, 1).narrow(2, 0, c.len()).flatten(0, -1)).unwrap()
    }

    #[test]
    fn appended_rows_are_right_aligned_and_trimmed_columns_drop() {
        let mut a = KvCache::new(1, 8);
        let _ = a.append(0, &kv(1, 2, 10.0), &kv(1, 2, 10.0)).unwrap();
        a.advance(2);
        let mut b = KvCache::new(1, 4);
        let _ = b.append(0, &kv(2, 4, 20.0), &kv(2, 4, 20.0)).unwrap();
        b.advance(4);
        // a (2 positions) moves right by 2; b (4) stays.
        assert_eq!(a.append_rows(&b, 8).unwrap(), (2, 0));
        assert_eq!((a.rows(), a.len()), (3, 4));
        assert_eq!(column(&a, 0), [0.0, 0.0, 10.0, 11.0]);
        assert_eq!(column(&a, 2), [20.0, 21.0, 22.0, 23.0]);
        // Keep row 0 only: its first two columns are padding for every row.
        a.select_rows(&Tensor::from_slice(&[0i64])).unwrap();
        a.trim_front(2).unwrap();
        assert_eq!((a.rows(), a.len()), (1, 2));
        assert_eq!(column(&a, 0), [10.0, 11.0]);
        assert!(a.trim_front(3).is_err());
    }
}
