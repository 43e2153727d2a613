//! The built-in task: multi-step integer arithmetic with worked solutions.
//!
//! A problem is an expression such as `12+7*3-5`; its worked solution does one
//! binary operation per line (multiplications first, then left to right) and
//! ends with `Answer: <n>`:
//!
//! ```text
//! What is 12+7*3-5?
//! 7*3=21
//! 12+21=33
//! 33-5=28
//! Answer: 28
//! ```
//!
//! The final answer is the gold answer. The privileged text the teacher sees
//! is the final answer (`privileged = "answer"`, the default) or the worked
//! solution's step lines (`privileged = "solution"`: the intermediate results
//! too, so per-token credit has more than the last number to locate). Difficulty is
//! the number of operands, the operand range and the operator set. Everything
//! is drawn from a seeded RNG, so a seed names a dataset.

use super::task_image::{with_image, TaskImage};
use super::Example;
use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Difficulty and size of the built-in task (`[data.task]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskConfig {
    /// Fewest operands in a problem (at least 2).
    pub min_operands: usize,
    /// Most operands in a problem.
    pub max_operands: usize,
    /// Operands are drawn uniformly from `0..=max_value`.
    pub max_value: i64,
    /// Operators to draw from, any of `+`, `-`, `*`.
    pub operators: String,
    /// Number of problems when the task is used as a dataset.
    pub num_examples: usize,
    /// Seed of the problem generator.
    pub seed: u64,
    /// What the teacher is shown as privileged text.
    pub privileged: Privileged,
    /// Whether problems are shown as pictures (`"question"`, `"half"`) or
    /// as text (`"off"`, the default); see [`super::task_image`].
    pub image: TaskImage,
}

/// The privileged text of a built-in problem (`data.task.privileged`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Privileged {
    /// The final answer only (`28`).
    #[default]
    Answer,
    /// The worked solution's step lines without the `Answer:` line, joined
    /// by spaces (`7*3=21 12+21=33 33-5=28`): every intermediate result.
    Solution,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            min_operands: 2,
            max_operands: 3,
            max_value: 20,
            operators: "+-".into(),
            num_examples: 2000,
            seed: 0,
            privileged: Privileged::Answer,
            image: TaskImage::Off,
        }
    }
}

/// One line of a worked solution: `lhs op rhs = result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Left operand.
    pub lhs: i64,
    /// Operator (`+`, `-` or `*`).
    pub op: char,
    /// Right operand.
    pub rhs: i64,
    /// Value written after `=`.
    pub result: i64,
}

impl Step {
    fn line(&self) -> String {
        format!("{}{}{}={}", self.lhs, self.op, self.rhs, self.result)
    }
}

/// A generated problem with its correct worked solution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Operands in order.
    pub operands: Vec<i64>,
    /// Operators between them (`operands.len() - 1`).
    pub operators: Vec<char>,
    /// The value of the expression.
    pub answer: i64,
}

impl Problem {
    /// The expression, e.g. `12+7*3-5`.
    pub fn expression(&self) -> String {
        let mut s = self.operands[0].to_string();
        for (op, value) in self.operators.iter().zip(&self.operands[1..]) {
            s.push(*op);
            s.push_str(&value.to_string());
        }
        s
    }

    /// The user prompt.
    pub fn prompt(&self) -> String {
        format!("What is {}?", self.expression())
    }

    /// The correct steps: multiplications left to right, then additions and
    /// subtractions left to right.
    pub fn steps(&self) -> Vec<Step> {
        solve(&self.operands, &self.operators, None)
    }

    /// The correct worked solution, ending with `Answer: <n>`.
    pub fn solution(&self) -> String {
        render(&self.steps())
    }

