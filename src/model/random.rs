//! Random models of a given shape, for benchmarks: the one place the bench
//! binaries (`bench_memory`, `bench_generate`, `bench_model`) build them.

use super::config::{Arch, Config};
use super::LoadedModel;
use crate::error::Result;
use tch::Device;

/// A Qwen2-shaped configuration: vocabulary `vocab`, hidden size `hidden`,
/// `layers` decoder layers, heads of 64 (`hidden / 64` query heads, half as
/// many key/value heads), SwiGLU width `4 x hidden`, tied embeddings, q/k/v
/// biases, no end-of-sequence id, 4,096 positions.
pub fn qwen2_shaped(vocab: i64, hidden: i64, layers: i64) -> Config {
    Config {
        arch: Arch::Qwen2,
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: hidden * 4,
        num_hidden_layers: layers,
        num_attention_heads: (hidden / 64).max(1),
        num_key_value_heads: (hidden / 128).max(1),
        head_dim: 64.min(hidden),
        tie_word_embeddings: true,
        qkv_bias: true,
        eos_token_id: vec![],
        max_position_embeddings: 4096,
        ..Config::tiny()
    }
}

/// A float32 [`qwen2_shaped`] model with seeded random weights
/// ([`LoadedModel::random`]).
pub fn random_qwen2(
    vocab: i64,
    hidden: i64,
    layers: i64,
    device: Device,
    seed: u64,
) -> Result<LoadedModel> {
    LoadedModel::random(qwen2_shaped(vocab, hidden, layers), device, seed)
}
