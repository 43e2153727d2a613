//! `pipeline::multi_turn::play_episodes` (many episodes under continuous
//! batching, environment calls as concurrent tokio tasks) against
//! `pipeline::episodes::play_episode` (one episode at a time), on the
//! built-in model with a small in-Rust calculator whose episodes last
//! different numbers of turns: the same tokens, loss masks and rewards, and
//! the same sampling log-probs up to float rounding, with fewer rows than
//! episodes so that turns wait for free rows. A hanging or panicking
//! session costs only its own episode (reward 0, counted).

use rlsd::data::Example;
use rlsd::env::chat::EpisodeChat;
use rlsd::env::{
    BoxFuture, EnvCounters, Environment, Message, Opening, Outcome, Reply, Session, Started,
};
use rlsd::model::{ChatTemplate, GenerateOptions, LoadedModel};
use rlsd::pipeline::episodes::{play_episode, EpisodeOptions, PlayedEpisode};
use rlsd::pipeline::multi_turn::{play_episodes, ChatSetup, EnvRuntime};
use rlsd::verify::Verdict;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tch::{Device, Kind};

/// The built-in model's format; tool results as a user turn `Tool: ...`.
const TOOL_TEMPLATE: &str =
    "{% for m in messages %}{% if m.role == 'user' %}<|user|>{{ m.content }}\
{% elif m.role == 'tool' %}<|user|>Tool: {{ m.content }}\
{% elif m.role == 'assistant' %}<|assistant|>{{ m.content }}<|end|>{% endif %}{% endfor %}\
{% if add_generation_prompt %}<|assistant|>{% endif %}";

/// Answers each turn with the digit sum of the model's text; the episode of
/// an example whose id ends in `-N` lasts `N` model turns (reward 1 when
/// the last turn contains the answer). Ids ending in `-hang` sleep on their
/// second turn; `-panic` panics there.
struct Calculator;

struct CalcSession {
    id: String,
    left: usize,
    played: usize,
    answer: String,
}

