//! The train step: forward, RLSD loss, backward, clip, AdamW (see issue: RLSD math).