    /// A worked solution with one arithmetic slip: the result of one step is
    /// off by 1 to 3, and later steps carry the wrong value on. Returns the
    /// text and the final number it states (which can still equal the true
    /// answer when a later `*0` swallows the slip).
    pub fn flawed_solution(&self, rng: &mut StdRng) -> (String, i64) {
        let n_steps = self.operators.len();
        let at = rng.random_range(0..n_steps);
        let magnitude = rng.random_range(1..=3);
        let delta = if rng.random_bool(0.5) {
            magnitude
        } else {
            -magnitude
        };
        let steps = solve(&self.operands, &self.operators, Some((at, delta)));
        let stated = steps.last().map(|s| s.result).unwrap_or(self.answer);
        (render(&steps), stated)
    }

    /// The problem as a dataset example whose privileged text is the final
    /// answer.
    pub fn to_example(&self, id: impl Into<String>) -> Example {
        self.to_example_with(id, Privileged::Answer)
    }

    /// The problem as a dataset example with the chosen privileged text.
    pub fn to_example_with(&self, id: impl Into<String>, privileged: Privileged) -> Example {
        Example {
            id: id.into(),
            prompt: self.prompt(),
            answer: self.answer.to_string(),
            privileged: self.privileged(privileged),
            context: Vec::new(),
            extra: Default::default(),
            images: Vec::new(),
        }
    }

    /// The expression split after its first `ceil(n / 2)` operands: the
    /// part `data.task.image = "half"` draws (`12+7`) and the part left in
    /// text, starting with its operator (`*3-5`).
    pub fn split_half(&self) -> (String, String) {
        let k = self.operands.len().div_ceil(2);
        let mut pictured = String::new();
        let mut rest = String::new();
        for (i, value) in self.operands.iter().enumerate() {
            let out = if i < k { &mut pictured } else { &mut rest };
            if i > 0 {
                out.push(self.operators[i - 1]);
            }
            out.push_str(&value.to_string());
        }
        (pictured, rest)
    }

    /// The privileged text of this problem (see [`Privileged`]).
    pub fn privileged(&self, kind: Privileged) -> String {
        match kind {
            Privileged::Answer => self.answer.to_string(),
            Privileged::Solution => {
                let lines: Vec<String> = self.steps().iter().map(Step::line).collect();
                lines.join(" ")
            }
        }
    }
}

/// Evaluate with precedence, one step per operation. `slip = Some((k, d))`
/// adds `d` to the result of step `k` (for flawed solutions).
fn solve(operands: &[i64], operators: &[char], slip: Option<(usize, i64)>) -> Vec<Step> {
    let mut values = operands.to_vec();
    let mut ops = operators.to_vec();
    let mut steps = Vec::with_capacity(ops.len());
    let mut apply = |values: &mut Vec<i64>, ops: &mut Vec<char>, i: usize| {
        let (lhs, op, rhs) = (values[i], ops[i], values[i + 1]);
        let mut result = match op {
            '+' => lhs + rhs,
            '-' => lhs - rhs,
            _ => lhs * rhs,
        };
        if let Some((k, d)) = slip {
            if k == steps.len() {
                result += d;
            }
        }
        steps.push(Step {
            lhs,
            op,
            rhs,
            result,
        });
        values[i] = result;
        values.remove(i + 1);
        ops.remove(i);
    };
    while let Some(i) = ops.iter().position(|&op| op == '*') {
        apply(&mut values, &mut ops, i);
    }
    while !ops.is_empty() {
        apply(&mut values, &mut ops, 0);
    }
    steps
}

fn render(steps: &[Step]) -> String {
    let mut s = String::new();
    for step in steps {
        s.push_str(&step.line());
        s.push('\n');
    }
    let last = steps.last().map(|s| s.result).unwrap_or(0);
    s.push_str(&format!("{ANSWER_PREFIX} {last}"));
    s
}

/// Text that introduces the final answer in a solution.
pub const ANSWER_PREFIX: &str = "Answer:";

