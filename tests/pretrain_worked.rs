//! The committed base model of the worked-solution task,
//! `assets/tiny-arith-worked/` (made by
//! `rlsd pretrain --config configs/pretrain-worked.toml`): weak on its own,
//! and its teacher, shown the worked solution's steps, knows every step's
//! result, not only the final answer.

use rlsd::data::prompt::TeacherPrompt;
use rlsd::data::task::{ArithmeticTask, Privileged};
use rlsd::pretrain::{
    held_out_problems, heldout_accuracy, load_base_model, scored_token_logprob, PretrainConfig,
    ScoredTokens,
};
use std::path::{Path, PathBuf};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The pretraining configuration the committed model was made with.
fn worked_config() -> PretrainConfig {
    let text = std::fs::read_to_string(repo("configs/pretrain-worked.toml")).unwrap();
    let cfg: PretrainConfig = toml::from_str(&text).unwrap();
    assert_eq!(cfg.task.privileged, Privileged::Solution);
    cfg
}

#[test]
fn worked_base_model_is_weak_but_not_zero() {
    let model = load_base_model(&repo("assets/tiny-arith-worked")).unwrap();
    let cfg = worked_config();
    let task = ArithmeticTask::new(cfg.task.clone()).unwrap();
    let problems = held_out_problems(&task, 64, cfg.seed);
    let accuracy = heldout_accuracy(&model, &problems, cfg.eval_max_new_tokens, None).unwrap();
    assert!(
        (0.05..=0.7).contains(&accuracy),
        "greedy held-out accuracy {accuracy} is outside the base model's range"
    );
}

/// On every step's result (intermediate ones included), teacher-forced on the
/// correct solution: the teacher shown the worked steps beats the student
/// prompt, and beats the same teacher shown only the final answer (which
/// tells it nothing about the intermediate results).
#[test]
fn worked_base_model_teacher_knows_the_intermediate_results() {
    let model = load_base_model(&repo("assets/tiny-arith-worked")).unwrap();
    let cfg = worked_config();
    let task = ArithmeticTask::new(cfg.task.clone()).unwrap();
    // Problems with an intermediate result: three operands or more.
    let problems: Vec<_> = held_out_problems(&task, 256, cfg.seed)
        .into_iter()
        .filter(|p| p.operands.len() >= 3)
        .collect();
    assert!(problems.len() >= 32, "{} problems", problems.len());
    let teacher = TeacherPrompt::new(cfg.teacher_template.clone()).unwrap();
    let results = ScoredTokens::Results;
    let student = scored_token_logprob(&model, &problems, None, results).unwrap();
    let worked = Some((&teacher, Privileged::Solution));
    let with_steps = scored_token_logprob(&model, &problems, worked, results).unwrap();
    let answer_only = Some((&teacher, Privileged::Answer));
    let with_answer = scored_token_logprob(&model, &problems, answer_only, results).unwrap();
    eprintln!(
        "step results, mean log-prob: steps shown {with_steps:.4}, answer shown \
         {with_answer:.4}, student {student:.4}"
    );
    assert!(with_steps.is_finite() && student.is_finite() && with_answer.is_finite());
    assert!(
        with_steps > student + 0.1,
        "teacher {with_steps} does not beat student {student} on the step results"
    );
    assert!(
        with_steps > with_answer + 0.05,
        "the worked steps ({with_steps}) add nothing over the answer ({with_answer})"
    );
}
