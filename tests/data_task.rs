//! The built-in task (answers checked by an independent evaluator), the
//! teacher prompt template, and the character-level tokenizer loaded through
//! the `tokenizers` crate.

use rand::rngs::StdRng;
use rand::SeedableRng;
use rlsd::data::char_tokenizer::{self, write_char_tokenizer, CHAT_TEMPLATE, EOS_ID, PAD_ID};
use rlsd::data::task::{extract_answer, ArithmeticTask, TaskConfig};
use rlsd::data::{Example, TeacherPrompt, DEFAULT_TEACHER_TEMPLATE};

/// Independent evaluator: precedence by splitting on `+`/`-` into terms of
/// `*`-products (operands are non-negative, so every `-` is an operator).
fn eval(expr: &str) -> i64 {
    let mut total = 0;
    let mut sign = 1;
    let mut term = String::new();
    let product = |t: &str| {
        t.split('*')
            .map(|f| f.parse::<i64>().unwrap())
            .product::<i64>()
    };
    for c in expr.chars() {
        if c == '+' || c == '-' {
            total += sign * product(&term);
            term.clear();
            sign = if c == '+' { 1 } else { -1 };
        } else {
            term.push(c);
        }
    }
    total + sign * product(&term)
}

/// Check that every line `a<op>b=c` of a solution is true arithmetic.
fn lines_are_true(solution: &str) -> bool {
    solution.lines().filter(|l| l.contains('=')).all(|line| {
        let (lhs, rhs) = line.split_once('=').unwrap();
        // lhs may start with a negative number: find the operator after index 0
        let at = lhs[1..].find(['+', '-', '*']).unwrap() + 1;
        let (a, b) = (
            lhs[..at].parse::<i64>().unwrap(),
            lhs[at + 1..].parse::<i64>().unwrap(),
        );
        let value = match &lhs[at..at + 1] {
            "+" => a + b,
            "-" => a - b,
            _ => a * b,
        };
        value == rhs.parse::<i64>().unwrap()
    })
}

#[test]
fn hand_worked_problem() {
    let p = rlsd::data::task::Problem {
        operands: vec![12, 7, 3, 5],
        operators: vec!['+', '*', '-'],
        answer: 28,
    };
    assert_eq!(p.expression(), "12+7*3-5");
    assert_eq!(p.prompt(), "What is 12+7*3-5?");
    assert_eq!(p.solution(), "7*3=21\n12+21=33\n33-5=28\nAnswer: 28");
    let e = p.to_example("x");
    assert_eq!((e.answer.as_str(), e.privileged.as_str()), ("28", "28"));
    let w = p.to_example_with("x", rlsd::data::task::Privileged::Solution);
    assert_eq!(
        (w.answer.as_str(), w.privileged.as_str()),
        ("28", "7*3=21 12+21=33 33-5=28")
    );
    let p = rlsd::data::task::Problem {
        operands: vec![3, 8, 2],
        operators: vec!['-', '+'],
        answer: -3,
    };
    assert_eq!(p.solution(), "3-8=-5\n-5+2=-3\nAnswer: -3");
}

#[test]
fn generated_answers_and_steps_are_right() {
    let task = ArithmeticTask::new(TaskConfig {
        min_operands: 2,
        max_operands: 5,
        max_value: 30,
        operators: "+-*".into(),
        ..TaskConfig::default()
    })
    .unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let mut lengths = std::collections::HashSet::new();
    for _ in 0..500 {
        let p = task.problem(&mut rng);
        lengths.insert(p.operands.len());
        assert!(p.operands.iter().all(|&v| (0..=30).contains(&v)));
        assert_eq!(p.answer, eval(&p.expression()), "{}", p.expression());
        let solution = p.solution();
        assert!(lines_are_true(&solution), "{solution}");
        assert_eq!(solution.lines().count(), p.operands.len());
        assert_eq!(extract_answer(&solution), Some(p.answer));

        let (flawed, stated) = p.flawed_solution(&mut rng);
        assert!(
            !lines_are_true(&flawed),
            "a flawed solution has a false line"
        );
        assert_eq!(extract_answer(&flawed), Some(stated));
    }
    assert_eq!(lengths.len(), 4, "operand counts 2..=5 all occur");
}

#[test]
fn examples_are_seeded() {
    let task = ArithmeticTask::new(TaskConfig::default()).unwrap();
    let a = task.examples(20, 5);
    assert_eq!(a, task.examples(20, 5));
    assert_ne!(a, task.examples(20, 6));
    assert_eq!(a[3].id, "arith-5-3");
    for e in &a {
        let expr = e
            .prompt
            .trim_start_matches("What is ")
            .trim_end_matches('?');
        assert_eq!(e.answer, eval(expr).to_string());
    }
}

#[test]
fn bad_task_configs_name_the_key() {
    let bad = [
        (
            TaskConfig {
                min_operands: 1,
                ..TaskConfig::default()
            },
            "min_operands",
        ),
        (
            TaskConfig {
                max_operands: 1,
                ..TaskConfig::default()
            },
            "min_operands",
        ),
        (
            TaskConfig {
                max_value: 0,
                ..TaskConfig::default()
            },
            "max_value",
        ),
        (
            TaskConfig {
                operators: "+/".into(),
                ..TaskConfig::default()
            },
            "operators",
        ),
        (
            TaskConfig {
                operators: "".into(),
                ..TaskConfig::default()
            },
            "operators",
        ),
    ];
    for (cfg, key) in bad {
        let err = ArithmeticTask::new(cfg).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }
}

