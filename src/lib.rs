//! `rlsd`: reinforcement learning from verifiable rewards with self-distilled
//! token credit, as an actor runtime on libtorch.
//!
//! The verifier's reward decides the *direction* of every token's update; the
//! same model, shown privileged information (the reference answer), decides
//! its *magnitude* through a clipped, stop-gradient weight
//! `exp(sign(A) * (logp_teacher - logp_student))` ("Self-Distilled RLVR",
//! arXiv 2604.03128). GRPO, OPSD and CEPO run in the same template.
//!
//! # Layers
//!
//! Each layer imports only the layers below it (`scripts/import_graph.py`
//! checks it: no import points back up, no cycle outside `verify/math`); only
//! `main.rs` imports [`commands`].
//!
//! ```text
//! main.rs                    parse arguments, dispatch
//! commands/                  one file per CLI command: print, write, exit codes
//! actors/  distributed/      front ends that run steps: the supervised actor tree
//!                            (overlap, restarts) and the data-parallel ranks
//! run/                       the step loop and its hooks, prompt source, run folder
//!                            (lock, resume, overwrite), step recorder, evaluation
//! observe/                   TensorBoard, completions log, charts, inspection, report
//! pipeline/                  a step's stages over typed batches (StepPlan .. StepStats)
//! train/                     the train step; its gradient-sync seam (GradSync)
//! memory  pretrain           the memory model (`rlsd plan`); the built-in base model
//! plot  progress             charts from series; the progress bar
//! config                     the run's TOML: sections owned here or below
//! stats                      StepStats and the one per-response record (ResponseRecord)
//! checkpoint                 atomic, checksummed checkpoint folders
//! verify  env                rewards (Verifier); episodes, environments, tools, workers
//! data                       datasets, prompts, the built-in task
//! model                      transformers, KV cache, generation, tokenizer
//! rlsd                       every formula of the spec, once
//! policy  optim              the Policy trait; AdamW
//! error fault device cuda process malloc logging hub metrics worker   ground floor
//! ```
//!
//! # One batch's path (the sequential loop, [`run::sequential::run_steps`])
//!
//! ```text
//! run::sequential   plan the step ─────────────────────────────────► pipeline::StepPlan::new
//! pipeline::stages  rollout (model::generate) ─► RolloutBatch
//!                   verify_all (verify::Verifier) ─► ScoredBatch
//!                   teacher_pass (model::token_logprobs) ─► TeacherBatch
//!                   assign_credit (rlsd::group_advantages) ─► CreditBatch
//! train             train_step: agree, backward each micro-batch
//!                   (train::micro_batch_loss -> rlsd::policy_loss), reduce, clip,
//!                   optim::AdamW::step ─► StepStats
//! pipeline::stats   step_stats (+ pipeline::sample_completions records)
//! run::record       StepRecorder: metrics.jsonl, observe::Observer, on_step
//! ```
//!
//! The actor runtime ([`actors`]) runs the same stage functions, one actor
//! each, and the ranks ([`distributed`]) run `run_steps` with their hooks.
//! docs/ARCHITECTURE.md has the same on one page.
//!
//! # Modules
//!
//! - [`error`], [`fault`] (rehearsed failures), [`worker`] (long-lived JSON-lines
//!   processes), [`device`], [`cuda`], [`process`],
//!   [`malloc`], [`logging`], [`hub`] (Hugging Face ids), [`metrics`] (`metrics.jsonl`).
//! - [`policy`]: the [`policy::Policy`] trait the train step scores responses
//!   with; [`optim`]: AdamW whose state can be checkpointed.
//! - [`rlsd`]: group advantages, token credit, the clipped surrogate, the
//!   lambda and learning-rate schedules, the distillation terms.
//! - [`model`]: Llama / Qwen2 / Qwen3 decoders loading Hugging Face checkpoints.
//! - [`data`]: JSONL / Parquet datasets, prompts, the built-in arithmetic task.
//! - [`verify`]: the `Verifier` trait and the built-in verifiers.
//! - [`env`]: episodes of given and generated segments, async environments,
//!   batched rewards, tool calls, long-lived JSON-lines workers.
//! - [`checkpoint`], [`stats`], [`config`], [`plot`], [`progress`], [`memory`],
//!   [`pretrain`], [`train`], [`pipeline`], [`observe`], [`run`], [`actors`],
//!   [`distributed`], [`commands`]: as in the layer table above.
//!
//! The embedding API: [`actors::Runtime`] (`Runtime::builder(cfg)`; stop it
//! from code with [`actors::StopHandle`], every response in
//! `on_step_responses`, the final weights as a Hugging Face folder with
//! `RunReport::save_pretrained`; docs/AGENTS.md),
//! [`verify::Verifier`], [`policy::Policy`], [`run::PromptSource`] (also at
//! `actors::PromptSource`) and [`stats::StepStats`].
//!
//! Build notes: `tch` is pinned to 0.24.0 (libtorch 2.11.0), provisioned by
//! `scripts/setup.sh`; `build.rs` embeds an rpath so binaries run without
//! `LD_LIBRARY_PATH` and keeps `libtorch_cuda.so` linked on CUDA builds.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod actors;
pub mod checkpoint;
pub mod commands;
pub mod config;
pub mod cuda;
pub mod data;
pub mod device;
pub mod distributed;
pub mod env;
pub mod error;
pub mod fault;
pub mod hub;
pub mod logging;
pub mod malloc;
pub mod memory;
/// The memory model's former name.
pub use memory as plan;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod optim;
pub mod pipeline;
pub mod plot;
pub mod policy;
pub mod pretrain;
pub mod process;
pub mod progress;
pub mod rlsd;
pub mod run;
pub mod stats;
pub mod train;
pub mod verify;
pub mod worker;

pub use error::{Error, Result};
/// The `tch` this crate is built against (0.24.0, libtorch 2.11): embedding
/// programs use `rlsd::tch` instead of pinning their own copy.
pub use tch;
