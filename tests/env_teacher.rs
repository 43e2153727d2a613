//! The teacher of a multi-turn episode: its context is the environment's
//! opening (system turn, tools, the question) with the privileged text
//! added through `data.teacher_template`, and it scores the episode's whole
//! response (the model's turns and the tool turns between them) after that
//! context, under every algorithm but SDPO (whose contexts are its own).

use std::sync::Arc;

use rlsd::config::RunConfig;
use rlsd::data::char_tokenizer::{write_char_tokenizer_with, AGENT_CHAT_TEMPLATE, EOS_ID};
use rlsd::data::{Example, TeacherPrompt};
use rlsd::env::chat::EpisodeChat;
use rlsd::env::{CalculatorEnvironment, EnvCounters, Environment, Message, Opening};
use rlsd::model::{token_logprobs, Tokenizer};
use rlsd::pipeline::episode_rollout::rollout_episodes;
use rlsd::pipeline::multi_turn::EnvRuntime;
use rlsd::pipeline::{teacher_pass, verify_all, StepPlan};
use rlsd::pretrain::load_base_model;
use rlsd::verify::{Verdict, Verifier};

const TEMPLATE: &str = "{question} Reference answer: {answer}";

fn agent_tokenizer(dir: &std::path::Path) -> Tokenizer {
    write_char_tokenizer_with(dir, AGENT_CHAT_TEMPLATE).unwrap();
    Tokenizer::from_dir(dir, &[EOS_ID], Some(0))
        .unwrap()
        .unwrap()
}

#[test]
fn the_teacher_context_is_the_opening_with_the_privileged_text() {
    let dir = tempfile::tempdir().unwrap();
    let tok = agent_tokenizer(dir.path());
    let template = tok.chat_template().unwrap();
    let teacher = TeacherPrompt::new(TEMPLATE).unwrap();
    let chat = EpisodeChat::new(template, vec![], None, Some("<|end|>".into()));
    let opening = Opening {
        messages: vec![
            Message::new("system", "Use the calculator."),
            Message::new("user", "What is 2+3?"),
        ],
        tools: vec![],
        privileged: "5".into(),
    };
    assert_eq!(
        chat.teacher_opening_text(&opening, &teacher).unwrap(),
        "<|system|>Use the calculator.<|user|>What is 2+3? Reference answer: 5<|assistant|>"
    );
    // No user message: one is added with the filled template.
    let bare = Opening {
        messages: vec![Message::new("system", "Go.")],
        tools: vec![],
        privileged: "7".into(),
    };
    assert_eq!(
        chat.teacher_opening_text(&bare, &teacher).unwrap(),
        "<|system|>Go.<|user|> Reference answer: 7<|assistant|>"
    );
}

/// The calculator's opening is the question alone, so its teacher context
/// equals the data's teacher prompt token for token.
#[test]
fn the_calculator_teacher_context_equals_the_data_teacher_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let tok = agent_tokenizer(dir.path());
    let teacher = TeacherPrompt::new(TEMPLATE).unwrap();
    let ex = Example::new("1", "What is 12+7-5?", "14", "14");
    let env = CalculatorEnvironment::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let started = rt.block_on(env.start(&ex)).unwrap();
    let chat = EpisodeChat::new(
        tok.chat_template().unwrap(),
        started.opening.tools.clone(),
        None,
        Some("<|end|>".into()),
    );
    let text = chat
        .teacher_opening_text(&started.opening, &teacher)
        .unwrap();
    assert_eq!(
        tok.encode(&text, false).unwrap(),
        teacher.ids(&tok, &ex).unwrap()
    );
}

/// Never called: the environment scores episodes.
struct Unused;

impl Verifier for Unused {
    fn verify(&self, _: &Example, _: &str) -> Verdict {
        panic!("the verifier scored an episode")
    }
}

/// Episodes played by the sampler's stage on the agent base: each carries
/// its teacher context, and the teacher pass scores its whole response
/// (tool turns included) after exactly that context.
#[test]
fn the_teacher_scores_the_whole_episode_after_its_opening() {
    let model = load_base_model(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tiny-arith-agent"),
    )
    .unwrap();
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/agent.toml");
    let mut cfg = RunConfig::load(
        Some(&config),
        &[
            "rollout.batch_prompts=2".into(),
            "rollout.group_size=4".into(),
        ],
    )
    .unwrap();
    cfg.env.turn_timeout_s = 30.0;
    let examples = vec![
        Example::new("a", "What is 12+7-5?", "14", "14"),
        Example::new("b", "What is 3+16?", "19", "19"),
    ];
    let mut plan = StepPlan::new(&cfg, 1, 0, examples.clone(), serde_json::Value::Null);
    plan.needs_teacher = true;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let env_rt = EnvRuntime {
        env: Arc::new(CalculatorEnvironment::default()) as Arc<dyn Environment>,
        handle: rt.handle().clone(),
        counters: Arc::new(EnvCounters::default()),
    };
    let batch = rollout_episodes(&model, plan, 0, &cfg, &env_rt).unwrap();
    let tok = model.tokenizer.as_ref().unwrap();
    let teacher = TeacherPrompt::for_data(&cfg.data).unwrap();
    let mut multi_turn = 0;
    for r in &batch.rollouts {
        let e = r.episode.as_ref().unwrap();
        let ids = e.teacher_prompt_ids.as_ref().expect("a teacher context");
        assert_eq!(ids, &teacher.ids(tok, &examples[r.group]).unwrap());
        multi_turn += usize::from(e.turns > 1);
    }
    assert!(multi_turn > 0, "no episode called the tool");
    // An opening with a system turn: the teacher must follow the episode's
    // own context, not the group's data prompt.
    let mut batch = batch;
    let first = batch.rollouts[0].episode.as_mut().unwrap();
    let mut with_system = tok.encode("<|system|>Be exact.", false).unwrap();
    with_system.extend(first.teacher_prompt_ids.take().unwrap());
    first.teacher_prompt_ids = Some(with_system);
    let prompts: Vec<Vec<i64>> = batch
        .rollouts
        .iter()
        .map(|r| {
            r.episode
                .as_ref()
                .unwrap()
                .teacher_prompt_ids
                .clone()
                .unwrap()
        })
        .collect();
    let responses: Vec<Vec<i64>> = batch
        .rollouts
        .iter()
        .map(|r| r.response_ids.clone())
        .collect();
    let expected = token_logprobs(&model.lm, &prompts, &responses, 1.0).unwrap();
    let scored = verify_all(&Unused, batch).unwrap();
    let taught = teacher_pass(&model, 0, &teacher, scored, &cfg.algo, 1.0, 0).unwrap();
    let got = taught.teacher.logprobs.unwrap();
    assert_eq!(got.len(), expected.len());
    for (g, x) in got.iter().zip(&expected) {
        assert_eq!(g.len(), x.len());
        for (a, b) in g.iter().zip(x) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
}
