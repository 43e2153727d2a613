//! The layer that runs steps, below every front end (the actor runtime, the
//! data-parallel ranks and the CLI commands all stand on it):
//!
//! - [`sequential`]: the step loop and its hooks ([`sequential::StepHooks`]),
//!   the plain single-threaded reference the actor runtime is tested against;
//! - [`source`]: where prompts come from ([`PromptSource`]);
//! - [`folder`]: the run folder: its lock, a fresh start (`--overwrite`) and
//!   the checkpoint a `--resume` names;
//! - [`resume`]: what a checkpoint's state says, the metrics lines it
//!   restores, and the shape check against `[model]`;
//! - [`record`]: where each committed step's stats go, once, in order;
//! - [`preflight`]: start-up checks (verifier program, prompt lengths, data
//!   enough for the steps, memory plan) before the run folder is touched;
//! - [`final_model`]: `<out_dir>/final/`, the last checkpoint's model as a
//!   Hugging Face folder, written atomically at the end of a run;
//! - [`evaluate`]: `rlsd eval`'s engine and the held-out validation a run
//!   logs;
//! - [`vision_train`]: `rlsd train` with a vision-language policy (the
//!   sequential loop with the VL sampler and teacher stages), and
//!   [`vision_validate`], its held-out validation.

pub mod evaluate;
pub mod final_model;
pub mod folder;
pub mod preflight;
pub mod record;
pub mod resume;
pub mod sequential;
pub mod source;
pub mod vision_train;
pub mod vision_validate;

pub use source::PromptSource;
