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

    /// Mark `t` more positions as written; called once per forward, after all layers.
    pub fn advance(&mut self, t: i64) {
        self.len += t;
    }
}
