//! The built-in agent task's environment: a calculator tool for the built-in
//! arithmetic problems, in Rust (the same task as
//! examples/python_env/calculator_env.py, without a process).
//!
//! An episode opens with the problem as the user's turn and one tool,
//! `calculator(expression)`, whose JSON schema reaches the chat template as
//! `tools`. Each model turn is read in the model's tool-call format
//! ([`ToolFormat`], Hermes by default): a turn with calls is answered with one
//! `tool` message per call (the integer value, or `error: ...` so the model
//! can learn the format); a turn without calls is the final answer and ends
//! the episode: reward 1 when its `Answer: <n>` equals the gold answer. More
//! than `max_calls` calls end the episode with reward 0. The outcome's
//! components hold the number of calls (`tool_calls`) and whether the
//! episode used the tool at all (`used_tool`); a training step logs the
//! tool-call rate it reads from the model's turns (`episodes.tool_call_rate`).

use std::collections::BTreeMap;

use super::environment::{
    BoxFuture, Environment, Message, Opening, Outcome, Reply, Session, Started,
};
use super::tool_call::ToolFormat;
use crate::data::task::extract_answer;
use crate::data::Example;
use crate::error::Result;
use crate::verify::Verdict;

/// The tool's name, as the model must write it.
pub const CALCULATOR_TOOL: &str = "calculator";

/// Longest expression the tool evaluates, in bytes.
const MAX_EXPRESSION_LEN: usize = 200;

/// The calculator environment (see the module doc).
#[derive(Debug, Clone)]
pub struct CalculatorEnvironment {
    /// How the model writes its tool calls.
    pub format: ToolFormat,
    /// Most tool calls per episode; one more ends it with reward 0.
    pub max_calls: usize,
}

impl Default for CalculatorEnvironment {
    fn default() -> Self {
        CalculatorEnvironment {
            format: ToolFormat::Hermes,
            max_calls: 4,
        }
    }
}

/// The tool's JSON schema in transformers' `tools` shape.
pub fn calculator_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "function",
        "function": {
            "name": CALCULATOR_TOOL,
            "description": "Evaluate an integer arithmetic expression with + - * and parentheses.",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        },
    })
}

impl Environment for CalculatorEnvironment {
    fn start<'a>(&'a self, example: &'a Example) -> BoxFuture<'a, Result<Started>> {
        Box::pin(async move {
            let mut messages: Vec<Message> = example
                .context
                .iter()
                .map(|m| Message::new(m.role.clone(), m.content.clone()))
                .collect();
            messages.push(Message::new("user", example.prompt.clone()));
            Ok(Started {
                opening: Opening {
                    messages,
                    tools: vec![calculator_schema()],
                    privileged: example.privileged.clone(),
                },
                session: Box::new(CalculatorSession {
                    env: self.clone(),
                    answer: example.answer.trim().to_string(),
                    calls: 0,
                }),
            })
        })
    }
}

/// One episode: the gold answer and the calls so far.
struct CalculatorSession {
    env: CalculatorEnvironment,
    answer: String,
    calls: usize,
}

impl CalculatorSession {
    /// The outcome of a final turn (or of too many calls), with the call count.
    fn outcome(&self, verdict: Verdict) -> Outcome {
        let mut components = BTreeMap::new();
        components.insert("tool_calls".to_string(), self.calls as f32);
        components.insert(
            "used_tool".to_string(),
            if self.calls > 0 { 1.0 } else { 0.0 },
        );
        Outcome {
            verdict,
            components,
        }
    }
}

impl Session for CalculatorSession {
    fn step<'a>(&'a mut self, model_turn: &'a str) -> BoxFuture<'a, Result<Reply>> {
        Box::pin(async move {
            let parsed = self.env.format.parse(model_turn);
            if parsed.calls.is_empty() && parsed.errors.is_empty() {
                return Ok(Reply::Done(self.outcome(judge(&self.answer, model_turn))));
            }
            let mut results = Vec::new();
            for call in &parsed.calls {
                self.calls += 1;
                let content = match tool_result(&call.name, &call.arguments) {
                    Ok(v) => v.to_string(),
                    Err(e) => format!("error: {e}"),
                };
                results.push(Message {
                    name: Some(CALCULATOR_TOOL.to_string()),
                    ..Message::new("tool", content)
                });
            }
            for e in &parsed.errors {
                self.calls += 1;
                results.push(Message {
                    name: Some(CALCULATOR_TOOL.to_string()),
                    ..Message::new("tool", format!("error: {e}"))
                });
            }
            if self.calls > self.env.max_calls {
                let v = Verdict::wrong(format!("more than {} tool calls", self.env.max_calls));
                return Ok(Reply::Done(self.outcome(v)));
            }
            Ok(Reply::Continue(results))
        })
    }

