//! Tool use in pretraining: worked solutions that call the calculator, and
//! held-out episodes played against it.
//!
//! A tool-use solution is an episode of the built-in agent task
//! (`env::CalculatorEnvironment`) written by hand: the model's first turn is
//! one call in the Hermes format,
//! `<tool_call>{"name": "calculator", "arguments": {"expression": "12+7-5"}}</tool_call>`,
//! the calculator answers with the value as a `tool` message, and the model's
//! second turn states it (`Answer: 14`, then EOS). The episode is assembled
//! by the same code an RL run uses ([`EpisodeBuilder`] over the model's chat
//! template), so the pretraining tokens are exactly the context the sampler
//! will continue from; its loss mask is 1 on the two model turns and 0 on the
//! given text between them (the template's turn end, the tool turn and the
//! next generation prompt), which is context, not a target.
//!
//! A flawed tool-use solution copies one operand of the expression wrongly
//! (off by 1 to 3) and states the calculator's value of that expression:
//! the tool is exact, the copy is not, and RL has something to fix.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use rand::rngs::StdRng;
use rand::Rng;

use crate::data::task::Problem;
use crate::data::Example;
use crate::env::chat::EpisodeChat;
use crate::env::{
    CalculatorEnvironment, Episode, EpisodeBuilder, GivenKind, Reply, SampledTurn, Session,
    ToolFormat,
};
use crate::error::{Error, Result};
use crate::model::{generate_with, GenerateOptions, LoadedModel, Tokenizer};

/// The calculator call of `expression`, as the model writes it.
pub fn tool_call_text(expression: &str) -> String {
    format!(
        "<tool_call>{{\"name\": \"calculator\", \"arguments\": {{\"expression\": \"{expression}\"}}}}</tool_call>"
    )
}

/// `problem`'s expression with one operand off by 1 to 3 (never below 0):
/// a copying slip.
pub fn flawed_expression(problem: &Problem, rng: &mut StdRng) -> String {
    let mut flawed = problem.clone();
    let at = rng.random_range(0..flawed.operands.len());
    let magnitude = rng.random_range(1..=3);
    let value = flawed.operands[at];
    flawed.operands[at] = if rng.random_bool(0.5) || value < magnitude {
        value + magnitude
    } else {
        value - magnitude
    };
    flawed.expression()
}

/// Run a future that never waits (the calculator environment's calls are
/// ready at once) without an async runtime: `rlsd pretrain` may itself run
/// inside one, where blocking on another is refused.
fn ready<F: Future>(future: F) -> Result<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(v) => Ok(v),
        Poll::Pending => Err(Error::Runtime(
            "the calculator environment waited on something; pretraining expects its calls to be ready at once"
                .into(),
        )),
    }
}

/// One agent episode of `example` against the calculator: the opening and
/// the session that answers the model's turns.
fn start_episode<'t>(
    tokenizer: &'t Tokenizer,
    example: &Example,
) -> Result<(EpisodeBuilder<'t>, Box<dyn Session>)> {
    let template = tokenizer.chat_template().ok_or_else(|| {
        Error::InvalidInput("tool-use pretraining needs a tokenizer with a chat template".into())
    })?;
    let env = CalculatorEnvironment::default();
    let started = ready(crate::env::Environment::start(&env, example))??;
    let (bos, eos) = tokenizer.bos_eos_text();
    let chat = EpisodeChat::new(
        template,
        started.opening.tools.clone(),
        bos.map(str::to_string),
        eos.map(str::to_string),
    );
    let builder = EpisodeBuilder::start(tokenizer, chat, &started.opening)?;
    Ok((builder, started.session))
}

/// A model turn written by hand (log-probs 0: nobody sampled it).
fn written_turn(token_ids: Vec<i64>) -> SampledTurn {
    let n = token_ids.len();
    SampledTurn {
        token_ids,
        sampling_logprobs: vec![0.0; n],
        policy_version: 0,
    }
}

