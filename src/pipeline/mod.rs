//! The stages of one training step as plain functions over typed batches
//! (DESIGN.md, "Pipeline"): the actors call them one stage each, and the
//! sequential loop ([`crate::run::sequential`]), `rlsd inspect` and the
//! tests call them in order with [`prepare_step`].
//!
//! ```text
//! StepPlan::new ─rollout─► RolloutBatch ─verify─► ScoredBatch ─teacher_pass─► TeacherBatch
//!     ─assign_credit─► CreditBatch ─train_batch─► train_step ─step_stats─► StepStats
//! ```
//!
//! - [`plan`]: [`StepPlan::new`], the one place that decides a step's
//!   constants and whether it needs the teacher.
//! - [`batch`]: one type per stage.
//! - [`stages`]: the stage functions.
//! - [`stats`]: [`step_stats`], the one place that assembles [`crate::stats::StepStats`].
//! - [`records`]: the per-response records (token credit) a step hands its observers.
//! - [`episodes`]: multi-turn rollouts with an environment, one episode at a time.
//! - [`multi_turn`]: many episodes at once under continuous batching;
//!   [`episode_rollout`]: the sampler's stage with an environment;
//!   [`env_config`]: the environment an `[env]` section names.

pub mod batch;
pub mod env_config;
pub mod episode_rollout;
pub mod episodes;
pub mod leakage;
pub mod leakage_probe;
pub mod multi_turn;
pub mod plan;
pub mod records;
pub mod stages;
pub mod stats;
pub mod vision;

pub use batch::{
    CreditBatch, EpisodeRollout, Rollout, RolloutBatch, Score, ScoredBatch, TeacherBatch,
    TeacherScores,
};
pub use plan::{needs_teacher_pass, observe_step, required_teacher_version, step_seed, StepPlan};
pub use records::sample_completions;
pub use stages::{
    algo_for, assign_credit, prepare_step, rollout, sample_and_verify, split_sdpo_candidates,
    teach_and_credit, teacher_pass, teacher_prompt_ids, tokenizer_of, verify_all, verify_one,
};
pub use stats::step_stats;
