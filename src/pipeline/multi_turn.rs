//! Multi-turn rollouts under continuous batching ([`play_episodes`]): many
//! episodes at once, each turn a row of [`generate_turns`].
//!
//! A row whose turn ended (EOS, a stop string such as `</tool_call>`, or
//! the turn's token limit) leaves the batch at once and its turn goes to the
//! environment; environment calls run concurrently as tokio tasks, each
//! under the turn timeout (a call that times out, fails or panics ends its
//! episode with reward 0 and is counted in [`EnvCounters`]). When the
//! environment's answer arrives it is appended through [`EpisodeBuilder`]
//! and the episode's next turn is admitted into a free row, its whole
//! context prefilled again. Episode `e`'s turn `k` samples from
//! `StdRng::seed_from_u64(seeds[e] + k)`, as [`super::episodes::play_episode`]
//! does, so both give the same episodes (tests/env_multi_turn.rs).

use super::episodes::{EpisodeOptions, PlayedEpisode};
use crate::data::Example;
use crate::env::chat::EpisodeChat;
use crate::env::environment::{with_timeout, Opening, Outcome, Reply, Session, Started};
use crate::env::{EnvCounters, Environment, EpisodeBuilder, GivenKind, SampledTurn};
use crate::error::{Error, Result};
use crate::model::CausalLm;
use crate::model::{generate_turns, ChatTemplate, Generation, Tokenizer, TurnRequest, TurnSource};
use crate::verify::Verdict;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use tokio::runtime::Handle;

/// The chat template an episode's text goes through (the tools come from
/// each episode's opening).
#[derive(Debug, Clone, Copy)]
pub struct ChatSetup<'t> {
    /// The model's chat template.
    pub template: &'t ChatTemplate,
    /// The tokenizer's BOS text, passed to the template.
    pub bos: Option<&'t str>,
    /// The tokenizer's EOS text, passed to the template.
    pub eos: Option<&'t str>,
}

/// Where the environment's calls run and how they are counted.
#[derive(Clone)]
pub struct EnvRuntime {
    /// The environment.
    pub env: Arc<dyn Environment>,
    /// The tokio runtime its calls are spawned on.
    pub handle: Handle,
    /// Timed-out and failed calls (each scores its episode 0).
    pub counters: Arc<EnvCounters>,
}

impl std::fmt::Debug for EnvRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvRuntime")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// Play one episode per example (`examples[e]`, base seed `seeds[e]`) with
/// at most `rows` turns decoding at once; the episodes in the same order.
///
/// Blocks the calling thread while environment calls are in flight: call it
/// from a plain or blocking thread (the sampler's model thread), never from
/// inside an async task of `rt.handle`.
#[allow(clippy::too_many_arguments)]
pub fn play_episodes(
    lm: &CausalLm,
    tokenizer: &Tokenizer,
    chat: ChatSetup<'_>,
    rt: &EnvRuntime,
    examples: &[Example],
    seeds: &[u64],
    opts: &EpisodeOptions,
    rows: usize,
) -> Result<PlayedBatch> {
    if seeds.len() != examples.len() {
        return Err(Error::InvalidInput(format!(
            "{} episodes need {} seeds, got {}",
            examples.len(),
            examples.len(),
            seeds.len()
        )));
    }
    let (tx, rx) = mpsc::channel();
    let mut driver = Driver {
        tokenizer,
        chat,
        rt,
        opts,
        seeds,
        tx,
        rx,
        episodes: examples.iter().map(|_| Playing::default()).collect(),
        turn_owner: Vec::new(),
        ready: Vec::new(),
        in_flight: 0,
    };
    for (e, ex) in examples.iter().enumerate() {
        let (env, ex, timeout) = (rt.env.clone(), ex.clone(), opts.env_timeout);
        let counters = rt.counters.clone();
        driver.spawn(e, async move {
            match with_timeout(env.start(&ex), timeout, &counters).await {
                Ok(started) => EnvEvent::Started(e, started),
                Err(outcome) => EnvEvent::Failed(e, outcome),
            }
        });
    }
    generate_turns(lm, &opts.generate, Some(tokenizer), rows, &mut driver)?;
    if driver.in_flight > 0 {
        return Err(Error::InvalidInput(format!(
            "multi-turn rollout ended with {} environment calls in flight",
            driver.in_flight
        )));
    }
    let mut out = PlayedBatch {
        episodes: Vec::with_capacity(examples.len()),
        env_failed: Vec::with_capacity(examples.len()),
    };
    for (e, p) in driver.episodes.into_iter().enumerate() {
        let outcome = p
            .outcome
            .ok_or_else(|| Error::InvalidInput(format!("episode {e} ended without an outcome")))?;
        let episode = p.builder.map(EpisodeBuilder::finish).unwrap_or_default();
        out.episodes.push(PlayedEpisode {
            episode,
            outcome,
            opening: p.opening,
        });
        out.env_failed.push(p.env_failed);
    }
    Ok(out)
}