/// The integer after the last `Answer:` in a response, if there is one.
pub fn extract_answer(response: &str) -> Option<i64> {
    let at = response.rfind(ANSWER_PREFIX)?;
    let rest = response[at + ANSWER_PREFIX.len()..].trim_start();
    let end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map(|(i, _)| i)
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Generator of arithmetic problems at a configured difficulty.
#[derive(Debug, Clone)]
pub struct ArithmeticTask {
    /// Checked configuration.
    cfg: TaskConfig,
    /// Operators parsed from `cfg.operators`.
    operators: Vec<char>,
}

impl ArithmeticTask {
    /// Check the configuration.
    pub fn new(cfg: TaskConfig) -> Result<Self> {
        if cfg.min_operands < 2 || cfg.max_operands < cfg.min_operands {
            let key = if cfg.min_operands < 2 || cfg.min_operands > 16 {
                "data.task.min_operands"
            } else {
                "data.task.max_operands"
            };
            return Err(Error::config(
                key,
                format!(
                    "need 2 <= min_operands <= max_operands, got {} and {}",
                    cfg.min_operands, cfg.max_operands
                ),
            ));
        }
        if cfg.max_operands > 16 {
            return Err(Error::config(
                "data.task.max_operands",
                "at most 16 operands",
            ));
        }
        if !(1..=1_000_000).contains(&cfg.max_value) {
            return Err(Error::config(
                "data.task.max_value",
                "must be between 1 and 1000000",
            ));
        }
        let mut operators: Vec<char> = cfg.operators.chars().collect();
        operators.sort_unstable();
        operators.dedup();
        if operators.is_empty() || operators.iter().any(|c| !"+-*".contains(*c)) {
            return Err(Error::config(
                "data.task.operators",
                format!("expected some of `+-*`, got {:?}", cfg.operators),
            ));
        }
        Ok(ArithmeticTask { cfg, operators })
    }

    /// The configuration.
    pub fn config(&self) -> &TaskConfig {
        &self.cfg
    }

    /// Draw one problem.
    pub fn problem(&self, rng: &mut StdRng) -> Problem {
        let n = rng.random_range(self.cfg.min_operands..=self.cfg.max_operands);
        let operands: Vec<i64> = (0..n)
            .map(|_| rng.random_range(0..=self.cfg.max_value))
            .collect();
        let operators: Vec<char> = (1..n)
            .map(|_| self.operators[rng.random_range(0..self.operators.len())])
            .collect();
        let answer = solve(&operands, &operators, None)
            .last()
            .map(|s| s.result)
            .unwrap_or(operands[0]);
        Problem {
            operands,
            operators,
            answer,
        }
    }

    /// `n` problems from `seed`, in order.
    pub fn problems(&self, n: usize, seed: u64) -> Vec<Problem> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(|_| self.problem(&mut rng)).collect()
    }

    /// `n` problems from `seed`, as text examples with ids
    /// `arith-<seed>-<i>` (`data.task.image` is not applied; see
    /// [`Self::dataset_examples`]).
    pub fn examples(&self, n: usize, seed: u64) -> Vec<Example> {
        self.problems(n, seed)
            .iter()
            .enumerate()
            .map(|(i, p)| p.to_example_with(format!("arith-{seed}-{i}"), self.cfg.privileged))
            .collect()
    }

    /// `n` problems from `seed` as the configured dataset: the text examples
    /// of [`Self::examples`], rendered as pictures when `data.task.image`
    /// asks for it ([`super::task_image`]).
    pub fn dataset_examples(&self, n: usize, seed: u64) -> Result<Vec<Example>> {
        let text = self.examples(n, seed);
        if self.cfg.image == TaskImage::Off {
            return Ok(text);
        }
        self.problems(n, seed)
            .iter()
            .zip(text)
            .map(|(p, ex)| self.image_example(p, ex))
            .collect()
    }

    /// A problem's text example in the configured `data.task.image` form.
    pub fn image_example(&self, problem: &Problem, example: Example) -> Result<Example> {
        match self.cfg.image {
            TaskImage::Off => Ok(example),
            TaskImage::Question => with_image(example, &problem.expression(), ""),
            TaskImage::Half => {
                let (pictured, rest) = problem.split_half();
                with_image(example, &pictured, &rest)
            }
        }
    }
}