/// The tool-use episode of `problem` whose call evaluates `expression` (the
/// problem's own, or a flawed copy): call, tool result, `Answer: <value>` and
/// EOS. The response is every token after the prompt; use
/// [`Episode::response_ids`] and [`Episode::response_loss_mask`].
pub fn tool_use_episode(
    tokenizer: &Tokenizer,
    problem: &Problem,
    expression: &str,
    eos_id: i64,
) -> Result<Episode> {
    let example = problem.to_example_with("pretrain", Default::default());
    let (mut builder, mut session) = start_episode(tokenizer, &example)?;
    let call = tool_call_text(expression);
    let text = builder.model_turn(written_turn(tokenizer.encode(&call, false)?))?;
    let results = match ready(session.step(&text))?? {
        Reply::Continue(messages) => messages,
        Reply::Done(_) => {
            return Err(Error::Runtime(format!(
                "the calculator did not answer the written call `{call}`"
            )))
        }
    };
    let value = results
        .first()
        .map(|m| m.content.clone())
        .ok_or_else(|| Error::Runtime(format!("the calculator answered `{call}` with nothing")))?;
    builder.environment(&results, GivenKind::ToolResult)?;
    let mut answer = tokenizer.encode(&format!("Answer: {value}"), false)?;
    answer.push(eos_id);
    builder.model_turn(written_turn(answer))?;
    Ok(builder.finish())
}

/// What held-out episodes against the calculator gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpisodeEval {
    /// Fraction of episodes whose final answer was right.
    pub accuracy: f64,
    /// Fraction of episodes with at least one tool call (the calculator's `used_tool`).
    pub tool_call_rate: f64,
    /// Fraction of the episodes that called the tool whose answer was right
    /// (NaN when none called it).
    pub accuracy_with_tool: f64,
}

/// Play one calculator episode per problem, `max_turns` model turns at most,
/// each turn ending at EOS, `</tool_call>` or `max_new_tokens`: greedy when
/// `sample_seed` is `None`, else sampled at temperature 1 (problem `i`'s
/// turn `k` from seed `sample_seed + 1000 i + k`). Episodes run in batches
/// of 64, turn by turn.
pub fn heldout_episodes(
    model: &LoadedModel,
    problems: &[Problem],
    max_new_tokens: usize,
    max_turns: usize,
    sample_seed: Option<u64>,
) -> Result<EpisodeEval> {
    let tokenizer = model
        .tokenizer
        .as_ref()
        .ok_or_else(|| Error::InvalidInput("the model has no tokenizer to evaluate with".into()))?;
    let opts = GenerateOptions {
        max_new_tokens,
        greedy: sample_seed.is_none(),
        eos_ids: model.eos_ids(),
        pad_id: Some(model.pad_id()),
        stop: ToolFormat::Hermes.stop_strings(),
        ..GenerateOptions::default()
    };
    let (mut correct, mut used, mut used_correct) = (0usize, 0usize, 0usize);
    for (c, chunk) in problems.chunks(64).enumerate() {
        let mut live = Vec::with_capacity(chunk.len());
        for problem in chunk {
            let example = problem.to_example_with("heldout", Default::default());
            live.push(start_episode(tokenizer, &example)?);
        }
        let mut live: Vec<(usize, EpisodeBuilder, Box<dyn Session>, bool)> = live
            .into_iter()
            .enumerate()
            .map(|(i, (b, s))| (64 * c + i, b, s, false))
            .collect();
        for turn in 0..max_turns {
            if live.is_empty() {
                break;
            }
            let prompts: Vec<Vec<i64>> = live.iter().map(|(_, b, _, _)| b.context_ids()).collect();
            let seeds: Vec<u64> = live
                .iter()
                .map(|(i, ..)| {
                    sample_seed
                        .unwrap_or(0)
                        .wrapping_add(1000 * *i as u64 + turn as u64)
                })
                .collect();
            let generations = tch::no_grad(|| {
                generate_with(&model.lm, &prompts, &seeds, &opts, Some(tokenizer))
            })?;
            let mut next = Vec::with_capacity(live.len());
            for ((i, mut builder, mut session, called), generation) in
                live.into_iter().zip(generations)
            {
                let text = builder.model_turn(written_turn(generation.tokens))?;
                match ready(session.step(&text))?? {
                    Reply::Continue(messages) => {
                        builder.environment(&messages, GivenKind::ToolResult)?;
                        next.push((i, builder, session, true));
                    }
                    Reply::Done(outcome) => {
                        let called = called || outcome.components.get("used_tool") == Some(&1.0);
                        used += usize::from(called);
                        correct += usize::from(outcome.verdict.correct);
                        used_correct += usize::from(called && outcome.verdict.correct);
                    }
                }
            }
            live = next;
        }
        // Episodes still going after `max_turns` called the tool and are wrong.
        used += live.len();
    }
    let n = problems.len().max(1) as f64;
    Ok(EpisodeEval {
        accuracy: correct as f64 / n,
        tool_call_rate: used as f64 / n,
        accuracy_with_tool: if used == 0 {
            f64::NAN
        } else {
            used_correct as f64 / used as f64
        },
    })
}