/// The episodes of [`play_episodes`], in the order of its examples.
#[derive(Debug, Clone)]
pub struct PlayedBatch {
    /// Each episode and its outcome (an episode whose start failed has no tokens).
    pub episodes: Vec<PlayedEpisode>,
    /// Whether each ended on an environment call that timed out, failed or
    /// panicked (scored 0, also counted in [`EnvRuntime::counters`]).
    pub env_failed: Vec<bool>,
}

/// What an environment call sends back to the decoding thread.
enum EnvEvent {
    /// `start` answered (or failed: the episode's outcome).
    Started(usize, Started),
    /// `step` answered; the session comes back with the reply.
    Replied(usize, Box<dyn Session>, Reply),
    /// The episode is over (`finish` answered).
    Over(usize, Outcome),
    /// A call timed out, failed or panicked: the episode is over with reward 0.
    Failed(usize, Outcome),
}

/// One episode in play.
#[derive(Default)]
struct Playing<'a> {
    /// Its tokens so far (`None` until `start` answered, or if it failed).
    builder: Option<EpisodeBuilder<'a>>,
    /// Its session, while no call holds it.
    session: Option<Box<dyn Session>>,
    /// Model turns played.
    turns: usize,
    /// How it ended.
    outcome: Option<Outcome>,
    /// How the environment opened it.
    opening: Option<Opening>,
    /// Whether it ended on an environment call that timed out, failed or panicked.
    env_failed: bool,
}

/// The [`TurnSource`] of [`play_episodes`].
struct Driver<'a, 'r> {
    tokenizer: &'a Tokenizer,
    chat: ChatSetup<'a>,
    rt: &'r EnvRuntime,
    opts: &'r EpisodeOptions,
    seeds: &'r [u64],
    tx: mpsc::Sender<EnvEvent>,
    rx: mpsc::Receiver<EnvEvent>,
    episodes: Vec<Playing<'a>>,
    /// The episode of each turn handed to the decoding loop, by turn number.
    turn_owner: Vec<usize>,
    /// Turns ready for the decoding loop.
    ready: Vec<TurnRequest>,
    /// Environment calls not yet answered.
    in_flight: usize,
}