#[test]
fn answer_extraction() {
    assert_eq!(extract_answer("1+2=3\nAnswer: 3"), Some(3));
    assert_eq!(extract_answer("Answer: -12 apples"), Some(-12));
    assert_eq!(extract_answer("Answer: 4\nAnswer: 5"), Some(5));
    assert_eq!(extract_answer("Answer:7"), Some(7));
    assert_eq!(extract_answer("Answer: x"), None);
    assert_eq!(extract_answer("Answer: -"), None);
    assert_eq!(extract_answer("the answer is 3"), None);
}

fn example(prompt: &str, privileged: &str) -> Example {
    Example {
        id: "i".into(),
        prompt: prompt.into(),
        answer: "gold".into(),
        privileged: privileged.into(),
        context: Vec::new(),
        extra: Default::default(),
        images: Vec::new(),
    }
}

#[test]
fn teacher_prompt_template() {
    let e = example("What is {answer}+1?", "\\frac{1}{2}");
    let default = TeacherPrompt::default();
    assert_eq!(default.template(), DEFAULT_TEACHER_TEMPLATE);
    assert_eq!(
        default.render(&e),
        "What is {answer}+1?\n\nHere is a reference solution: \\frac{1}{2}\n\n\
         With the reference solution in mind, solve the problem your own way."
    );
    // Placeholders in the inserted text are left alone; other braces kept.
    let t = TeacherPrompt::new("Q: {question} {x} R: {answer}{").unwrap();
    assert_eq!(t.render(&e), "Q: What is {answer}+1? {x} R: \\frac{1}{2}{");
    for bad in ["{question} only", "only {answer}"] {
        let err = TeacherPrompt::new(bad).unwrap_err().to_string();
        assert!(err.contains("data.teacher_template"), "{err}");
    }
}

#[test]
fn char_tokenizer_loads_in_tokenizers_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    write_char_tokenizer(dir.path()).unwrap();
    let tok = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
    assert_eq!(tok.get_vocab_size(true), char_tokenizer::vocab_size());
    assert_eq!(char_tokenizer::vocab_size(), 102);

    let text = "What is 12+7*3-5?\n7*3=21 {x} ~";
    let enc = tok.encode(text, false).unwrap();
    assert_eq!(enc.get_ids().len(), text.len(), "one token per character");
    assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);

    // Special tokens are single ids; unknown characters become <|unk|>.
    let enc = tok
        .encode("<|user|>1+1<|assistant|>2<|end|>é", false)
        .unwrap();
    let ids: Vec<u32> = enc.get_ids().to_vec();
    let id = |s: &str| tok.token_to_id(s).unwrap();
    assert_eq!(
        ids,
        vec![
            id("<|user|>"),
            id("1"),
            id("+"),
            id("1"),
            id("<|assistant|>"),
            id("2"),
            EOS_ID as u32,
            id("<|unk|>")
        ]
    );
    assert_eq!(id("<|pad|>"), PAD_ID as u32);
    assert_eq!(tok.decode(&ids[..7], true).unwrap(), "1+12");

    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["eos_token"], "<|end|>");
    let gen: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("generation_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(gen["eos_token_id"], EOS_ID);
}

#[test]
fn chat_template_renders_turns() {
    let mut env = minijinja::Environment::new();
    env.add_template("chat", CHAT_TEMPLATE).unwrap();
    let t = env.get_template("chat").unwrap();
    let messages = serde_json::json!([
        {"role": "system", "content": "S"},
        {"role": "user", "content": "What is 1+1?"},
        {"role": "assistant", "content": "Answer: 2"}
    ]);
    let out = t
        .render(minijinja::context! { messages => messages, add_generation_prompt => false })
        .unwrap();
    assert_eq!(
        out,
        "<|system|>S<|user|>What is 1+1?<|assistant|>Answer: 2<|end|>"
    );
    let user_only = serde_json::json!([{"role": "user", "content": "Q"}]);
    let out = t
        .render(minijinja::context! { messages => user_only, add_generation_prompt => true })
        .unwrap();
    assert_eq!(out, "<|user|>Q<|assistant|>");
}

/// `data.task.privileged = "solution"` reaches every example of the task, and
/// the default stays the final answer.
#[test]
fn worked_solution_as_privileged_text() {
    let cfg: TaskConfig = toml::from_str("privileged = \"solution\"").unwrap();
    let worked = ArithmeticTask::new(cfg).unwrap().examples(50, 3);
    let plain = ArithmeticTask::new(TaskConfig::default())
        .unwrap()
        .examples(50, 3);
    for (w, p) in worked.iter().zip(&plain) {
        assert_eq!((&w.prompt, &w.answer), (&p.prompt, &p.answer));
        assert_eq!(p.privileged, p.answer);
        // The steps' text, each `a op b = c`, the last result the answer.
        let last = w.privileged.rsplit('=').next().unwrap();
        assert_eq!(last, w.answer, "{}", w.privileged);
        let lines = w.privileged.split(' ').count();
        assert_eq!(
            lines,
            w.prompt.matches(['+', '-', '*']).count(),
            "{}",
            w.prompt
        );
    }
    let bad: Result<TaskConfig, _> = toml::from_str("privileged = \"hint\"");
    assert!(bad.unwrap_err().to_string().contains("privileged"));
}
