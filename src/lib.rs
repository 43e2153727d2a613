//! `rlsd`: reinforcement learning from verifiable rewards with self-distilled
//! token credit, as an actor runtime on libtorch.
//!
//! The verifier's reward decides the *direction* of every token's update; the
//! same model, shown privileged information (the reference answer), decides
//! its *magnitude* through a clipped, stop-gradient weight
//! `exp(sign(A) * (logp_teacher - logp_student))` ("Self-Distilled RLVR",
//! arXiv 2604.03128). GRPO, OPSD and CEPO run in the same template.
//!
//! # Layout
//!
//! - [`error`]: the crate's error enum; messages name the file, line, key or tensor.
//! - [`device`]: `cpu` / `cuda:N` / `auto` from config strings; libtorch facts.
//! - [`cuda`]: CUDA streams and events (the `gpu` feature's C++ shim; no-ops
//!   on the CPU and without the feature).
//! - [`logging`]: `tracing-subscriber` set up from `RLSD_LOG` or `RUST_LOG`;
//!   colours only on a terminal.
//! - [`progress`]: the progress bar / plain lines of `rlsd train`.
//! - [`process`]: this process's resident and peak memory from `/proc`.
//! - [`hub`]: Hugging Face model ids through the local cache or a download.
//! - [`malloc`]: one glibc malloc arena for the binaries (tensor work hops threads).
//! - [`policy`]: the [`policy::Policy`] trait the train step scores responses with.
//! - [`model`]: Llama / Qwen2 / Qwen3 decoders loading Hugging Face checkpoints,
//!   KV cache, batched generation, token log-probs, tokenizer and chat template.
//! - [`rlsd`]: every formula of the spec, once: group advantages, token credit,
//!   the clipped surrogate, the lambda and learning-rate schedules.
//! - [`data`]: JSONL / Parquet datasets, the data cursor, prompt building, and
//!   the built-in arithmetic task.
//! - [`verify`]: the `Verifier` trait and the math, exact, regex and command verifiers.
//! - [`stats`]: `StepStats`, what a step reports (losses, credit, timings).
//! - [`optim`]: AdamW whose state can be checkpointed.
//! - [`plan`]: the memory model: predicted peak memory per actor and device (`rlsd plan`).
//! - [`pipeline`]: the stages of a step over typed batches (RolloutBatch ->
//!   ScoredBatch -> TeacherBatch -> CreditBatch), `StepPlan`, `step_stats`.
//! - [`train`]: `train_step`: forward, loss, backward, clip, AdamW; no actors.
//! - [`dist`]: data-parallel ranks: c10d Gloo (CPU) / NCCL (GPU) process
//!   groups, bucketed gradient all-reduce, the `--nproc` / `--gpus` launcher.
//! - [`pretrain`]: supervised warm-up that makes the built-in task's base model.
//! - [`config`]: the TOML run configuration; unknown keys are errors.
//! - [`config_checks`]: range checks of numeric keys no section validator covers.
//! - [`config_show`]: `rlsd config show`, unset optional keys included as comments.
//! - [`preflight`]: start-up checks of a run (verifier program, prompt lengths,
//!   data enough for the steps, memory plan) before its folder is touched.
//! - [`actors`]: the six supervised actors and their messages.
//! - [`checkpoint`]: atomic, checksummed checkpoint directories; keep-last pruning.
//! - [`metrics`]: `metrics.jsonl` writer (resume-safe) and a tolerant reader.
//! - [`plot`]: `plotters` line charts (SVG, PNG) of metrics against the step.
//! - [`observe`]: TensorBoard event files, `completions.jsonl`, the HTML run report.
//! - [`inspect`]: per-token credit (`Ahat_t` vs `A`) as HTML or ANSI text.
//! - [`commands`]: the work behind `rlsd inspect`, `eval`, `generate` and `plot`.
//!
//! Build notes: `tch` is pinned to 0.24.0 (libtorch 2.11.0), provisioned by
//! `scripts/setup.sh`; `build.rs` embeds an rpath so binaries run without
//! `LD_LIBRARY_PATH` and keeps `libtorch_cuda.so` linked on CUDA builds.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod actors;
pub mod checkpoint;
pub mod commands;
pub mod config;
pub mod config_checks;
pub mod config_show;
pub mod cuda;
pub mod data;
pub mod device;
pub mod dist;
pub mod error;
pub mod hub;
pub mod inspect;
pub mod logging;
pub mod malloc;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod optim;
pub mod pipeline;
pub mod plan;
pub mod plot;
pub mod policy;
pub mod preflight;
pub mod pretrain;
pub mod process;
pub mod progress;
pub mod rlsd;
pub mod stats;
pub mod train;
pub mod verify;

pub use error::{Error, Result};
/// The `tch` this crate is built against (0.24.0, libtorch 2.11): embedding
/// programs use `rlsd::tch` instead of pinning their own copy.
pub use tch;
