//! The whole actor tree on the built-in task's tiny model, on CPU.

#[path = "common/tiny_run.rs"]
mod tiny_run;
use rlsd::actors::{Role, Runtime};
use rlsd::config::RunConfig;
use rlsd::data::TeacherPrompt;
use rlsd::model::LoadedModel;
use rlsd::run::sequential::run_sequential;
use std::collections::HashSet;

fn config(
    algo: &str,
    steps: u64,
    staleness: u64,
    extra: &[&str],
) -> (RunConfig, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut set = tiny_run::tiny_run(dir.path(), steps, 24);
    set.extend([
        format!("algo.algo=\"{algo}\""),
        format!("runtime.max_staleness={staleness}"),
        "runtime.teacher_sync_interval=2".into(),
        tiny_run::FAST_LR.into(),
    ]);
    set.extend(extra.iter().map(|s| s.to_string()));
    (RunConfig::load(None, &set).unwrap(), dir)
}

fn run(cfg: RunConfig) -> rlsd::actors::RunReport {
    tiny_run::rt()
        .block_on(Runtime::builder(cfg).run())
        .unwrap()
}

#[test]
fn whole_tree_runs_every_algorithm() {
    for algo in ["rlsd", "grpo", "opsd", "cepo"] {
        let (cfg, dir) = config(algo, 3, 1, &[]);
        let report = run(cfg);
        assert!(!report.failed, "{algo}: {}", report.reason);
        assert_eq!(report.steps.len(), 3, "{algo}");
        let steps: Vec<u64> = report.steps.iter().map(|s| s.step).collect();
        assert_eq!(steps, vec![1, 2, 3]);
        assert!(dir.path().join("metrics.jsonl").exists());
        assert!(report.last_checkpoint.is_some(), "final checkpoint written");
        for s in &report.steps {
            assert!(s.grad_norm.is_finite());
            assert!(s.timings.generate_s > 0.0 && s.timings.train_s > 0.0);
        }
    }
}

#[test]
fn staleness_zero_matches_the_sequential_loop_exactly() {
    // Validation (before step 1 and after step 2) runs in the optimizer actor
    // and must give what the sequential loop gives.
    let validation = [
        "validation.every=2",
        "validation.num_prompts=3",
        "validation.samples=2",
    ];
    let (cfg, _dir) = config("rlsd", 3, 0, &validation);
    let report = tiny_run::rt()
        .block_on(
            Runtime::builder(cfg.clone())
                .verifier(tiny_run::ByteSumMod3)
                .run(),
        )
        .unwrap();
    assert!(!report.failed, "{}", report.reason);
    assert!(
        report.steps.iter().all(|s| s.grad_norm > 0.0),
        "every step must have a real gradient for this test to mean anything"
    );

    let kind = rlsd::model::parse_kind(&cfg.model.dtype).unwrap();
    let path = cfg.model.resolved_path();
    let policy = LoadedModel::load(&path, tch::Device::Cpu, kind).unwrap();
    let teacher = LoadedModel::load(&path, tch::Device::Cpu, kind).unwrap();
    let mut source = rlsd::run::source::from_config(&cfg).unwrap();
    let template = TeacherPrompt::new(cfg.data.teacher_template.clone()).unwrap();
    let (trainer, stats) = run_sequential(
        &cfg,
        policy,
        teacher,
        &tiny_run::ByteSumMod3,
        source.as_mut(),
        &template,
    )
    .unwrap();
    assert_eq!(stats.len(), 3);
    for (a, b) in report.steps.iter().zip(&stats) {
        assert_eq!(a.reward_mean, b.reward_mean, "step {}", a.step);
        assert_eq!(a.loss, b.loss, "step {}", a.step);
        let key = |s: &rlsd::stats::StepStats| -> Vec<(u64, usize, f64, f64, f64)> {
            s.validation
                .iter()
                .map(|v| {
                    (
                        v.after_step,
                        v.n,
                        v.pass1_greedy,
                        v.pass1_sampled,
                        v.pass_at_k,
                    )
                })
                .collect()
        };
        assert_eq!(key(a), key(b), "validation at step {}", a.step);
    }
    let after: Vec<Vec<u64>> = report
        .steps
        .iter()
        .map(|s| s.validation.iter().map(|v| v.after_step).collect())
        .collect();
    assert_eq!(after, vec![vec![0], vec![2], vec![]]);
    let seq = trainer.policy.snapshot(3).unwrap();
    assert_eq!(seq.tensors.len(), report.final_weights.tensors.len());
    let mut moved = false;
    let init = LoadedModel::load(&path, tch::Device::Cpu, kind)
        .unwrap()
        .snapshot(0)
        .unwrap();
    for (((na, a), (nb, b)), (_, i)) in seq
        .tensors
        .iter()
        .zip(&report.final_weights.tensors)
        .zip(&init.tensors)
    {
        assert_eq!(na, nb);
        assert!(
            a.equal(b),
            "tensor {na} differs between runtime and sequential loop"
        );
        moved |= !a.equal(i);
    }
    assert!(moved, "training changed the weights");
}