    fn finish<'a>(&'a mut self) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async move { Ok(self.outcome(Verdict::wrong("turn limit reached"))) })
    }
}

/// Reward 1 when the turn's `Answer: <n>` equals `answer`.
fn judge(answer: &str, turn: &str) -> Verdict {
    match extract_answer(turn) {
        None => Verdict::wrong("no final answer"),
        Some(n) if n.to_string() == answer => Verdict::correct(format!("answer {n}")),
        Some(n) => Verdict::wrong(format!("answer {n} vs {answer}")),
    }
}

/// The value of one call: the `calculator` tool with a string `expression`.
fn tool_result(name: &str, arguments: &serde_json::Value) -> std::result::Result<i64, String> {
    if name != CALCULATOR_TOOL {
        return Err(format!(
            "unknown tool `{name}`; the tool is `{CALCULATOR_TOOL}`"
        ));
    }
    let expr = arguments
        .get("expression")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| "arguments need a string `expression`".to_string())?;
    evaluate(expr)
}

/// Evaluate an integer expression: decimal integers, `+ - *`, unary minus
/// and parentheses, `*` binding tighter, left to right; overflow is an
/// error, as is anything else.
pub fn evaluate(expr: &str) -> std::result::Result<i64, String> {
    if expr.len() > MAX_EXPRESSION_LEN {
        return Err(format!(
            "expression longer than {MAX_EXPRESSION_LEN} characters"
        ));
    }
    let tokens: Vec<u8> = expr.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut p = Parser { s: &tokens, at: 0 };
    let v = p.sum()?;
    if p.at != tokens.len() {
        return Err(format!(
            "unexpected `{}`; only integers, + - * and parentheses",
            char::from(tokens[p.at])
        ));
    }
    Ok(v)
}

/// A recursive-descent reader over the expression's non-space bytes.
struct Parser<'s> {
    s: &'s [u8],
    at: usize,
}

