//! The sampler's stage when `[env]` names an environment: `G` multi-turn
//! episodes per prompt ([`super::multi_turn::play_episodes`], continuously
//! batched) as a [`RolloutBatch`]. Each [`Rollout`]'s response is every
//! token after the prompt (the model's turns and the environment's answers),
//! its [`EpisodeRollout`] holds the response's loss mask (0 on environment
//! tokens) and the environment's score, which the verifier stage keeps.

use super::batch::{EpisodeRollout, Rollout, RolloutBatch, Score};
use super::env_config::{tool_format, turn_stop_strings};
use super::episodes::EpisodeOptions;
use super::multi_turn::{play_episodes, ChatSetup, EnvRuntime};
use super::plan::StepPlan;
use super::stages::tokenizer_of;
use crate::config::RunConfig;
use crate::data::prompt::student_prompt_ids;
use crate::data::TeacherPrompt;
use crate::env::chat::EpisodeChat;
use crate::env::{Episode, ToolFormat};
use crate::error::{Error, Result};
use crate::model::{max_concurrent_rows, prompt_seeds, GenerateOptions, LoadedModel, Tokenizer};
use crate::stats::StageTimings;

/// `G` episodes for each of the plan's prompts (and SDPO's candidates after
/// them), prompt-major; episode `i` plays turn `k` with the seed
/// `prompt_seed(plan.seed, i) + k`.
pub fn rollout_episodes(
    model: &LoadedModel,
    plan: StepPlan,
    policy_version: u64,
    cfg: &RunConfig,
    env: &EnvRuntime,
) -> Result<RolloutBatch> {
    let tok = tokenizer_of(model)?;
    let template = tok.chat_template().ok_or_else(|| {
        Error::config(
            "env.kind",
            "multi-turn episodes need a model with a chat template (tokenizer_config.json)",
        )
    })?;
    let (bos, eos) = tok.bos_eos_text();
    let r = &cfg.rollout;
    let mut examples = Vec::new();
    let mut groups = Vec::new();
    for per_group in [r.group_size, plan.sdpo_candidates] {
        for (g, ex) in plan.examples.iter().enumerate() {
            for _ in 0..per_group {
                examples.push(ex.clone());
                groups.push(g);
            }
        }
    }
    let generate = GenerateOptions {
        max_new_tokens: r.max_new_tokens,
        greedy: false,
        temperature: r.temperature,
        top_k: r.top_k,
        top_p: r.top_p,
        eos_ids: tok.eos_ids().to_vec(),
        pad_id: tok.pad_id(),
        kv_cache_bytes: r.kv_cache_bytes,
        stop: turn_stop_strings(&cfg.env, &r.stop),
        presence_penalty: 0.0,
    };
    // A row's context grows with its turns: budget each row for the
    // longest episode the turn limit allows.
    let per_row_context = r.max_new_tokens * cfg.env.max_turns;
    let rows = max_concurrent_rows(&model.lm, &generate, per_row_context, examples.len())?;
    let opts = EpisodeOptions {
        generate,
        max_turns: cfg.env.max_turns,
        env_timeout: cfg.env.turn_timeout(),
        policy_version,
    };
    let teacher = TeacherPrompt::for_data(&cfg.data)?;
    let seeds = prompt_seeds(plan.seed, examples.len());
    let chat = ChatSetup { template, bos, eos };
    let played = play_episodes(&model.lm, tok, chat, env, &examples, &seeds, &opts, rows)?;
    let mut rollouts = Vec::with_capacity(examples.len());
    for (i, p) in played.episodes.into_iter().enumerate() {
        let score = Score {
            reward: p.reward(),
            correct: p.outcome.verdict.correct,
            reason: p.outcome.verdict.reason.clone(),
            timed_out: played.env_failed[i],
        };
        let turns = p.episode.turns();
        let tool_calls = model_tool_calls(tok, &p.episode, tool_format(cfg.env.tool_format))?;
        let teacher_prompt_ids = match &p.opening {
            Some(opening) => {
                let chat = EpisodeChat::new(
                    template,
                    opening.tools.clone(),
                    bos.map(str::to_string),
                    eos.map(str::to_string),
                );
                let text = chat.teacher_opening_text(opening, &teacher)?;
                Some(tok.encode(&text, false)?)
            }
            None => None,
        };
        let (prompt_ids, response_ids, mask, logprobs) = if p.episode.is_empty() {
            // The environment never started: the student prompt and one
            // untrained EOS, so the sample has a shape and no credit.
            let eos = tok.eos_ids().first().copied().unwrap_or(0);
            let prompt = student_prompt_ids(tok, &examples[i])?;
            (prompt, vec![eos], vec![0.0], vec![0.0])
        } else {
            let s = p.sample();
            (
                s.prompt,
                s.response,
                p.response_mask(),
                p.sampling_logprobs(),
            )
        };
        rollouts.push(Rollout {
            group: groups[i],
            response_text: tok.decode(&response_ids, true)?,
            prompt_ids,
            response_ids,
            sampling_logprobs: logprobs,
            stopped_on_eos: false,
            stopped_on_stop_string: false,
            episode: Some(EpisodeRollout {
                response_mask: mask,
                score,
                turns,
                tool_calls,
                teacher_prompt_ids,
            }),
        });
    }
    Ok(RolloutBatch {
        plan,
        policy_version,
        rollouts,
        timings: StageTimings::default(),
    })
}

/// Tool calls in the model's turns of `episode`, read in `format` (calls
/// that could not be read count too: the model tried).
fn model_tool_calls(tok: &Tokenizer, episode: &Episode, format: ToolFormat) -> Result<usize> {
    let mut calls = 0;
    for segment in episode.segments().iter().filter(|s| s.is_generated()) {
        let parsed = format.parse(&tok.decode(segment.token_ids(), true)?);
        calls += parsed.calls.len() + parsed.errors.len();
    }
    Ok(calls)
}
