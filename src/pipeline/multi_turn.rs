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
use crate::env::environment::{step_with_timeout, with_timeout, Outcome, Reply, Session, Started};
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
) -> Result<Vec<PlayedEpisode>> {
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
            let started = with_timeout(env.start(&ex), timeout, &counters).await;
            EnvEvent::Started(e, started)
        });
    }
    generate_turns(lm, &opts.generate, Some(tokenizer), rows, &mut driver)?;
    if driver.in_flight > 0 {
        return Err(Error::InvalidInput(format!(
            "multi-turn rollout ended with {} environment calls in flight",
            driver.in_flight
        )));
    }
    driver
        .episodes
        .into_iter()
        .enumerate()
        .map(|(e, p)| {
            let outcome = p.outcome.ok_or_else(|| {
                Error::InvalidInput(format!("episode {e} ended without an outcome"))
            })?;
            let episode = p.builder.map(EpisodeBuilder::finish).unwrap_or_default();
            Ok(PlayedEpisode { episode, outcome })
        })
        .collect()
}

/// What an environment call sends back to the decoding thread.
enum EnvEvent {
    /// `start` answered (or failed: the episode's outcome).
    Started(usize, std::result::Result<Started, Outcome>),
    /// `step` answered; the session comes back with the reply.
    Replied(usize, Box<dyn Session>, Reply),
    /// The episode is over (`finish` answered, or a call panicked).
    Over(usize, Outcome),
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
                    EnvEvent::Over(e, Outcome::new(Verdict::wrong(why)))
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
            EnvEvent::Started(e, Ok(Started { opening, session })) => {
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
                self.next_turn(e);
            }
            EnvEvent::Started(e, Err(outcome)) | EnvEvent::Over(e, outcome) => {
                self.episodes[e].outcome = Some(outcome);
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
                        let outcome = match with_timeout(session.finish(), timeout, &counters).await
                        {
                            Ok(o) | Err(o) => o,
                        };
                        EnvEvent::Over(e, outcome)
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
            let reply = step_with_timeout(session.as_mut(), &text, timeout, &counters).await;
            EnvEvent::Replied(e, session, reply)
        });
        Ok(())
    }
}