const OVERFLOW: &str = "integer overflow";

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    /// `product (('+' | '-') product)*`
    fn sum(&mut self) -> std::result::Result<i64, String> {
        let mut v = self.product()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.at += 1;
            let rhs = self.product()?;
            v = if op == b'+' {
                v.checked_add(rhs)
            } else {
                v.checked_sub(rhs)
            }
            .ok_or(OVERFLOW)?;
        }
        Ok(v)
    }

    /// `unary ('*' unary)*`
    fn product(&mut self) -> std::result::Result<i64, String> {
        let mut v = self.unary()?;
        while self.peek() == Some(b'*') {
            self.at += 1;
            v = v.checked_mul(self.unary()?).ok_or(OVERFLOW)?;
        }
        Ok(v)
    }

    /// `'-' unary | '(' sum ')' | integer`
    fn unary(&mut self) -> std::result::Result<i64, String> {
        match self.peek() {
            Some(b'-') => {
                self.at += 1;
                self.unary()?.checked_neg().ok_or_else(|| OVERFLOW.into())
            }
            Some(b'(') => {
                self.at += 1;
                let v = self.sum()?;
                if self.peek() != Some(b')') {
                    return Err("missing `)`".into());
                }
                self.at += 1;
                Ok(v)
            }
            Some(b'0'..=b'9') => {
                let start = self.at;
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.at += 1;
                }
                let digits = std::str::from_utf8(&self.s[start..self.at]).unwrap_or_default();
                digits.parse().map_err(|_| OVERFLOW.into())
            }
            Some(c) => Err(format!(
                "unexpected `{}`; only integers, + - * and parentheses",
                char::from(c)
            )),
            None => Err("the expression ends too early".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_integer_arithmetic_with_precedence_and_parentheses() {
        // Worked by hand: 7*3 = 21, 12+21 = 33, 33-5 = 28.
        assert_eq!(evaluate("12+7*3-5"), Ok(28));
        assert_eq!(evaluate(" (12 + 7) * 3 "), Ok(57));
        assert_eq!(evaluate("-4*-(2-5)"), Ok(-12));
        assert_eq!(evaluate("10-3-2"), Ok(5)); // left to right, not 10-(3-2)
        assert!(evaluate("2/3").unwrap_err().contains("unexpected `/`"));
        assert!(evaluate("(1+2").unwrap_err().contains("missing `)`"));
        assert!(evaluate("1+").unwrap_err().contains("ends too early"));
        assert_eq!(evaluate("9223372036854775807+1"), Err(OVERFLOW.into()));
        assert!(evaluate(&"1+".repeat(150)).unwrap_err().contains("longer"));
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn a_call_is_answered_then_the_final_answer_is_judged() {
        let env = CalculatorEnvironment::default();
        let ex = Example::new("q", "What is 12+7*3-5?", "28", "28");
        let rt = rt();
        let mut started = rt.block_on(env.start(&ex)).unwrap();
        assert_eq!(started.opening.tools, vec![calculator_schema()]);
        assert_eq!(started.opening.messages.last().unwrap().content, ex.prompt);
        let call = r#"<tool_call>{"name": "calculator", "arguments": {"expression": "12+7*3-5"}}</tool_call>"#;
        match rt.block_on(started.session.step(call)).unwrap() {
            Reply::Continue(m) => {
                assert_eq!(m.len(), 1);
                assert_eq!((m[0].role.as_str(), m[0].content.as_str()), ("tool", "28"));
                assert_eq!(m[0].name.as_deref(), Some(CALCULATOR_TOOL));
            }
            other => panic!("expected a tool result, got {other:?}"),
        }
        match rt.block_on(started.session.step("Answer: 28")).unwrap() {
            Reply::Done(o) => {
                assert_eq!(o.verdict.reward, 1.0);
                assert_eq!(o.components["tool_calls"], 1.0);
                assert_eq!(o.components["used_tool"], 1.0);
            }
            other => panic!("expected the end, got {other:?}"),
        }
    }

    #[test]
    fn bad_calls_are_shown_as_errors_and_too_many_calls_score_zero() {
        let env = CalculatorEnvironment {
            max_calls: 2,
            ..CalculatorEnvironment::default()
        };
        let ex = Example::new("q", "What is 1+1?", "2", "2");
        let rt = rt();
        let mut s = rt.block_on(env.start(&ex)).unwrap().session;
        let unknown = r#"<tool_call>{"name": "search", "arguments": {"q": "x"}}</tool_call>"#;
        match rt.block_on(s.step(unknown)).unwrap() {
            Reply::Continue(m) => assert!(m[0].content.starts_with("error: unknown tool")),
            other => panic!("{other:?}"),
        }
        match rt
            .block_on(s.step("<tool_call>not json</tool_call>"))
            .unwrap()
        {
            Reply::Continue(m) => assert!(m[0].content.starts_with("error:"), "{m:?}"),
            other => panic!("{other:?}"),
        }
        let ok =
            r#"<tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}}</tool_call>"#;
        match rt.block_on(s.step(ok)).unwrap() {
            Reply::Done(o) => {
                assert_eq!(o.verdict.reward, 0.0);
                assert!(o.verdict.reason.contains("more than 2"));
                assert_eq!(o.components["tool_calls"], 3.0);
            }
            other => panic!("{other:?}"),
        }
        // Without any call, a wrong answer scores 0 and `used_tool` is 0.
        let mut s = rt.block_on(env.start(&ex)).unwrap().session;
        match rt.block_on(s.step("1+1=3\nAnswer: 3")).unwrap() {
            Reply::Done(o) => {
                assert_eq!(o.verdict.reward, 0.0);
                assert_eq!(o.components["used_tool"], 0.0);
            }
            other => panic!("{other:?}"),
        }
    }
}
