//! AdamW with checkpointable state.
