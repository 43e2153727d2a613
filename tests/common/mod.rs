//! Helpers shared by integration tests (`mod common;` in a test file).

use std::path::Path;

/// Pretrain a one-layer, 32-wide model on the built-in task for three steps
/// into `out`: a real Hugging Face folder in well under a second, for tests
/// that need a model but not a good one.
pub fn pretrain_tiny(out: &Path) {
    let cfg = rlsd::pretrain::PretrainConfig {
        out_dir: out.to_path_buf(),
        model: rlsd::pretrain::ModelShape {
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_key_value_heads: 1,
        },
        max_steps: 3,
        batch_size: 4,
        warmup_steps: 1,
        eval_problems: 1,
        eval_max_new_tokens: 4,
        log_every: 0,
        ..Default::default()
    };
    rlsd::pretrain::pretrain(&cfg).unwrap();
}
