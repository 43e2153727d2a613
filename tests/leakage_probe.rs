//! The held-out leakage measurement (issue 23, item 6) can fire: n-grams of
//! the teacher's context that the student's prompt and answer line do not
//! hold, and cue phrases. Hand-made token ids first, then the built-in
//! model: its own sampled responses (a student that never saw a teacher, as
//! GRPO's) leak nothing, and a planted copier that writes its teacher's
//! context before answering leaks on every response.

use rlsd::config::RunConfig;
use rlsd::data::prompt::TeacherPrompt;
use rlsd::model::LoadedModel;
use rlsd::pipeline::leakage_probe::{has_cue, leakage_rates, PrivilegedSpans};
use rlsd::run::evaluate::{evaluate, held_out_examples, held_out_leakage, EvalOptions, EvalRecord};

/// By hand, n = 3: teacher message 1 2 3 4 5 6 (question 1 2 3, then the
/// privileged 4 5 6), student message 1 2 3, answer line 5 6 7. The
/// privileged 3-grams are (2 3 4), (3 4 5), (4 5 6): (1 2 3) is the
/// question's, and no 3-gram of the answer line is the teacher's.
#[test]
fn privileged_spans_by_hand() {
    let s = PrivilegedSpans::new(&[1, 2, 3, 4, 5, 6], &[1, 2, 3], &[vec![5, 6, 7]], 3);
    assert_eq!(s.len(), 3);
    assert!(s.found_in(&[9, 3, 4, 5, 9]));
    assert!(
        !s.found_in(&[1, 2, 3, 9, 5, 6, 7]),
        "question and answer line are public"
    );
    assert!(!s.found_in(&[4, 5]), "shorter than n");
    // The answer line removes what a correct response must write.
    let s = PrivilegedSpans::new(&[1, 2, 3, 4, 5, 6], &[1, 2, 3], &[vec![4, 5, 6]], 3);
    assert_eq!(s.len(), 2);
    assert!(!s.found_in(&[4, 5, 6]));
    // Cue phrases, case-insensitive.
    assert!(has_cue("As The Reference Solution shows, 4"));
    assert!(!has_cue("2 + 2 = 4"));
    let r = leakage_rates(
        [
            (&s, &[2i64, 3, 4][..], "x"),
            (&s, &[9i64][..], "per the hint"),
            (&s, &[9i64][..], "honest"),
            (&s, &[9i64][..], "honest"),
        ]
        .into_iter(),
    );
    assert_eq!((r.span, r.cue, r.any), (0.25, 0.25, 0.5));
}

#[test]
fn zero_for_a_student_without_teacher_and_high_for_a_planted_copier() {
    let set = vec![
        "validation.num_prompts=16".to_string(),
        "data.teacher_template=\"{question}\\n\\nHere is a reference solution: {answer}\\n\\nSolve it your own way.\"".to_string(),
    ];
    let cfg = RunConfig::load(None, &set).unwrap();
    let kind = rlsd::model::parse_kind(&cfg.model.dtype).unwrap();
    let model = LoadedModel::load(&cfg.model.resolved_path(), tch::Device::Cpu, kind).unwrap();
    let verifier = rlsd::verify::build_verifier(&cfg.verifier).unwrap();
    let examples = held_out_examples(&cfg).unwrap();
    assert_eq!(examples.len(), 16);
    let teacher = TeacherPrompt::for_data(&cfg.data).unwrap();
    let opts = EvalOptions {
        max_new_tokens: cfg.rollout.max_new_tokens,
        batch_size: 64,
        temperature: 1.0,
        seed: 3,
        samples: 4,
        filters: Default::default(),
    };
    // The base model, sampled on its own prompts: it never saw the teacher.
    let own = evaluate(&model, &examples, verifier.as_ref(), &opts, None).unwrap();
    assert!(
        own.accuracy > 0.2,
        "the base model answers: {}",
        own.accuracy
    );
    let honest = held_out_leakage(&model, &examples, &own.records, &teacher, 8).unwrap();
    assert_eq!((honest.span, honest.cue), (0.0, 0.0), "{honest:?}");
    // A planted copier: the same responses, after a copy of its teacher's
    // context (what OPSD's student learns to imitate, Thm. 1).
    let copied: Vec<EvalRecord> = own
        .records
        .iter()
        .zip(examples.iter().flat_map(|e| std::iter::repeat_n(e, 4)))
        .map(|(r, ex)| EvalRecord {
            response: format!("{}\n{}", teacher.render(ex), r.response),
            ..r.clone()
        })
        .collect();
    let leak = held_out_leakage(&model, &examples, &copied, &teacher, 8).unwrap();
    assert_eq!((leak.span, leak.cue), (1.0, 1.0), "{leak:?}");
    // A quieter copier: only "reference solution: <answer>" (no question),
    // half of the time.
    let quiet: Vec<EvalRecord> = copied
        .iter()
        .zip(&own.records)
        .enumerate()
        .map(|(i, (c, r))| {
            let response = if i % 2 == 0 {
                format!("reference solution: {}\n{}", c.answer, r.response)
            } else {
                r.response.clone()
            };
            EvalRecord {
                response,
                ..r.clone()
            }
        })
        .collect();
    let leak = held_out_leakage(&model, &examples, &quiet, &teacher, 8).unwrap();
    assert_eq!(leak.span, 0.5, "{leak:?}");
}
