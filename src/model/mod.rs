//! Decoder-only transformers that load Hugging Face checkpoints (see issue: models).
