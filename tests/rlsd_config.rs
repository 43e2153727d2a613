//! The `[algo]` and `[optim]` config sections: TOML names, defaults, unknown
//! keys and out-of-range values.

use rlsd::optim::{LrSchedule, OptimConfig};
use rlsd::rlsd::{
    lambda_at, lr_at, Algo, AlgoConfig, CepoFallback, LambdaWarmup, LossAgg, OpsdLoss,
    StudentLogprobs,
};

#[test]
fn defaults_are_the_spec_values() {
    let a = AlgoConfig::default();
    assert_eq!(a.algo, Algo::Rlsd);
    assert_eq!(
        (a.lambda0(), a.lambda_warmup, a.lambda_decay_steps()),
        (0.5, 0, 50)
    );
    assert_eq!(a.lambda_warmup_mode, LambdaWarmup::Ramp);
    assert_eq!(a.cepo_fallback, CepoFallback::Grpo);
    assert_eq!(
        (a.opsd_loss, a.distill_topk, a.distill_coef),
        (OpsdLoss::Pg, 64, 1.0)
    );
    // CEPO's own schedule (its authors'): lambda0 1.0 over 100 steps, unless set.
    let c = AlgoConfig::with_algo(Algo::Cepo);
    assert_eq!((c.lambda0(), c.lambda_decay_steps()), (1.0, 100));
    assert_eq!(
        (a.eps_w, a.eps_low, a.eps_high, a.dual_clip_c),
        (0.2, 0.2, 0.28, 3.0)
    );
    assert_eq!(a.loss_agg, LossAgg::TokenMean);
    assert_eq!(a.student_logprobs, StudentLogprobs::Current);
    assert!(a.scale_by_std);
    assert_eq!((a.kl_coef, a.entropy_coef), (0.0, 0.0));
    let o = OptimConfig::default();
    assert_eq!(
        (o.weight_decay, o.max_grad_norm, o.warmup_steps),
        (0.01, 1.0, 0)
    );
    assert_eq!(o.lr_schedule, LrSchedule::Constant);
    a.validate().unwrap();
    o.validate().unwrap();
}

#[test]
fn toml_names_parse() {
    let a: AlgoConfig = toml::from_str(
        r#"
        algo = "cepo"
        loss_agg = "seq-mean-token-mean"
        student_logprobs = "sampling"
        lambda0 = 0.3
        lambda_decay_steps = 60
        "#,
    )
    .unwrap();
    assert_eq!(a.algo, Algo::Cepo);
    assert_eq!(a.loss_agg, LossAgg::SeqMeanTokenMean);
    assert_eq!(a.student_logprobs, StudentLogprobs::Sampling);
    assert_eq!(
        (a.lambda0(), a.lambda_decay_steps(), a.eps_w),
        (0.3, 60, 0.2)
    );
    for (name, algo) in [
        ("sdpo", Algo::Sdpo),
        ("grpo+opsd", Algo::GrpoOpsd),
        ("opsd", Algo::Opsd),
    ] {
        let a: AlgoConfig = toml::from_str(&format!(
            "algo = \"{name}\"\nopsd_loss = \"token-kl\"\nlambda_warmup_mode = \"hold\""
        ))
        .unwrap();
        assert_eq!((a.algo, a.opsd_loss), (algo, OpsdLoss::TokenKl));
        assert_eq!(a.algo.name(), name);
        assert_eq!(a.lambda_warmup_mode, LambdaWarmup::Hold);
    }
    let o: OptimConfig = toml::from_str(
        "lr = 1e-5\nlr_schedule = \"cosine\"\ntotal_steps = 200\nmicro_batch_size = 4",
    )
    .unwrap();
    assert_eq!(
        (o.lr, o.lr_schedule, o.total_steps, o.micro_batch_size),
        (1e-5, LrSchedule::Cosine, 200, 4)
    );
    let back: AlgoConfig = toml::from_str(&toml::to_string(&a).unwrap()).unwrap();
    assert_eq!(back, a);
}

#[test]
fn unknown_keys_and_bad_values_name_the_key() {
    let err = toml::from_str::<AlgoConfig>("lamda0 = 0.5")
        .unwrap_err()
        .to_string();
    assert!(err.contains("lamda0"), "{err}");
    let err = toml::from_str::<AlgoConfig>("algo = \"ppo\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ppo"), "{err}");
    let bad = AlgoConfig {
        lambda0: Some(1.5),
        ..AlgoConfig::default()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("algo.lambda0"));
    let bad = OptimConfig {
        lr_schedule: LrSchedule::Linear,
        total_steps: 0,
        ..OptimConfig::default()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("optim.total_steps"));
}

