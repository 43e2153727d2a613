//! Validation during training and the new per-step metrics, through the
//! plain training loop on the built-in task's tiny model: validation runs
//! before step 1 and after every `validation.every` steps, and every
//! algorithm of the paper's comparison runs a step (sdpo and grpo+opsd with
//! the full-vocabulary JSD / top-k KL forms).

use rlsd::config::{builtin_model_dir, RunConfig};
use rlsd::data::TeacherPrompt;
use rlsd::model::LoadedModel;
use rlsd::run::sequential::run_sequential;

fn run(extra: &[&str]) -> Vec<rlsd::stats::StepStats> {
    let dir = tempfile::tempdir().unwrap();
    let mut set: Vec<String> = vec![
        "runtime.steps=2".into(),
        "runtime.max_staleness=0".into(),
        "runtime.sampler_device=\"cpu\"".into(),
        "runtime.teacher_device=\"cpu\"".into(),
        "runtime.optimizer_device=\"cpu\"".into(),
        format!("runtime.out_dir=\"{}\"", dir.path().display()),
        "rollout.batch_prompts=2".into(),
        "rollout.group_size=4".into(),
        "rollout.max_new_tokens=24".into(),
    ];
    set.extend(extra.iter().map(|s| s.to_string()));
    let cfg = RunConfig::load(None, &set).unwrap();
    let load =
        || LoadedModel::load(&builtin_model_dir(), tch::Device::Cpu, tch::Kind::Float).unwrap();
    let verifier = rlsd::verify::build_verifier(&cfg.verifier).unwrap();
    let mut source = rlsd::run::source::from_config(&cfg).unwrap();
    let template = TeacherPrompt::new(cfg.data.teacher_template.clone()).unwrap();
    let (_, stats) = run_sequential(
        &cfg,
        load(),
        load(),
        verifier.as_ref(),
        source.as_mut(),
        &template,
    )
    .unwrap();
    stats
}

#[test]
fn validation_runs_before_training_and_every_n_steps() {
    let stats = run(&[
        "validation.every=2",
        "validation.num_prompts=4",
        "validation.samples=2",
    ]);
    assert_eq!(stats.len(), 2);
    let after: Vec<u64> = stats[0].validation.iter().map(|v| v.after_step).collect();
    assert_eq!(after, vec![0]);
    let after: Vec<u64> = stats[1].validation.iter().map(|v| v.after_step).collect();
    assert_eq!(after, vec![2]);
    for v in stats.iter().flat_map(|s| &s.validation) {
        assert_eq!((v.n, v.samples), (4, 2));
        for x in [v.pass1_greedy, v.pass1_sampled, v.pass_at_k, v.maj_at_k] {
            assert!((0.0..=1.0).contains(&x), "{v:?}");
        }
        assert!(v.pass_at_k >= v.pass1_sampled - 1e-12);
    }
    for s in &stats {
        assert!((0.0..=1.0).contains(&s.truncation_rate));
        assert!((0.0..=1.0).contains(&s.leakage_rate));
        let clip = s.weight_clip_low_frac + s.weight_clip_high_frac;
        assert!((clip - s.weight_clip_frac).abs() < 1e-12, "{s:?}");
    }
}

#[test]
fn every_baseline_runs_a_step() {
    for extra in [
        &[
            "algo.algo=\"sdpo\"",
            "algo.opsd_loss=\"jsd\"",
            "algo.distill_topk=0",
        ][..],
        &[
            "algo.algo=\"grpo+opsd\"",
            "algo.opsd_loss=\"kl\"",
            "algo.distill_topk=8",
            "algo.distill_coef=0.5",
        ],
        &["algo.algo=\"opsd\"", "algo.opsd_loss=\"token-kl\""],
        &["algo.algo=\"cepo\""],
    ] {
        let stats = run(extra);
        for s in &stats {
            assert!(!s.skipped, "{extra:?}: {:?}", s.skip_reason);
            assert!(s.loss.is_finite());
        }
        if extra.iter().any(|e| e.starts_with("algo.opsd_loss")) {
            assert!(stats.iter().all(|s| s.distill_loss != 0.0), "{extra:?}");
        }
    }
}
