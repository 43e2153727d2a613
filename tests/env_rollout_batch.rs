//! An episode rollout through the step's later stages, by hand: the
//! `EpisodeRollout`'s mask becomes `TrainBatch::response_mask` (a
//! single-turn neighbour gets all ones), the verifier stage keeps the
//! environment's score, and the completions records mark the environment's
//! tokens untrained with no credit (`trained`, `ahat` 0, shown in `⟦ ⟧`).

use rlsd::config::RunConfig;
use rlsd::data::Example;
use rlsd::pipeline::{
    sample_completions, verify_all, CreditBatch, EpisodeRollout, Rollout, RolloutBatch, Score,
    StepPlan, TeacherBatch, TeacherScores,
};
use rlsd::rlsd::{Algo, AlgoConfig};
use rlsd::stats::StageTimings;
use rlsd::verify::{Verdict, Verifier};

/// Panics if called: an episode's score must not go through the verifier.
struct NeverCalled;

impl Verifier for NeverCalled {
    fn verify(&self, _: &Example, response: &str) -> Verdict {
        if response.starts_with("single") {
            return Verdict::correct("verifier");
        }
        panic!("the verifier scored an episode")
    }
}

#[test]
fn an_episode_trains_only_its_model_tokens() {
    let cfg = RunConfig {
        algo: AlgoConfig::with_algo(Algo::Rlsd),
        ..RunConfig::default()
    };
    let ex = Example::new("ex-1", "3*4+1=?", "13", "13");
    let mut plan = StepPlan::new(&cfg, 2, 0, vec![ex], serde_json::Value::Null);
    plan.lambda = 0.5;
    plan.needs_teacher = true;
    // Episode: model [5, 6] | environment [30, 31] | model [7].
    let episode = Rollout {
        group: 0,
        prompt_ids: vec![1, 2],
        response_ids: vec![5, 6, 30, 31, 7],
        response_text: "episode".into(),
        sampling_logprobs: vec![-1.0, -0.5, 0.0, 0.0, -2.0],
        episode: Some(EpisodeRollout {
            response_mask: vec![1.0, 1.0, 0.0, 0.0, 1.0],
            score: Score {
                reward: 1.0,
                correct: true,
                reason: "environment".into(),
                timed_out: false,
            },
            turns: 2,
            tool_calls: 1,
            teacher_prompt_ids: None,
        }),
        ..Rollout::default()
    };
    let single = Rollout {
        group: 0,
        prompt_ids: vec![1, 2],
        response_ids: vec![8, 9],
        response_text: "single".into(),
        sampling_logprobs: vec![-1.0, -1.0],
        ..Rollout::default()
    };
    let rolled = RolloutBatch {
        plan,
        policy_version: 1,
        rollouts: vec![episode, single],
        timings: StageTimings::default(),
    };
    let scored = verify_all(&NeverCalled, rolled).unwrap();
    assert_eq!(scored.scores[0].reason, "environment");
    assert_eq!(scored.scores[1].reason, "verifier");
    let batch = CreditBatch {
        taught: TeacherBatch {
            scored,
            teacher: TeacherScores {
                version: 0,
                logprobs: Some(vec![vec![-0.5, -0.5, -3.0, -3.0, -1.0], vec![-1.0, -1.0]]),
                neg_logprobs: None,
                support: None,
            },
        },
        advantages: vec![0.7, -0.7],
    };
    let tb = batch.train_batch(&cfg.algo, 1.0);
    assert_eq!(
        tb.response_mask,
        Some(vec![vec![1.0, 1.0, 0.0, 0.0, 1.0], vec![1.0, 1.0]])
    );
    let records = sample_completions(&batch, &tb, &cfg.algo, None, 2);
    assert_eq!(records.len(), 2);
    let (e, s) = (&records[0], &records[1]);
    assert_eq!(e.trained, Some(vec![1.0, 1.0, 0.0, 0.0, 1.0]));
    assert_eq!(s.trained, None);
    assert_eq!(&e.ahat[2..4], &[0.0, 0.0]);
    for j in [0, 1, 4] {
        assert!(e.ahat[j] > 0.0, "{:?}", e.ahat);
    }
    assert!(s.ahat.iter().all(|&a| a < 0.0), "{:?}", s.ahat);
    assert_eq!(e.display_tokens(), ["<5>", "<6>", "⟦<30>", "<31>⟧", "<7>"]);
    assert_eq!(s.display_tokens(), ["<8>", "<9>"]);
}