#[test]
fn faults_in_every_actor_are_survived_without_losing_or_repeating_prompts() {
    let steps = 3u64;
    let (cfg0, _d) = config("rlsd", steps, 0, &[]);
    let mut source = rlsd::run::source::from_config(&cfg0).unwrap();
    let expected: Vec<String> = source
        .next_batch((steps as usize) * cfg0.rollout.batch_prompts)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    for (role, kind) in [
        (Role::Scheduler, "error"),
        (Role::Sampler, "panic"),
        (Role::Verifier, "error"),
        (Role::Teacher, "panic"),
        (Role::Credit, "error"),
        (Role::Optimizer, "panic"),
    ] {
        let fault = format!("runtime.faults=[\"{}@2:{kind}\"]", role.name());
        let (cfg, _dir) = config("rlsd", steps, 1, &[&fault]);
        let report = run(cfg);
        assert!(!report.failed, "{}: {}", role.name(), report.reason);
        assert_eq!(
            report.restarts.get(&role).copied(),
            Some(1),
            "{}",
            role.name()
        );
        let order: Vec<u64> = report.trained.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            order,
            vec![1, 2, 3],
            "{}: each step trained once",
            role.name()
        );
        let ids: Vec<String> = report.trained.iter().flat_map(|(_, v)| v.clone()).collect();
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "{}: a prompt trained twice",
            role.name()
        );
        assert_eq!(ids, expected, "{}: prompts lost or reordered", role.name());
    }
}

/// The sampler never runs more than `max_staleness` versions ahead, and with
/// `max_staleness >= 1` it does run ahead: some step trains on a batch an
/// older policy generated while the previous step trained (version lag > 0).
#[test]
fn staleness_bound_is_kept_and_reached() {
    for staleness in [0u64, 1, 2] {
        let (cfg, _dir) = config("grpo", 4, staleness, &[]);
        let report = run(cfg);
        assert!(!report.failed);
        let lags: Vec<u64> = report.steps.iter().map(|s| s.version_lag).collect();
        if staleness > 0 {
            // Step 2 is issued at the start and generated right after step 1,
            // before step 1 has trained: it comes from version 0.
            assert!(
                lags.iter().any(|&l| l > 0),
                "staleness {staleness}: no step overlapped its predecessor, lags {lags:?}"
            );
            let step2 = report.steps.iter().find(|s| s.step == 2).unwrap();
            assert_eq!(step2.policy_version, 0, "lags {lags:?}");
        }
        for s in &report.steps {
            assert!(
                s.version_lag <= staleness,
                "step {} lag {} > {staleness}",
                s.step,
                s.version_lag
            );
            if staleness == 0 {
                assert_eq!(s.policy_version, s.step - 1);
            }
        }
    }
}

#[test]
fn a_crash_loop_stops_cleanly_with_a_checkpoint() {
    let (cfg, _dir) = config(
        "grpo",
        6,
        0,
        &[
            "runtime.max_restarts=1",
            "runtime.faults=[\"sampler@2\", \"sampler@3\", \"verifier@3\"]",
        ],
    );
    let report = run(cfg);
    assert!(report.failed, "budget of 1 restart must be exceeded");
    assert!(
        report.reason.contains("restart budget"),
        "{}",
        report.reason
    );
    assert!(
        report.last_checkpoint.is_some(),
        "final checkpoint hook ran"
    );
}