impl<'a> Driver<'a, '_> {
    /// Run `call` on the tokio runtime; its event comes back over the
    /// channel (a panic inside it ends episode `e` with reward 0).
    fn spawn(&mut self, e: usize, call: impl Future<Output = EnvEvent> + Send + 'static) {
        let (tx, counters, handle) = (
            self.tx.clone(),
            self.rt.counters.clone(),
            self.rt.handle.clone(),
        );
        self.in_flight += 1;
        self.rt.handle.spawn(async move {
            let event = match handle.spawn(call).await {
                Ok(event) => event,
                Err(err) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    let why = format!("environment call failed: {err}");
                    EnvEvent::Failed(e, Outcome::new(Verdict::wrong(why)))
                }
            };
            // The receiver is gone only when the rollout already failed.
            let _ = tx.send(event);
        });
    }

    /// Queue episode `e`'s next turn.
    fn next_turn(&mut self, e: usize) {
        let p = &self.episodes[e];
        if let Some(b) = &p.builder {
            self.ready.push(TurnRequest {
                context: b.context_ids(),
                seed: self.seeds[e].wrapping_add(p.turns as u64),
            });
            self.turn_owner.push(e);
        }
    }

    /// Apply one environment answer.
    fn on_event(&mut self, event: EnvEvent) -> Result<()> {
        self.in_flight -= 1;
        match event {
            EnvEvent::Started(e, Started { opening, session }) => {
                let chat = EpisodeChat::new(
                    self.chat.template,
                    opening.tools.clone(),
                    self.chat.bos.map(str::to_string),
                    self.chat.eos.map(str::to_string),
                );
                let builder = EpisodeBuilder::start(self.tokenizer, chat, &opening)?;
                let p = &mut self.episodes[e];
                p.builder = Some(builder);
                p.session = Some(session);
                p.opening = Some(opening);
                self.next_turn(e);
            }
            EnvEvent::Over(e, outcome) => {
                self.episodes[e].outcome = Some(outcome);
            }
            EnvEvent::Failed(e, outcome) => {
                self.episodes[e].outcome = Some(outcome);
                self.episodes[e].env_failed = true;
            }
            EnvEvent::Replied(e, _, Reply::Done(outcome)) => {
                self.episodes[e].outcome = Some(outcome);
            }
            EnvEvent::Replied(e, session, Reply::Continue(messages)) => {
                let kind = if messages.iter().any(|m| m.role == "tool") {
                    GivenKind::ToolResult
                } else {
                    GivenKind::Observation
                };
                let p = &mut self.episodes[e];
                if let Some(b) = p.builder.as_mut() {
                    b.environment(&messages, kind)?;
                }
                if p.turns < self.opts.max_turns {
                    p.session = Some(session);
                    self.next_turn(e);
                } else {
                    let (timeout, counters) = (self.opts.env_timeout, self.rt.counters.clone());
                    self.spawn(e, async move {
                        let mut session = session;
                        match with_timeout(session.finish(), timeout, &counters).await {
                            Ok(o) => EnvEvent::Over(e, o),
                            Err(o) => EnvEvent::Failed(e, o),
                        }
                    });
                }
            }
        }
        Ok(())
    }
}

impl TurnSource for Driver<'_, '_> {
    fn next_turns(&mut self, wait: bool) -> Result<Vec<TurnRequest>> {
        loop {
            while let Ok(event) = self.rx.try_recv() {
                self.on_event(event)?;
            }
            if !wait || !self.ready.is_empty() || self.in_flight == 0 {
                return Ok(std::mem::take(&mut self.ready));
            }
            let event = self
                .rx
                .recv()
                .map_err(|_| Error::InvalidInput("environment calls stopped answering".into()))?;
            self.on_event(event)?;
        }
    }

    fn turn_done(&mut self, id: usize, g: Generation) -> Result<()> {
        let e = *self
            .turn_owner
            .get(id)
            .ok_or_else(|| Error::InvalidInput(format!("turn {id} was never handed out")))?;
        let version = self.opts.policy_version;
        let p = &mut self.episodes[e];
        let (Some(builder), Some(mut session)) = (p.builder.as_mut(), p.session.take()) else {
            return Err(Error::InvalidInput(format!(
                "episode {e}: a turn finished while its environment held it"
            )));
        };
        let text = builder.model_turn(SampledTurn {
            token_ids: g.tokens,
            sampling_logprobs: g.logprobs,
            policy_version: version,
        })?;
        p.turns += 1;
        let (timeout, counters) = (self.opts.env_timeout, self.rt.counters.clone());
        self.spawn(e, async move {
            match with_timeout(session.step(&text), timeout, &counters).await {
                Ok(reply) => EnvEvent::Replied(e, session, reply),
                Err(outcome) => EnvEvent::Failed(e, outcome),
            }
        });
        Ok(())
    }
}
