//! The adaptive lambda schedule (`algo.lambda_schedule = "adaptive"`) end to
//! end on the built-in task's tiny model, CPU: the actor runtime at staleness
//! 0 decides exactly the lambdas of the sequential loop, each step's lambda is
//! the state after replaying the steps before it (at staleness 1, the steps
//! before `k - 1`), and a resumed run continues the schedule from the
//! checkpoint's `adaptive_lambda`.

#[path = "common/tiny_run.rs"]
mod tiny_run;
use rlsd::actors::Runtime;
use rlsd::config::RunConfig;
use rlsd::data::TeacherPrompt;
use rlsd::model::LoadedModel;
use rlsd::rlsd::AdaptiveLambda;
use rlsd::run::sequential::run_sequential;
use rlsd::stats::StepStats;
use std::path::Path;

fn config(out: &Path, steps: u64, extra: &[&str]) -> RunConfig {
    let mut set = tiny_run::tiny_run(out, steps, 16);
    set.extend([
        "algo.algo=\"rlsd\"".into(),
        "algo.lambda_schedule=\"adaptive\"".into(),
        "runtime.max_staleness=0".into(),
        "runtime.teacher_sync_interval=2".into(),
        "checkpoint.every_steps=3".into(),
        "checkpoint.keep_last=0".into(),
        "rollout.batch_prompts=2".into(),
        tiny_run::FAST_LR.into(),
    ]);
    set.extend(extra.iter().map(|s| s.to_string()));
    RunConfig::load(None, &set).unwrap()
}

fn lambdas(steps: &[StepStats]) -> Vec<f64> {
    steps.iter().map(|s| s.lambda).collect()
}

/// The lambda each step should have used: the state after replaying the
/// stats of the steps before it through [`AdaptiveLambda::observe`].
fn replayed(cfg: &RunConfig, steps: &[StepStats]) -> Vec<f64> {
    let rule = cfg.algo.adaptive_rule();
    let mut state = cfg.algo.adaptive_start();
    steps
        .iter()
        .map(|s| {
            let l = state.lambda;
            rlsd::pipeline::observe_step(&mut state, &rule, s);
            l
        })
        .collect()
}

/// With the measured teacher-student gap on correct responses as the signal
/// (threshold far above any gap, so each measured step counts), the actor
/// tree and the sequential loop decide the same lambda at every step.
#[test]
fn actor_runtime_and_sequential_loop_decide_the_same_lambdas() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        6,
        &[
            "algo.adaptive_signal=\"delta-correct\"",
            "algo.adaptive_threshold=100.0",
            "algo.adaptive_patience=2",
            "algo.adaptive_factor=0.5",
            "algo.adaptive_min_lambda=0.2",
        ],
    );
    let report = tiny_run::rt()
        .block_on(
            Runtime::builder(cfg.clone())
                .verifier(tiny_run::ByteSumMod3)
                .run(),
        )
        .unwrap();
    assert!(!report.failed, "{}", report.reason);

    let kind = rlsd::model::parse_kind(&cfg.model.dtype).unwrap();
    let path = cfg.model.resolved_path();
    let policy = LoadedModel::load(&path, tch::Device::Cpu, kind).unwrap();
    let teacher = LoadedModel::load(&path, tch::Device::Cpu, kind).unwrap();
    let mut source = rlsd::run::source::from_config(&cfg).unwrap();
    let template = TeacherPrompt::new(cfg.data.teacher_template.clone()).unwrap();
    let (_, seq) = run_sequential(
        &cfg,
        policy,
        teacher,
        &tiny_run::ByteSumMod3,
        source.as_mut(),
        &template,
    )
    .unwrap();

    assert_eq!(lambdas(&report.steps), lambdas(&seq));
    for (a, b) in report.steps.iter().zip(&seq) {
        assert_eq!(a.loss, b.loss, "step {}", a.step);
        assert_eq!(
            a.delta_mean_correct, b.delta_mean_correct,
            "step {}",
            a.step
        );
    }
    assert_eq!(lambdas(&seq), replayed(&cfg, &seq));
    // The schedule really moved: it decayed at least once, never rose.
    let l = lambdas(&seq);
    assert_eq!(l[0], 0.5);
    assert!(l[5] < 0.5, "no decay in 6 steps: {l:?}");
    assert!(l.windows(2).all(|w| w[1] <= w[0]), "{l:?}");
    // Steps at lambda 0 run no teacher pass (their gap is not measured).
    for s in seq.iter().filter(|s| s.lambda == 0.0) {
        assert_eq!(s.delta_mean_correct, 0.0, "step {}", s.step);
    }
}

