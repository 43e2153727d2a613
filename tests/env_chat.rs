//! Tool calling through the real Qwen2.5 chat template: rendering with
//! `tools` and `role: "tool"` messages equals transformers' rendering
//! (tests/fixtures/chat/golden.json, written by make_golden.py next to it),
//! and an episode assembled turn by turn (model text + given text) equals the
//! whole conversation rendered at once.

use std::path::Path;

use rlsd::env::chat::EpisodeChat;
use rlsd::env::tool_call::ToolFormat;
use rlsd::env::{Message, Opening};
use rlsd::model::ChatTemplate;
use serde_json::Value;

fn dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat")
}

fn template() -> ChatTemplate {
    let p = dir().join("qwen2.5_chat_template.jinja");
    ChatTemplate::new(std::fs::read_to_string(&p).unwrap(), &p).unwrap()
}

fn cases() -> (Vec<Value>, Vec<Value>) {
    let read = |n: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir().join(n)).unwrap()).unwrap()
    };
    let cases = read("cases.json").as_array().unwrap().clone();
    let golden = read("golden.json")["cases"].as_array().unwrap().clone();
    (cases, golden)
}

fn messages(case: &Value) -> Vec<Message> {
    serde_json::from_value(case["messages"].clone()).unwrap()
}

fn tools(case: &Value) -> Vec<Value> {
    case.get("tools")
        .and_then(|t| t.as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn renders_like_transformers() {
    let t = template();
    let (cases, golden) = cases();
    assert_eq!(cases.len(), golden.len());
    for (case, gold) in cases.iter().zip(&golden) {
        assert_eq!(case["name"], gold["name"]);
        let got = t
            .render_with_tools(
                &messages(case),
                &tools(case),
                case["add_generation_prompt"].as_bool().unwrap(),
                None,
                None,
            )
            .unwrap();
        assert_eq!(got, gold["text"].as_str().unwrap(), "case {}", case["name"]);
    }
}

#[test]
fn turn_by_turn_equals_the_whole_conversation() {
    let t = template();
    let (cases, golden) = cases();
    let case = &cases[2];
    assert_eq!(case["name"], "tool_call_and_results");
    let msgs = messages(case);
    let chat = EpisodeChat::new(&t, tools(case), None, None);
    let opening = Opening {
        messages: msgs[..1].to_vec(),
        tools: tools(case),
        privileged: String::new(),
    };
    // What the model writes in the template's own format, ending on EOS.
    let model_turn = "Let me compute.\n<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"17*23\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"1<2\"}}\n</tool_call><|im_end|>";
    let parsed = ToolFormat::Hermes.parse(model_turn.trim_end_matches("<|im_end|>"));
    assert_eq!(
        parsed.to_message(),
        msgs[1],
        "the parsed turn is the golden message"
    );
    let assembled = format!(
        "{}{}{}",
        chat.opening_text(&opening).unwrap(),
        model_turn,
        chat.given_after_turn(model_turn, &msgs[2..]).unwrap()
    );
    assert_eq!(assembled, golden[2]["text"].as_str().unwrap());
    // A turn cut by the `</tool_call>` stop string gets the whole turn end.
    assert_eq!(chat.turn_end().unwrap(), "<|im_end|>\n");
    let cut = chat
        .given_after_turn("...</tool_call>", &[Message::new("tool", "4")])
        .unwrap();
    assert_eq!(
        cut,
        "<|im_end|>\n<|im_start|>user\n<tool_response>\n4\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn a_template_that_rewrites_history_is_refused() {
    // Renders only the last message: appending one changes what came before.
    let p = Path::new("last_only.jinja");
    let t = ChatTemplate::new("{{ messages[-1].content }}".into(), p).unwrap();
    let chat = EpisodeChat::new(&t, vec![], None, None);
    let e = chat
        .continuation(&[Message::new("tool", "4")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("last_only.jinja") && e.contains("cannot be appended"),
        "{e}"
    );
}

/// A template in the built-in model's format that also renders tool results
/// (as a user turn prefixed `Tool: `).
const TOOL_TEMPLATE: &str =
    "{% for m in messages %}{% if m.role == 'user' %}<|user|>{{ m.content }}\
{% elif m.role == 'tool' %}<|user|>Tool: {{ m.content }}\
{% elif m.role == 'assistant' %}<|assistant|>{{ m.content }}<|end|>{% endif %}{% endfor %}\
{% if add_generation_prompt %}<|assistant|>{% endif %}";

#[test]
fn a_two_turn_episode_equals_the_one_assembled_by_hand() {
    use rlsd::env::{EpisodeBuilder, GivenKind, SampledTurn};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tiny-arith");
    let tok = rlsd::model::Tokenizer::from_dir(&dir, &[], None)
        .unwrap()
        .unwrap();
    let t = ChatTemplate::new(TOOL_TEMPLATE.into(), Path::new("tool.jinja")).unwrap();
    let chat = EpisodeChat::new(&t, vec![], None, None);
    let opening = Opening {
        messages: vec![Message::new("user", "3*4+1=?")],
        tools: vec![],
        privileged: "13".into(),
    };
    let enc = |s: &str| tok.encode(s, false).unwrap();
    let end = tok.token_to_id("<|end|>").unwrap();
    // Turn 1 ends on EOS (<|end|>); turn 2 is cut by the token limit (no EOS).
    let turn1: Vec<i64> = [enc("3*4"), vec![end]].concat();
    let turn2 = enc("12+1=13");
    let lp1: Vec<f32> = (0..turn1.len()).map(|i| -0.1 * (i as f32 + 1.0)).collect();
    let lp2: Vec<f32> = (0..turn2.len()).map(|i| -0.5 - 0.01 * i as f32).collect();

    let mut b = EpisodeBuilder::start(&tok, chat, &opening).unwrap();
    let text = b
        .model_turn(SampledTurn {
            token_ids: turn1.clone(),
            sampling_logprobs: lp1.clone(),
            policy_version: 5,
        })
        .unwrap();
    assert_eq!(
        text, "3*4",
        "the environment reads the text without special tokens"
    );
    b.environment(&[Message::new("tool", "12")], GivenKind::ToolResult)
        .unwrap();
    let context = b.context_ids();
    b.model_turn(SampledTurn {
        token_ids: turn2.clone(),
        sampling_logprobs: lp2.clone(),
        policy_version: 6,
    })
    .unwrap();
    let e = b.finish();

    // By hand: the prompt, turn 1 (its <|end|> is the model's, so the given
    // text does not repeat it), the tool result and the generation prompt, turn 2.
    let prompt = enc("<|user|>3*4+1=?<|assistant|>");
    let tool = enc("<|user|>Tool: 12<|assistant|>");
    let ids = [prompt.clone(), turn1.clone(), tool.clone(), turn2.clone()].concat();
    assert_eq!(e.token_ids(), ids);
    assert_eq!(
        context,
        [prompt.clone(), turn1.clone(), tool.clone()].concat()
    );
    let mask: Vec<f32> = [
        vec![0.0; prompt.len()],
        vec![1.0; turn1.len()],
        vec![0.0; tool.len()],
        vec![1.0; turn2.len()],
    ]
    .concat();
    assert_eq!(e.loss_mask(), mask);
    let lps: Vec<f32> = [vec![0.0; prompt.len()], lp1, vec![0.0; tool.len()], lp2].concat();
    assert_eq!(e.sampling_logprobs(), lps);
    assert_eq!(
        (e.turns(), e.prompt_len(), e.oldest_policy_version()),
        (2, prompt.len(), Some(5))
    );
    // The tokens decode to the conversation the template writes.
    assert_eq!(
        tok.decode(&e.token_ids(), false).unwrap(),
        "<|user|>3*4+1=?<|assistant|>3*4<|end|><|user|>Tool: 12<|assistant|>12+1=13"
    );
}
