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
//! - [`commit`]: the optimizer's committed state and what it publishes.
//! - [`pinned`]: the policy versions in flight, carried by a checkpoint.
//! - [`shared`]: the read-only run context (config, peers, event sink).
//! - [`streams`]: the CUDA stream of each GPU actor (none on the CPU).
//! - [`messages`] and one file per actor.
//! - The stages themselves are in [`crate::pipeline`]; the plain loop the
//!   runtime is tested against, the prompt source, the run folder and
//!   validation are in [`crate::run`], which this layer stands on.

pub mod commit;
pub mod credit;
pub mod messages;
pub mod optimizer;
pub mod pinned;
pub mod replica;
pub mod runtime;
pub mod sampler;
pub mod scheduler;
pub mod shared;
pub mod stop;
pub mod streams;
pub mod supervisor;
pub mod teacher;
pub mod verifier;

pub use crate::fault::{FaultPlan, Role};
pub use crate::run::source::PromptSource;
pub use runtime::{RunReport, Runtime, RuntimeBuilder};
pub use stop::StopHandle;
