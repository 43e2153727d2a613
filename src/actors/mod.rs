//! The actor runtime: scheduler, sampler, verifier pool, teacher-scorer,
//! credit-assigner and optimizer under a supervisor (DESIGN.md, "Pipeline").
//!
//! ```text
//! scheduler --StepPlan--> sampler --RolloutBatch--> verifier --ScoredBatch--> teacher
//!     ^                      ^                                                   |
//!     | StepDone             | Committed (every step)                  TeacherBatch
//!     |                      |                                                   v
//! optimizer <----------CreditBatch------------------------------------------ credit
//!     '--------- Committed (teacher weights every teacher_sync_interval) --> teacher
//! ```
//!
//! Each actor owns its state, built in `pre_start` from arguments the
//! supervisor keeps ([`supervisor::Tree`]); a respawn rebuilds it from the
//! same arguments and the optimizer's last published commit ([`commit`]).
//! No actor reads another's state.
//!
//! - [`runtime`]: the embedding API ([`Runtime`]) and the run loop.
//! - [`sequential`]: the same stages as one plain loop (the reference the
//!   runtime is tested against).
//! - [`commit`]: the optimizer's committed state and what it publishes.
//! - [`shared`]: the read-only run context (config, peers, event sink).
//! - [`streams`]: the CUDA stream of each GPU actor (none on the CPU).
//! - [`messages`], [`fault`], [`source`], [`run_folder`], and one file per actor.
//! - The stages themselves are in [`crate::pipeline`] ([`stages`] re-exports
//!   a few old names).

pub mod commit;
pub mod credit;
pub mod fault;
pub mod messages;
pub mod optimizer;
pub mod replica;
pub mod run_folder;
pub mod runtime;
pub mod sampler;
pub mod scheduler;
pub mod sequential;
pub mod shared;
pub mod source;
pub mod stages;
pub mod streams;
pub mod supervisor;
pub mod teacher;
pub mod verifier;

pub use fault::{FaultPlan, Role};
pub use runtime::{RunReport, Runtime};
pub use source::PromptSource;
