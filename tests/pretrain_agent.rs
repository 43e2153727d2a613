//! The built-in agent task's base model, `assets/tiny-arith-agent/` (made by
//! `rlsd pretrain --config configs/pretrain-agent.toml`): its tool-use
//! training episodes are laid out token for token as an RL episode is, with
//! the tool turn masked, and the committed model calls the calculator on
//! some (not all) problems while staying weak enough for RL.

use rlsd::data::char_tokenizer::{write_char_tokenizer_with, AGENT_CHAT_TEMPLATE, EOS_ID};
use rlsd::data::task::{ArithmeticTask, Problem};
use rlsd::env::{Message, ToolFormat};
use rlsd::model::{generate_with, GenerateOptions, Tokenizer};
use rlsd::pretrain::tool_use::{flawed_expression, heldout_episodes, tool_use_episode};
use rlsd::pretrain::{encode_prompt, held_out_problems, load_base_model, PretrainConfig};
use std::path::{Path, PathBuf};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The pretraining configuration the committed model was made with.
fn agent_config() -> PretrainConfig {
    let text = std::fs::read_to_string(repo("configs/pretrain-agent.toml")).unwrap();
    let cfg: PretrainConfig = toml::from_str(&text).unwrap();
    assert!(cfg.tool_fraction > 0.0);
    cfg
}

fn agent_tokenizer(dir: &Path) -> Tokenizer {
    write_char_tokenizer_with(dir, AGENT_CHAT_TEMPLATE).unwrap();
    Tokenizer::from_dir(dir, &[EOS_ID], Some(0))
        .unwrap()
        .unwrap()
}

/// `12+7-5`: 14.
fn problem() -> Problem {
    Problem {
        operands: vec![12, 7, 5],
        operators: vec!['+', '-'],
        answer: 14,
    }
}

#[test]
fn agent_template_renders_tool_turns_and_calls() {
    let dir = tempfile::tempdir().unwrap();
    let tok = agent_tokenizer(dir.path());
    let template = tok.chat_template().unwrap();
    let call = serde_json::json!({"type": "function", "function": {
        "name": "calculator", "arguments": {"expression": "7*3"}}});
    let messages = vec![
        Message::new("user", "What is 7*3?"),
        Message {
            tool_calls: vec![call],
            ..Message::new("assistant", "")
        },
        Message {
            name: Some("calculator".into()),
            ..Message::new("tool", "21")
        },
    ];
    let text = template
        .render_with_tools(&messages, &[], true, None, Some("<|end|>"))
        .unwrap();
    assert_eq!(
        text,
        "<|user|>What is 7*3?<|assistant|><tool_call>{\"name\": \"calculator\", \
         \"arguments\": {\"expression\": \"7*3\"}}</tool_call><|end|><|user|>Tool: 21<|assistant|>"
    );
}

/// The training episode equals the one written by hand: the call (trained),
/// the turn end, tool turn and generation prompt (given), the answer and EOS
/// (trained).
#[test]
fn tool_use_episode_masks_the_tool_turn() {
    let dir = tempfile::tempdir().unwrap();
    let tok = agent_tokenizer(dir.path());
    let episode = tool_use_episode(&tok, &problem(), "12+7-5", EOS_ID).unwrap();
    let call = "<tool_call>{\"name\": \"calculator\", \"arguments\": {\"expression\": \"12+7-5\"}}</tool_call>";
    let given = "<|end|><|user|>Tool: 14<|assistant|>";
    let answer = "Answer: 14<|end|>";
    assert_eq!(
        tok.decode(&episode.response_ids(), false).unwrap(),
        format!("{call}{given}{answer}")
    );
    let n = |s: &str| tok.encode(s, false).unwrap().len();
    let mut expected = vec![1.0f32; n(call)];
    expected.extend(vec![0.0; n(given)]);
    expected.extend(vec![1.0; n(answer)]);
    assert_eq!(episode.response_loss_mask(), expected);
    // 4 special tokens are one token each; every other character is one.
    assert_eq!(n(given), 3 + "Tool: 14".len());
    assert_eq!(
        tok.decode(&episode.token_ids()[..episode.prompt_len()], false)
            .unwrap(),
        "<|user|>What is 12+7-5?<|assistant|>"
    );
}