#[test]
fn lambda_schedule_shape() {
    let cfg = AlgoConfig::default();
    // Steps from 1: lambda0 * (1 - step / 50), 0 from step 50 on.
    assert_eq!(lambda_at(1, &cfg), 0.5 * (1.0 - 1.0 / 50.0));
    assert_eq!(lambda_at(25, &cfg), 0.25);
    assert_eq!(lambda_at(50, &cfg), 0.0);
    assert_eq!(lambda_at(500, &cfg), 0.0);
    // Warm-up ramps up from 0 (the reference's): 0.5 * step / 10, then the decay.
    let warm = AlgoConfig {
        lambda_warmup: 10,
        ..AlgoConfig::default()
    };
    assert_eq!(lambda_at(1, &warm), 0.05);
    assert_eq!(lambda_at(5, &warm), 0.25);
    assert_eq!(lambda_at(10, &warm), 0.5);
    assert_eq!(lambda_at(11, &warm), 0.5 * (1.0 - 1.0 / 50.0));
    assert_eq!(lambda_at(35, &warm), 0.25);
    assert_eq!(lambda_at(60, &warm), 0.0);
    // Non-increasing after the warm-up, never negative.
    let mut prev = f64::INFINITY;
    for s in 10..200 {
        let l = lambda_at(s, &warm);
        assert!(l <= prev && l >= 0.0);
        prev = l;
    }
    // The old behaviour, by name: hold lambda0 during the warm-up.
    let hold = AlgoConfig {
        lambda_warmup_mode: LambdaWarmup::Hold,
        ..warm.clone()
    };
    assert_eq!(lambda_at(1, &hold), 0.5);
    assert_eq!(lambda_at(10, &hold), 0.5);
    assert_eq!(lambda_at(35, &hold), 0.25);
    // decay_steps = 0: constant lambda (not GRPO), with or without a warm-up.
    let constant = AlgoConfig {
        lambda_decay_steps: Some(0),
        ..AlgoConfig::default()
    };
    for s in [1, 2, 50, 10_000] {
        assert_eq!(lambda_at(s, &constant), 0.5);
    }
    let ramp_then_constant = AlgoConfig {
        lambda_warmup: 4,
        lambda_decay_steps: Some(0),
        ..AlgoConfig::default()
    };
    assert_eq!(lambda_at(2, &ramp_then_constant), 0.25);
    assert_eq!(lambda_at(4, &ramp_then_constant), 0.5);
    assert_eq!(lambda_at(400, &ramp_then_constant), 0.5);
    // CEPO's default: 1.0 * (1 - step / 100).
    let cepo = AlgoConfig::with_algo(Algo::Cepo);
    assert_eq!(lambda_at(25, &cepo), 0.75);
    assert_eq!(lambda_at(100, &cepo), 0.0);
}

#[test]
fn lr_schedule_shape() {
    let c = OptimConfig {
        lr: 1.0,
        warmup_steps: 4,
        lr_schedule: LrSchedule::Cosine,
        total_steps: 14,
        ..OptimConfig::default()
    };
    assert_eq!(lr_at(1, &c), 0.25);
    assert_eq!(lr_at(4, &c), 1.0);
    assert!((lr_at(9, &c) - 0.5).abs() < 1e-12);
    assert!(lr_at(14, &c).abs() < 1e-12);
    assert!(lr_at(100, &c).abs() < 1e-12);
    let k = OptimConfig {
        lr: 3e-4,
        ..OptimConfig::default()
    };
    assert_eq!(lr_at(1, &k), 3e-4);
    assert_eq!(lr_at(1000, &k), 3e-4);
}

#[test]
fn a_bad_value_in_a_run_config_file_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.toml");
    std::fs::write(&path, "[algo]\nlambda0 = \"x\"\n").unwrap();
    let err = rlsd::config::RunConfig::load(Some(&path), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("algo.lambda0"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");

    let err = rlsd::config::RunConfig::load(None, &["rollout.group_sise=4".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("rollout.group_sise"), "{err}");
    assert!(err.contains("--set"), "{err}");
}
