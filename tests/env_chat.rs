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
