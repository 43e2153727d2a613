//! One GRPO/RLSD step on the built-in base model moves probability toward
//! the rewarded responses: measured with the generation path's own log-probs
//! (an independent code path from the training forward).

use rlsd::config::RunConfig;
use rlsd::data::TeacherPrompt;
use rlsd::model::{token_logprobs, LoadedModel};
use rlsd::pipeline::{needs_teacher_pass, prepare_step, StepPlan};
use rlsd::train::{train_step, Trainer};

fn one_step_gain(algo: &str, lr: f64) -> (f64, usize) {
    let set = vec![
        format!("algo.algo=\"{algo}\""),
        format!("optim.lr={lr}"),
        "rollout.batch_prompts=8".to_string(),
        "rollout.group_size=8".to_string(),
    ];
    let cfg = RunConfig::load(None, &set).unwrap();
    let kind = rlsd::model::parse_kind(&cfg.model.dtype).unwrap();
    let path = cfg.model.resolved_path();
    let policy = LoadedModel::load(&path, tch::Device::Cpu, kind).unwrap();
    let teacher = LoadedModel::load(&path, tch::Device::Cpu, kind).unwrap();
    let verifier = rlsd::verify::build_verifier(&cfg.verifier).unwrap();
    let mut source = rlsd::run::source::from_config(&cfg).unwrap();
    let template = TeacherPrompt::new(cfg.data.teacher_template.clone()).unwrap();

    let mut plan = StepPlan::new(
        &cfg,
        1,
        0,
        source.next_batch(cfg.rollout.batch_prompts).unwrap(),
        serde_json::Value::Null,
    );
    // The full lambda from the first step (the schedule may warm up from 0).
    plan.seed = 7;
    plan.lambda = cfg.algo.lambda0();
    plan.lr = lr;
    plan.needs_teacher = needs_teacher_pass(&cfg.algo, plan.lambda);
    let t = cfg.rollout.temperature;
    let batch = prepare_step(
        &cfg,
        plan,
        &policy,
        0,
        &teacher,
        0,
        verifier.as_ref(),
        &template,
    )
    .unwrap();
    let nonzero = batch.advantages.iter().filter(|&&a| a != 0.0).count();

    let tb = batch.train_batch(&cfg.algo, t);
    let mut trainer = Trainer::new(policy, cfg.algo.clone(), cfg.optim.clone()).unwrap();
    let stats = train_step(&mut trainer, &tb).unwrap();
    assert!(!stats.skipped, "{:?}", stats.skip_reason);

    let prompts: Vec<Vec<i64>> = batch
        .rollouts()
        .iter()
        .map(|s| s.prompt_ids.clone())
        .collect();
    let responses: Vec<Vec<i64>> = batch
        .rollouts()
        .iter()
        .map(|s| s.response_ids.clone())
        .collect();
    let after =
        tch::no_grad(|| token_logprobs(&trainer.policy.lm, &prompts, &responses, t)).unwrap();
    // sum_i A_i * (mean_t logp_after - mean_t logp_before): positive when the
    // step moved mass toward responses with positive advantage.
    let gain = batch
        .rollouts()
        .iter()
        .zip(&batch.advantages)
        .zip(&after)
        .map(|((s, adv), a)| {
            let n = s.sampling_logprobs.len().max(1) as f64;
            let d: f64 = a
                .iter()
                .zip(&s.sampling_logprobs)
                .map(|(x, y)| (*x - *y) as f64)
                .sum();
            *adv as f64 * d / n
        })
        .sum();
    (gain, nonzero)
}

#[test]
fn a_grpo_step_raises_rewarded_responses() {
    let (gain, nonzero) = one_step_gain("grpo", 1e-4);
    assert!(nonzero > 0, "the batch needs some signal");
    assert!(gain > 0.0, "gain {gain}");
}

#[test]
fn an_rlsd_step_raises_rewarded_responses() {
    let (gain, nonzero) = one_step_gain("rlsd", 1e-4);
    assert!(nonzero > 0, "the batch needs some signal");
    assert!(gain > 0.0, "gain {gain}");
}
