//! Moved: the stage functions live in [`crate::pipeline`]. These names stay
//! here for code written against the old path.

pub use crate::pipeline::{
    needs_teacher_pass, step_seed, teacher_prompt_ids, tokenizer_of, verify_one,
};
