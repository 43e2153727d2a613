//! `rlsd inspect`'s credit, recomputed independently: `delta_t` from two
//! separate log-prob passes (teacher prompt with the answer, student prompt),
//! then the spec's formula for `Ahat_t`, against what
//! [`rlsd::observe::inspection::inspect_step`] reports.

mod common;

use rlsd::config::RunConfig;
use rlsd::data::prompt::student_prompt_ids;
use rlsd::data::{Dataset, TeacherPrompt};
use rlsd::model::{token_logprobs, LoadedModel};
use rlsd::observe::inspection::{inspect_step, render_page};
use rlsd::verify::build_verifier;

fn tiny_model(dir: &std::path::Path) -> LoadedModel {
    common::pretrain_tiny(dir);
    LoadedModel::load(dir, tch::Device::Cpu, tch::Kind::Float).unwrap()
}

fn check(algo: &str, model: &LoadedModel) {
    let cfg = RunConfig::load(
        None,
        &[
            format!("algo.algo={algo}"),
            "rollout.group_size=4".into(),
            "rollout.max_new_tokens=12".into(),
            "verifier.kind=regex".into(),
            "verifier.regex.pattern='[0-4]'".into(),
        ],
    )
    .unwrap();
    let verifier = build_verifier(&cfg.verifier).unwrap();
    let mut data = Dataset::from_config(&cfg.data).unwrap();
    let examples = data.next_batch(2);
    let step = 3;
    let ins = inspect_step(
        &cfg,
        model,
        model,
        verifier.as_ref(),
        examples.clone(),
        step,
    )
    .unwrap();
    assert_eq!(ins.responses.len(), 8);
    assert_eq!(ins.algo, algo);
    let lambda = rlsd::rlsd::lambda_at(step, &cfg.algo);
    assert_eq!(ins.lambda, lambda);
    assert!(ins.responses.iter().any(|r| r.advantage != 0.0));

    let tok = model.tokenizer.as_ref().unwrap();
    let template = TeacherPrompt::new(cfg.data.teacher_template.clone()).unwrap();
    let t = cfg.rollout.temperature;
    for r in &ins.responses {
        let ex = &examples[r.group];
        let student = student_prompt_ids(tok, ex).unwrap();
        let teacher = template.ids(tok, ex).unwrap();
        let ids = vec![r.response_ids.clone()];
        let ls = &token_logprobs(&model.lm, &[student], &ids, t).unwrap()[0];
        let lt = &token_logprobs(&model.lm, &[teacher], &ids, t).unwrap()[0];
        assert_eq!(r.tokens.len(), r.response_ids.len());
        assert_eq!(r.ahat.len(), r.response_ids.len());
        let a = f64::from(r.advantage);
        for j in 0..ls.len() {
            let delta = f64::from(lt[j]) - f64::from(ls[j]);
            let want = match algo {
                "grpo" => a,
                "opsd" => delta,
                _ => {
                    let w = (a.signum() * delta).exp();
                    a * ((1.0 - lambda)
                        + lambda * w.clamp(1.0 - cfg.algo.eps_w, 1.0 + cfg.algo.eps_w))
                }
            };
            assert!(
                (f64::from(r.ahat[j]) - want).abs() < 1e-4,
                "{algo} token {j}: Ahat {} vs {want}",
                r.ahat[j]
            );
            if algo != "grpo" {
                assert!((f64::from(r.delta_or_zeros()[j]) - delta).abs() < 1e-4);
            }
        }
    }
    let page = render_page(&ins, "test <page>").unwrap();
    assert!(page.contains("test &lt;page&gt;"));
    assert_eq!(page.matches("<div class=\"response").count(), 8);
}

#[test]
fn inspect_credit_matches_an_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    for algo in ["rlsd", "grpo", "opsd"] {
        check(algo, &model);
    }
}