/// Weight-clip signal with a threshold above 1 (every step with a teacher
/// pass counts), patience 2, factor 0.5, switch to 0 below 0.2. Hand-worked:
/// steps 1-2 at 0.5; after step 2, 0.25; steps 3-4 at 0.25; after step 4,
/// 0.125 < 0.2 so 0; steps 5-6 at 0 (GRPO). Resuming from step 3's
/// checkpoint (state: lambda 0.25, streak 1) continues the same sequence.
#[test]
fn resume_continues_the_adaptive_schedule_exactly() {
    let extra = [
        "algo.adaptive_signal=\"weight-clip\"",
        "algo.adaptive_threshold=1.5",
        "algo.adaptive_patience=2",
        "algo.adaptive_factor=0.5",
        "algo.adaptive_min_lambda=0.2",
    ];
    let a = tempfile::tempdir().unwrap();
    let full = tiny_run::rt()
        .block_on(
            Runtime::builder(config(a.path(), 6, &extra))
                .verifier(tiny_run::ByteSumMod3)
                .run(),
        )
        .unwrap();
    assert!(!full.failed, "{}", full.reason);
    assert_eq!(lambdas(&full.steps), vec![0.5, 0.5, 0.25, 0.25, 0.0, 0.0]);

    let ck3 = a
        .path()
        .join("checkpoints")
        .join(rlsd::checkpoint::checkpoint_dir_name(3));
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ck3.join(rlsd::checkpoint::STATE_FILE)).unwrap(),
    )
    .unwrap();
    let stored: AdaptiveLambda = serde_json::from_value(state["adaptive_lambda"].clone()).unwrap();
    assert_eq!(
        stored,
        AdaptiveLambda {
            lambda: 0.25,
            streak: 1,
            observed_through: 3
        }
    );

    let b = tempfile::tempdir().unwrap();
    let resumed = tiny_run::rt()
        .block_on(
            Runtime::builder(config(b.path(), 6, &extra))
                .verifier(tiny_run::ByteSumMod3)
                .resume(ck3)
                .run(),
        )
        .unwrap();
    assert!(!resumed.failed, "{}", resumed.reason);
    assert_eq!(lambdas(&resumed.steps), vec![0.25, 0.0, 0.0]);
    for (x, y) in full.steps[3..].iter().zip(&resumed.steps) {
        assert_eq!(x.loss, y.loss, "step {}", x.step);
    }
}

/// With `max_staleness = 1` step `k` is planned from the state after step
/// `max(0, k - 2)` (its `min_version`, read from the commit board), whatever
/// the timing.
#[test]
fn staleness_one_plans_from_the_state_after_its_min_version() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        6,
        &[
            "runtime.max_staleness=1",
            "algo.adaptive_signal=\"weight-clip\"",
            "algo.adaptive_threshold=1.5",
            "algo.adaptive_patience=2",
            "algo.adaptive_factor=0.5",
            "algo.adaptive_min_lambda=0.2",
        ],
    );
    let report = tiny_run::rt()
        .block_on(
            Runtime::builder(cfg.clone())
                .verifier(tiny_run::ByteSumMod3)
                .run(),
        )
        .unwrap();
    assert!(!report.failed, "{}", report.reason);
    let steps = &report.steps;
    // after[j] = lambda of the state after step j (after[0]: before step 1).
    let rule = cfg.algo.adaptive_rule();
    let mut state = cfg.algo.adaptive_start();
    let mut after = vec![state.lambda];
    for s in steps {
        rlsd::pipeline::observe_step(&mut state, &rule, s);
        after.push(state.lambda);
    }
    for (i, s) in steps.iter().enumerate() {
        let k = i + 1;
        assert_eq!(s.lambda, after[k.saturating_sub(2)], "step {k}");
    }
    let l = lambdas(steps);
    assert!(l.windows(2).all(|w| w[1] <= w[0]), "{l:?}");
    assert!(l[5] < 0.5, "no decay in 6 steps: {l:?}");
}