impl Session for CalcSession {
    fn step<'a>(&'a mut self, model_turn: &'a str) -> BoxFuture<'a, rlsd::Result<Reply>> {
        Box::pin(async move {
            self.played += 1;
            if self.played == 2 && self.id.ends_with("-hang") {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            if self.played == 2 && self.id.ends_with("-panic") {
                panic!("the environment broke");
            }
            self.left = self.left.saturating_sub(1);
            if self.left == 0 {
                let v = if model_turn.contains(&self.answer) {
                    Verdict::correct("answered")
                } else {
                    Verdict::wrong("no answer")
                };
                return Ok(Reply::Done(Outcome::new(v)));
            }
            let sum: u32 = model_turn.chars().filter_map(|c| c.to_digit(10)).sum();
            Ok(Reply::Continue(vec![Message::new("tool", sum.to_string())]))
        })
    }
}

impl Environment for Calculator {
    fn start<'a>(&'a self, ex: &'a Example) -> BoxFuture<'a, rlsd::Result<Started>> {
        Box::pin(async move {
            let left = ex.id.rsplit('-').next().unwrap().parse().unwrap_or(3);
            Ok(Started {
                opening: Opening {
                    messages: vec![Message::new("user", ex.prompt.clone())],
                    tools: vec![],
                    privileged: ex.privileged.clone(),
                },
                session: Box::new(CalcSession {
                    id: ex.id.clone(),
                    left,
                    played: 0,
                    answer: ex.answer.clone(),
                }),
            })
        })
    }
}

fn builtin() -> LoadedModel {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tiny-arith");
    LoadedModel::load(&dir, Device::Cpu, Kind::Float).unwrap()
}

fn options(end: i64, timeout: Duration) -> EpisodeOptions {
    EpisodeOptions {
        generate: GenerateOptions {
            max_new_tokens: 8,
            temperature: 1.0,
            eos_ids: vec![end],
            stop: vec!["=".into()],
            ..GenerateOptions::default()
        },
        max_turns: 4,
        env_timeout: timeout,
        policy_version: 7,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

/// Tokens, mask and reward equal; sampling log-probs within float rounding.
fn assert_same(name: &str, a: &PlayedEpisode, b: &PlayedEpisode) {
    assert_eq!(
        a.episode.token_ids(),
        b.episode.token_ids(),
        "{name}: tokens"
    );
    assert_eq!(a.episode.loss_mask(), b.episode.loss_mask(), "{name}: mask");
    assert_eq!(a.episode.turns(), b.episode.turns(), "{name}: turns");
    assert_eq!(a.reward(), b.reward(), "{name}: reward");
    assert_eq!(a.outcome.verdict.reason, b.outcome.verdict.reason, "{name}");
    for (j, (x, y)) in a
        .episode
        .sampling_logprobs()
        .iter()
        .zip(b.episode.sampling_logprobs())
        .enumerate()
    {
        assert!((x - y).abs() < 1e-4, "{name}, token {j}: {x} vs {y}");
    }
}

#[test]
fn batched_episodes_equal_episodes_played_one_at_a_time() {
    let m = builtin();
    let tok = m.tokenizer.as_ref().unwrap();
    let end = tok.token_to_id("<|end|>").unwrap();
    let template = ChatTemplate::new(TOOL_TEMPLATE.into(), Path::new("tool.jinja")).unwrap();
    let opts = options(end, Duration::from_secs(10));
    let rt = runtime();
    // Two groups of identical prompts (prefilled once per admission) and
    // episodes of 1 to 5 turns (5 > max_turns: `finish` scores it).
    let turns = [1, 3, 2, 5, 4, 1, 2, 3];
    let examples: Vec<Example> = turns
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (q, a) = if i < 4 {
                ("3*4+1=?", "13")
            } else {
                ("7+8=?", "15")
            };
            Example::new(format!("ex{i}-{n}"), q, a, a)
        })
        .collect();
    let seeds: Vec<u64> = (0..examples.len() as u64).map(|i| 1000 + 17 * i).collect();
    let env: Arc<dyn Environment> = Arc::new(Calculator);
    let env_rt = EnvRuntime {
        env: env.clone(),
        handle: rt.handle().clone(),
        counters: Arc::new(EnvCounters::default()),
    };
    let chat = ChatSetup {
        template: &template,
        bos: None,
        eos: None,
    };
    for rows in [1usize, 3, 8] {
        let batched =
            play_episodes(&m.lm, tok, chat, &env_rt, &examples, &seeds, &opts, rows).unwrap();
        assert_eq!(batched.env_failed, vec![false; examples.len()]);
        let batched = batched.episodes;
        assert_eq!(batched.len(), examples.len());
        let counters = EnvCounters::default();
        for (i, ex) in examples.iter().enumerate() {
            let one = rt
                .block_on(play_episode(
                    &m.lm,
                    tok,
                    EpisodeChat::new(&template, vec![], None, None),
                    env.as_ref(),
                    ex,
                    &opts,
                    seeds[i],
                    &counters,
                ))
                .unwrap();
            assert_same(&format!("rows {rows}, episode {i}"), &batched[i], &one);
            assert_eq!(one.episode.turns(), turns[i].min(opts.max_turns));
        }
    }
    assert_eq!(env_rt.counters.snapshot(), (0, 0));
}

#[test]
fn a_hanging_or_panicking_environment_costs_only_its_episode() {
    let m = builtin();
    let tok = m.tokenizer.as_ref().unwrap();
    let end = tok.token_to_id("<|end|>").unwrap();
    let template = ChatTemplate::new(TOOL_TEMPLATE.into(), Path::new("tool.jinja")).unwrap();
    let opts = options(end, Duration::from_millis(300));
    let rt = runtime();
    let ids = ["a-3", "b-hang", "c-2", "d-panic"];
    let examples: Vec<Example> = ids
        .iter()
        .map(|id| Example::new(*id, "3*4+1=?", "13", "13"))
        .collect();
    let seeds = [5u64, 6, 7, 8];
    let env_rt = EnvRuntime {
        env: Arc::new(Calculator),
        handle: rt.handle().clone(),
        counters: Arc::new(EnvCounters::default()),
    };
    let chat = ChatSetup {
        template: &template,
        bos: None,
        eos: None,
    };
    let t0 = std::time::Instant::now();
    let played = play_episodes(&m.lm, tok, chat, &env_rt, &examples, &seeds, &opts, 2).unwrap();
    assert_eq!(played.env_failed, [false, true, false, true]);
    let played = played.episodes;
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    // The hanging and the panicking session each ended after their second
    // turn with reward 0; the others played their turns.
    for (i, turns) in [(0, 3), (1, 2), (2, 2), (3, 2)] {
        assert_eq!(played[i].episode.turns(), turns, "{}", ids[i]);
    }
    assert_eq!(played[1].reward(), 0.0);
    assert!(played[1].outcome.verdict.reason.contains("timed out"));
    assert_eq!(played[3].reward(), 0.0);
    assert!(
        played[3].outcome.verdict.reason.contains("failed"),
        "{}",
        played[3].outcome.verdict.reason
    );
    assert_eq!(env_rt.counters.snapshot(), (1, 1));
}
