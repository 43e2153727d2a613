//! `pipeline::episodes::play_episode` on the built-in model with a tiny
//! in-Rust calculator environment: the played episode's tokens, loss mask
//! and sampling log-probs equal the same episode assembled by hand (each
//! turn regenerated from the hand-built context with the same seed, the
//! tool results encoded from the template's text), and the sampling
//! log-probs are the whole trajectory's under the policy.

use rlsd::data::Example;
use rlsd::env::chat::EpisodeChat;
use rlsd::env::{
    BoxFuture, EnvCounters, Environment, Message, Opening, Outcome, Reply, Session, Started,
};
use rlsd::model::{generate_with, token_logprobs, ChatTemplate, GenerateOptions, LoadedModel};
use rlsd::pipeline::episodes::{play_episode, EpisodeOptions};
use rlsd::verify::Verdict;
use std::path::Path;
use std::time::Duration;
use tch::{Device, Kind};

/// A template in the built-in model's format that renders tool results as a
/// user turn prefixed `Tool: ` (as tests/env_chat.rs).
const TOOL_TEMPLATE: &str =
    "{% for m in messages %}{% if m.role == 'user' %}<|user|>{{ m.content }}\
{% elif m.role == 'tool' %}<|user|>Tool: {{ m.content }}\
{% elif m.role == 'assistant' %}<|assistant|>{{ m.content }}<|end|>{% endif %}{% endfor %}\
{% if add_generation_prompt %}<|assistant|>{% endif %}";

/// The calculator: it answers each model turn with the sum of the digits it
/// wrote (a tool result), and after `turns` model turns ends the episode:
/// reward 1 when the last turn contains the example's answer.
struct Calculator {
    turns: usize,
}

struct CalcSession {
    left: usize,
    answer: String,
}

impl Session for CalcSession {
    fn step<'a>(&'a mut self, model_turn: &'a str) -> BoxFuture<'a, rlsd::Result<Reply>> {
        Box::pin(async move {
            self.left -= 1;
            if self.left == 0 {
                let ok = model_turn.contains(&self.answer);
                let v = if ok {
                    Verdict::correct("answered")
                } else {
                    Verdict::wrong("no answer")
                };
                return Ok(Reply::Done(Outcome::new(v)));
            }
            Ok(Reply::Continue(vec![Message::new(
                "tool",
                digit_sum(model_turn),
            )]))
        })
    }
}

fn digit_sum(text: &str) -> String {
    text.chars()
        .filter_map(|c| c.to_digit(10))
        .sum::<u32>()
        .to_string()
}

impl Environment for Calculator {
    fn start<'a>(&'a self, example: &'a Example) -> BoxFuture<'a, rlsd::Result<Started>> {
        Box::pin(async move {
            Ok(Started {
                opening: Opening {
                    messages: vec![Message::new("user", example.prompt.clone())],
                    tools: vec![],
                    privileged: example.privileged.clone(),
                },
                session: Box::new(CalcSession {
                    left: self.turns,
                    answer: example.answer.clone(),
                }),
            })
        })
    }
}

fn builtin() -> LoadedModel {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tiny-arith");
    LoadedModel::load(&dir, Device::Cpu, Kind::Float).unwrap()
}

fn options(end: i64) -> EpisodeOptions {
    EpisodeOptions {
        generate: GenerateOptions {
            max_new_tokens: 8,
            temperature: 1.0,
            eos_ids: vec![end],
            ..GenerateOptions::default()
        },
        max_turns: 4,
        env_timeout: Duration::from_secs(5),
        policy_version: 3,
    }
}

#[test]
fn a_played_episode_equals_the_one_assembled_by_hand() {
    let m = builtin();
    let tok = m.tokenizer.as_ref().unwrap();
    let end = tok.token_to_id("<|end|>").unwrap();
    let template = ChatTemplate::new(TOOL_TEMPLATE.into(), Path::new("tool.jinja")).unwrap();
    let example = Example::new("calc-1", "3*4+1=?", "13", "13");
    let opts = options(end);
    let counters = EnvCounters::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let seed = 41;
    for turns in [1usize, 2, 3, 5] {
        let env = Calculator { turns };
        let chat = EpisodeChat::new(&template, vec![], None, None);
        let played = rt
            .block_on(play_episode(
                &m.lm, tok, chat, &env, &example, &opts, seed, &counters,
            ))
            .unwrap();
        let e = &played.episode;
        // By hand: the prompt, then per turn the model's tokens (regenerated
        // from the hand-built context with the turn's seed) and the tool's
        // answer with the next generation prompt.
        let enc = |s: &str| tok.encode(s, false).unwrap();
        let mut ids = enc("<|user|>3*4+1=?<|assistant|>");
        let prompt_len = ids.len();
        let mut mask = Vec::new();
        let mut lps = Vec::new();
        let played_turns = turns.min(opts.max_turns);
        for k in 0..played_turns {
            let g = generate_with(
                &m.lm,
                &[ids.clone()],
                &[seed + k as u64],
                &opts.generate,
                Some(tok),
            )
            .unwrap()
            .pop()
            .unwrap();
            ids.extend(&g.tokens);
            mask.extend(vec![1.0f32; g.tokens.len()]);
            lps.extend(&g.logprobs);
            if k + 1 < turns {
                let text = tok.decode(&g.tokens, true).unwrap();
                // The template writes `<|end|>` after an assistant turn; the
                // model's own EOS already did when it stopped on one.
                let closes = g.tokens.last() == Some(&end);
                let given = format!(
                    "{}<|user|>Tool: {}<|assistant|>",
                    if closes { "" } else { "<|end|>" },
                    digit_sum(&text)
                );
                let given = enc(&given);
                mask.extend(vec![0.0f32; given.len()]);
                lps.extend(vec![0.0f32; given.len()]);
                ids.extend(given);
            }
        }
        assert_eq!(e.token_ids(), ids, "{turns} turns: tokens");
        assert_eq!(e.prompt_len(), prompt_len);
        assert_eq!(e.turns(), played_turns);
        assert_eq!(played.response_mask(), mask, "{turns} turns: mask");
        assert_eq!(played.sampling_logprobs(), lps, "{turns} turns: log-probs");
        let sample = played.sample();
        assert_eq!(sample.prompt, ids[..prompt_len]);
        assert_eq!(sample.response, ids[prompt_len..]);
        // The sampler's log-probs are the policy's on the whole trajectory.
        let whole = token_logprobs(
            &m.lm,
            std::slice::from_ref(&sample.prompt),
            std::slice::from_ref(&sample.response),
            1.0,
        )
        .unwrap();
        for (j, (&a, &b)) in lps.iter().zip(&whole[0]).enumerate() {
            if mask[j] == 1.0 {
                assert!((a - b).abs() < 1e-4, "{turns} turns, token {j}: {a} vs {b}");
            }
        }
        let text = tok.decode(&e.token_ids(), false).unwrap();
        assert_eq!(
            text.matches("Tool: ").count(),
            played_turns - usize::from(turns <= opts.max_turns),
            "{text}"
        );
        // Past the turn limit the session's default `finish` scores 0.
        if turns > opts.max_turns {
            assert_eq!(played.reward(), 0.0);
        }
    }
    assert_eq!(counters.snapshot(), (0, 0));
}
