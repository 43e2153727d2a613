//! Dropout on a LoRA adapter's input while training (peft's `lora_dropout`:
//! `scale * B A dropout(x)`), with masks that a recomputation draws again
//! exactly.
//!
//! Activation checkpointing runs each layer twice (a forward without
//! gradients, then the recomputation inside the backward); a mask drawn from
//! a random generator would differ between the two and the gradient would be
//! wrong. Here a mask is a pure function of a *key* (set by the train step for
//! one micro-batch: step and micro-batch), the adapter's *site* (layer and
//! module) and each element's position: every draw under one key gives the
//! same mask. Without a key (generation, evaluation, the teacher, scoring)
//! dropout is off: the identity, as in peft's eval mode.
//!
//! The uniform number of element `i` is a 32-bit integer hash (two
//! multiply-xorshift rounds of `i ^ seed`, computed in int64 with every
//! product below 2^63, so no overflow) divided by 2^32; an element is kept
//! when it is at least `p`, and kept elements are scaled by `1 / (1 - p)`.

use crate::error::Result;
use parking_lot::Mutex;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// The train step's dropout key, shared by every adapter of one model.
/// `None`: dropout off.
#[derive(Debug, Clone, Default)]
pub struct DropoutKey(Arc<Mutex<Option<u64>>>);

impl DropoutKey {
    /// Set (training a micro-batch) or clear (anything else) the key.
    pub fn set(&self, key: Option<u64>) {
        *self.0.lock() = key;
    }

    /// The current key.
    pub fn get(&self) -> Option<u64> {
        *self.0.lock()
    }
}

/// The key of micro-batch `micro` (its first sample's index) of train step
/// `step`.
pub fn train_key(step: u64, micro: usize) -> u64 {
    splitmix64(step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ micro as u64)
}

/// An adapter's dropout: its probability, its site and the model's key.
#[derive(Debug, Clone)]
pub struct LoraDropout {
    /// Drop probability `p` in `[0, 1)`.
    p: f64,
    /// Layer and module of the adapter, hashed.
    site: u64,
    /// The model's key.
    key: DropoutKey,
}

impl LoraDropout {
    /// Dropout with probability `p` for the adapter of `module` in `layer`.
    pub fn new(p: f64, layer: usize, module: &str, key: DropoutKey) -> LoraDropout {
        let mut site = splitmix64(layer as u64 + 1);
        for b in module.bytes() {
            site = splitmix64(site ^ u64::from(b));
        }
        LoraDropout { p, site, key }
    }

    /// `x` with dropout applied when the model's key is set and `p > 0`;
    /// `x` itself otherwise.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self.key.get() {
            Some(key) if self.p > 0.0 => {
                let seed = splitmix64(key ^ self.site);
                let keep = keep_mask(&x.size(), seed, self.p, x.device())?;
                let scaled = keep
                    .f_to_kind(x.kind())?
                    .f_mul_scalar(1.0 / (1.0 - self.p))?;
                Ok(x.f_mul(&scaled)?)
            }
            _ => Ok(x.shallow_clone()),
        }
    }
}

/// The keep mask (`true` = kept) of `shape`, a pure function of `seed`:
/// element `i` (row-major) is kept when `hash(i ^ seed) / 2^32 >= p`.
pub fn keep_mask(shape: &[i64], seed: u64, p: f64, device: Device) -> Result<Tensor> {
    const M32: i64 = 0xFFFF_FFFF;
    let n: i64 = shape.iter().product();
    let seed = (seed & 0xFFFF_FFFF) as i64;
    let mut x = Tensor::f_arange(n, (Kind::Int64, device))?
        .f_bitwise_and(M32)?
        .f_bitwise_xor(seed)?;
    // Two rounds of lowbias32-style mixing; operands stay below 2^32 and the
    // multipliers below 2^31, so every product fits in an int64.
    for mult in [0x7FEB_352D_i64, 0x4C6E_A68B_i64] {
        x = x.f_bitwise_xor_tensor(&x.f_bitwise_right_shift_tensor_scalar(16)?)?;
        x = x.f_mul_scalar(mult)?.f_bitwise_and(M32)?;
        x = x.f_bitwise_xor_tensor(&x.f_bitwise_right_shift_tensor_scalar(15)?)?;
    }
    let threshold = (p * 4_294_967_296.0).ceil() as i64;
    Ok(x.f_ge(threshold)?.f_view(shape)?)
}

/// SplitMix64's finaliser: a well-mixed 64-bit function of `z`.
fn splitmix64(z: u64) -> u64 {
    let mut z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_is_a_function_of_its_seed_and_keeps_one_minus_p() {
        let a = keep_mask(&[64, 128], 7, 0.25, Device::Cpu).unwrap();
        let b = keep_mask(&[64, 128], 7, 0.25, Device::Cpu).unwrap();
        let c = keep_mask(&[64, 128], 8, 0.25, Device::Cpu).unwrap();
        assert!(a.equal(&b));
        assert!(!a.equal(&c));
        let kept = a.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
        assert!((kept - 0.75).abs() < 0.02, "kept fraction {kept}");
        // p = 0 keeps everything.
        let all = keep_mask(&[10, 10], 3, 0.0, Device::Cpu).unwrap();
        assert!(all.all().int64_value(&[]) == 1);
    }

    #[test]
    fn dropout_is_off_without_a_key_and_scales_kept_elements() {
        let key = DropoutKey::default();
        let d = LoraDropout::new(0.5, 3, "self_attn.q_proj", key.clone());
        let x = Tensor::ones([4, 32], (Kind::Float, Device::Cpu));
        assert!(d.apply(&x).unwrap().equal(&x));
        key.set(Some(train_key(1, 0)));
        let y = d.apply(&x).unwrap();
        // Kept elements are 1 / (1 - p) = 2, dropped ones 0.
        let two = y.eq(2.0).sum(Kind::Int64).int64_value(&[]);
        let zero = y.eq(0.0).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(two + zero, 128);
        assert!(two > 30 && zero > 30, "{two} kept, {zero} dropped");
        assert!(d.apply(&x).unwrap().equal(&y), "same key, same mask");
        // Another site under the same key draws another mask.
        let e = LoraDropout::new(0.5, 3, "self_attn.k_proj", key.clone());
        assert!(!e.apply(&x).unwrap().equal(&y));
        key.set(None);
        assert!(d.apply(&x).unwrap().equal(&x));
    }
}
