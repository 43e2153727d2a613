//! Environments: multi-turn episodes, tool calls, and batched async rewards.
//!
//! - [`episode`]: an [`Episode`] is a list of given and generated segments;
//!   only generated tokens are trained (the loss mask).
//! - [`environment`]: the async [`Environment`] trait (start an episode from an
//!   example, answer each model turn, end with a reward), per-call timeouts,
//!   and the text-level turn loop [`play_text`].
//! - [`reward`]: [`GroupReward`], a whole group scored at once; the adapter
//!   from the synchronous [`crate::verify::Verifier`]; weighted sums with
//!   per-function metrics.
//! - [`tool_call`]: tool calls in the model's own format (Qwen/Hermes, Llama 3.1 JSON).
//! - [`chat`]: an episode's given text through the chat template, turn by turn.
//! - [`assemble`]: a token-level [`Episode`] built turn by turn from sampled
//!   tokens and the environment's messages.
//! - [`crate::worker`]: long-lived JSON-lines worker processes (many requests in
//!   flight, restart on crash, per-request timeout).
//! - [`command`]: an environment served by such a process.
//! - [`calculator`]: the built-in agent task's calculator tool, in Rust.

pub mod assemble;
pub mod calculator;
pub mod chat;
pub mod command;
pub mod environment;
pub mod episode;
pub mod reward;
pub mod tool_call;

pub use crate::worker::{Worker, WorkerConfig, WorkerError};
pub use assemble::{EpisodeBuilder, SampledTurn};
pub use calculator::CalculatorEnvironment;
pub use command::CommandEnvironment;
pub use environment::{
    play_text, step_with_timeout, with_timeout, BoxFuture, EnvCounters, Environment, Message,
    Opening, Outcome, Reply, Session, Started, Transcript,
};
pub use episode::{Episode, GivenKind, Segment};
pub use reward::{build_group_reward, GroupReward, GroupScores, VerifierReward, WeightedRewards};
pub use tool_call::{ParsedTurn, ToolCall, ToolFormat};
