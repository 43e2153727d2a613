//! The actor runtime: scheduler, sampler, verifier pool, teacher-scorer,
//! credit-assigner and optimizer under a supervisor (DESIGN.md, "Pipeline").
//!
//! ```text
//! scheduler --StepPlan--> sampler --Batch--> verifier --Batch--> teacher
//!     ^                      ^                                      |
//!     | StepDone             | WeightSnapshot (every step)          v
//! optimizer <------------Batch------------- credit <------------Batch
//!     '--------- WeightSnapshot (every teacher_sync_interval) --> teacher
//! ```
//!
//! - [`runtime`]: the embedding API ([`Runtime`]) and the run loop.
//! - [`sequential`]: the same stages as one plain loop (the reference the
//!   runtime is tested against).
//! - [`stages`]: the work of each stage as plain functions.
//! - [`ctx`]: what a run's actors share, including the vaults that let a
//!   respawned actor continue from its last state.
//! - [`messages`], [`fault`], [`source`], and one file per actor.

pub mod credit;
pub mod ctx;
pub mod fault;
pub mod messages;
pub mod optimizer;
pub mod run_folder;
pub mod runtime;
pub mod sampler;
pub mod scheduler;
pub mod sequential;
pub mod source;
pub mod stages;
pub mod supervisor;
pub mod teacher;
pub mod verifier;

pub use fault::{FaultPlan, Role};
pub use runtime::{RunReport, Runtime};
pub use source::PromptSource;