/// A flawed copy changes exactly one operand by 1 to 3 and keeps the shape;
/// the episode then states the calculator's value of the flawed expression.
#[test]
fn flawed_tool_call_copies_one_operand_wrongly() {
    use rand::SeedableRng;
    let dir = tempfile::tempdir().unwrap();
    let tok = agent_tokenizer(dir.path());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..50 {
        let flawed = flawed_expression(&problem(), &mut rng);
        let numbers: Vec<i64> = flawed
            .split(['+', '-'])
            .map(|s| s.parse().unwrap())
            .collect();
        let diffs: Vec<i64> = numbers.iter().zip([12, 7, 5]).map(|(a, b)| a - b).collect();
        assert_eq!(diffs.iter().filter(|d| **d != 0).count(), 1, "{flawed}");
        assert!(diffs.iter().all(|d| d.abs() <= 3), "{flawed}");
        let value = numbers[0] + numbers[1] - numbers[2];
        let episode = tool_use_episode(&tok, &problem(), &flawed, EOS_ID).unwrap();
        let text = tok.decode(&episode.response_ids(), true).unwrap();
        assert!(text.ends_with(&format!("Answer: {value}")), "{text}");
    }
}

/// The committed asset: first turns sampled with a fixed seed on held-out
/// problems, parsed as Hermes tool calls. Some call the calculator with a
/// readable call, not all; played to the end against the calculator, the
/// episodes are right on some problems and wrong on others.
#[test]
fn agent_base_model_calls_the_tool_on_some_problems() {
    let model = load_base_model(&repo("assets/tiny-arith-agent")).unwrap();
    let cfg = agent_config();
    let tok = model.tokenizer.as_ref().unwrap();
    let task = ArithmeticTask::new(cfg.task.clone()).unwrap();
    let problems = held_out_problems(&task, 64, cfg.seed);
    let prompts: Vec<Vec<i64>> = problems
        .iter()
        .map(|p| encode_prompt(tok, &p.prompt()).unwrap())
        .collect();
    let seeds: Vec<u64> = (0..problems.len() as u64).collect();
    let opts = GenerateOptions {
        max_new_tokens: cfg.eval_max_new_tokens,
        eos_ids: model.eos_ids(),
        pad_id: Some(model.pad_id()),
        stop: ToolFormat::Hermes.stop_strings(),
        ..GenerateOptions::default()
    };
    let generations =
        tch::no_grad(|| generate_with(&model.lm, &prompts, &seeds, &opts, Some(tok))).unwrap();
    let mut calls = 0usize;
    for g in &generations {
        let parsed = ToolFormat::Hermes.parse(&tok.decode(&g.tokens, true).unwrap());
        calls += usize::from(parsed.calls.iter().any(|c| c.name == "calculator"));
    }
    assert!(
        (1..problems.len()).contains(&calls),
        "{calls} of {} sampled first turns call the calculator",
        problems.len()
    );
    let played = heldout_episodes(&model, &problems, cfg.eval_max_new_tokens, 4, Some(0)).unwrap();
    assert!(
        (0.02..0.9).contains(&played.accuracy),
        "sampled episode accuracy {}",
        played.accuracy
    );
    assert!(
        played.tool_call_rate > 0.0 && played.tool_call_rate < 1.0,
        "{:?}",
        played
    );
}

/// Held-out episodes of a trained model folder against the calculator (the
/// base model's check, on a run's `final/`): not a check, a measurement.
/// `RLSD_AGENT_MODEL=runs/agent/final cargo test --test pretrain_agent --
/// --ignored --nocapture`; prints greedy and sampled accuracy and tool-call
/// rate on the pretraining's 200 held-out problems, for the committed base
/// and for that folder.
#[test]
#[ignore]
fn measure_held_out_episodes_of_a_trained_model() {
    let cfg = agent_config();
    let task = ArithmeticTask::new(cfg.task.clone()).unwrap();
    let problems = held_out_problems(&task, cfg.eval_problems, cfg.seed);
    let mut dirs = vec![repo("assets/tiny-arith-agent")];
    if let Some(dir) = std::env::var_os("RLSD_AGENT_MODEL") {
        dirs.push(PathBuf::from(dir));
    }
    for dir in dirs {
        let model = load_base_model(&dir).unwrap();
        let (tokens, turns) = (cfg.eval_max_new_tokens, cfg.eval_max_turns);
        let greedy = heldout_episodes(&model, &problems, tokens, turns, None).unwrap();
        let sampled = heldout_episodes(&model, &problems, tokens, turns, Some(cfg.seed)).unwrap();
        println!(
            "{}: {} problems; greedy accuracy {:.3} (tool-call rate {:.3}); \
             sampled accuracy {:.3} (tool-call rate {:.3}, accuracy with the tool {:.3})",
            dir.display(),
            problems.len(),
            greedy.accuracy,
            greedy.tool_call_rate,
            sampled.accuracy,
            sampled.tool_call_rate,
            sampled.accuracy_with_tool
        );
    }
}
