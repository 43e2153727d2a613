//! Golden vectors from scripts/rlsd_reference.py (PyTorch, written from the
//! spec): advantages, CEPO negatives, delta, token weights, Ahat, loss and its
//! gradient, schedules and AdamW, all matched to 1e-6.

use rlsd::optim::{AdamW, LrSchedule, OptimConfig};
use rlsd::policy::PromptResponse;
use rlsd::rlsd::{
    cepo_negatives, group_advantages, lambda_at, lr_at, Algo, AlgoConfig, CepoFallback, LossAgg,
    StudentLogprobs,
};
use rlsd::train::{effective_algo, micro_batch_loss, TrainBatch};
use serde_json::Value;
use tch::{nn, Device, Kind, Tensor};

const TOL: f64 = 1e-6;

fn golden() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rlsd_golden.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("read golden")).expect("parse")
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn rows(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .expect("rows")
        .iter()
        .map(|r| f64s(r).into_iter().map(|x| x as f32).collect())
        .collect()
}

fn grid(t: &Tensor) -> Vec<Vec<f64>> {
    let t = t.to_kind(Kind::Double).to_device(Device::Cpu);
    (0..t.size()[0])
        .map(|i| Vec::<f64>::try_from(t.get(i)).unwrap())
        .collect()
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= TOL, "{what}[{i}]: got {g}, want {w}");
    }
}

fn assert_grid(what: &str, got: &Tensor, want: &Value) {
    let want: Vec<Vec<f64>> = want.as_array().unwrap().iter().map(f64s).collect();
    let got = grid(got);
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_close(&format!("{what}[{i}]"), g, w);
    }
}

#[test]
fn group_advantages_match_reference() {
    let g = golden();
    for case in g["advantages"].as_array().unwrap() {
        let rewards: Vec<f32> = f64s(&case["rewards"]).iter().map(|&x| x as f32).collect();
        let size = case["group_size"].as_u64().unwrap() as usize;
        let scale = case["scale_by_std"].as_bool().unwrap();
        let got: Vec<f64> = group_advantages(&rewards, size, scale)
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        assert_close(
            &format!("advantages {rewards:?}/{size}/{scale}"),
            &got,
            &f64s(&case["expected"]),
        );
    }
}

fn algo_of(name: &str) -> Algo {
    match name {
        "grpo" => Algo::Grpo,
        "rlsd" => Algo::Rlsd,
        "opsd" => Algo::Opsd,
        "cepo" => Algo::Cepo,
        other => panic!("unknown algo {other}"),
    }
}

#[test]
fn credit_and_loss_match_reference() {
    let g = golden();
    let cases = g["loss"].as_array().unwrap();
    assert!(cases.len() >= 12);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let exp = &case["expected"];
        let cfg = AlgoConfig {
            algo: algo_of(case["algo"].as_str().unwrap()),
            eps_w: case["eps_w"].as_f64().unwrap(),
            eps_low: case["eps_low"].as_f64().unwrap(),
            eps_high: case["eps_high"].as_f64().unwrap(),
            dual_clip_c: case["dual_clip_c"].as_f64().unwrap(),
            kl_coef: case["kl_coef"].as_f64().unwrap(),
            entropy_coef: case["entropy_coef"].as_f64().unwrap(),
            loss_agg: match case["loss_agg"].as_str().unwrap() {
                "token-mean" => LossAgg::TokenMean,
                _ => LossAgg::SeqMeanTokenMean,
            },
            student_logprobs: match case["student_logprobs"].as_str().unwrap() {
                "current" => StudentLogprobs::Current,
                _ => StudentLogprobs::Sampling,
            },
            cepo_fallback: match case["cepo_fallback"].as_str().unwrap_or("grpo") {
                "grpo" => CepoFallback::Grpo,
                _ => CepoFallback::Rlsd,
            },
            ..AlgoConfig::default()
        };
        let lens: Vec<usize> = f64s(&case["lens"]).iter().map(|&x| x as usize).collect();
        let rewards: Vec<f32> = f64s(&case["rewards"]).iter().map(|&x| x as f32).collect();
        let correct: Vec<bool> = case["correct"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_bool().unwrap())
            .collect();
        let group = case["group_size"].as_u64().unwrap() as usize;
        let advantages = group_advantages(&rewards, group, true).unwrap();
        let a64: Vec<f64> = advantages.iter().map(|&a| f64::from(a)).collect();
        assert_close(&format!("{name} A"), &a64, &f64s(&exp["advantages"]));
        let negs = cepo_negatives(&rewards, &correct, group).unwrap();
        let want_negs: Vec<Option<usize>> = exp["cepo_negatives"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().map(|x| x as usize))
            .collect();
        assert_eq!(negs, want_negs, "{name}: cepo negatives");
        let neg_rows: Vec<Option<Vec<f32>>> = case["teacher_neg"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (!r.is_null()).then(|| f64s(r).into_iter().map(|x| x as f32).collect()))
            .collect();
        let batch = TrainBatch {
            samples: lens
                .iter()
                .map(|&n| PromptResponse {
                    image_key: 0,
                    prompt: vec![0],
                    response: vec![1; n],
                })
                .collect(),
            sampling_logprobs: rows(&case["logp_old"]),
            teacher_logprobs: Some(rows(&case["teacher"])),
            teacher_neg_logprobs: Some(neg_rows),
            ref_logprobs: Some(rows(&case["ref"])),
            teacher_support: None,
            correct: None,
            advantages,
            step: 1,
            lambda: case["lambda"].as_f64().unwrap(),
            lr: 0.0,
            temperature: 1.0,
            response_mask: None,
        };
        let max_len = *lens.iter().max().unwrap();
        let pad = |v: &Value| {
            let r = rows(v);
            let mut flat = vec![0f64; r.len() * max_len];
            for (i, row) in r.iter().enumerate() {
                for (j, &x) in row.iter().enumerate() {
                    flat[i * max_len + j] = f64::from(x);
                }
            }
            Tensor::from_slice(&flat).view([r.len() as i64, max_len as i64])
        };
        let logp_new = pad(&case["logp_new"]).set_requires_grad(true);
        let entropy = pad(&case["entropy"]);
        let algo = effective_algo(&cfg, &batch).unwrap();
        let out = micro_batch_loss(
            &cfg,
            algo,
            &batch,
            0..lens.len(),
            &logp_new,
            &entropy,
            batch.loss_norm(),
        )
        .unwrap();
        assert_grid(
            &format!("{name} delta"),
            out.delta.as_ref().unwrap(),
            &exp["delta"],
        );
        match (&out.credit.weights, exp["weights"].is_null()) {
            (Some(w), false) => assert_grid(
                &format!("{name} weights"),
                &w.f_mul(&out.mask).unwrap(),
                &exp["weights"],
            ),
            (None, true) => {}
            _ => panic!("{name}: weights present in one side only"),
        }
        assert_grid(&format!("{name} ahat"), &out.credit.ahat, &exp["ahat"]);
        let loss = f64::try_from(&out.loss.loss).unwrap();
        assert_close(
            &format!("{name} loss"),
            &[loss],
            &[exp["loss"].as_f64().unwrap()],
        );
        out.loss.loss.backward();
        assert_grid(
            &format!("{name} grad"),
            &logp_new.grad(),
            &exp["grad_logp_new"],
        );
    }
}

#[test]
fn schedules_match_reference() {
    let g = golden();
    for case in g["lambda"].as_array().unwrap() {
        let cfg = AlgoConfig {
            lambda0: Some(case["lambda0"].as_f64().unwrap()),
            lambda_warmup: case["warmup"].as_u64().unwrap(),
            lambda_decay_steps: Some(case["decay_steps"].as_u64().unwrap()),
            ..AlgoConfig::default()
        };
        let got: Vec<f64> = f64s(&case["steps"])
            .iter()
            .map(|&s| lambda_at(s as u64, &cfg))
            .collect();
        assert_close("lambda", &got, &f64s(&case["expected"]));
    }
    for case in g["lr"].as_array().unwrap() {
        let cfg = OptimConfig {
            lr: case["lr"].as_f64().unwrap(),
            warmup_steps: case["warmup_steps"].as_u64().unwrap(),
            lr_schedule: match case["lr_schedule"].as_str().unwrap() {
                "constant" => LrSchedule::Constant,
                "linear" => LrSchedule::Linear,
                _ => LrSchedule::Cosine,
            },
            total_steps: case["total_steps"].as_u64().unwrap(),
            min_lr_ratio: case["min_lr_ratio"].as_f64().unwrap(),
            ..OptimConfig::default()
        };
        cfg.validate().unwrap();
        let got: Vec<f64> = f64s(&case["steps"])
            .iter()
            .map(|&s| lr_at(s as u64, &cfg))
            .collect();
        // Relative: learning rates are small numbers.
        for (s, (g, w)) in got.iter().zip(f64s(&case["expected"])).enumerate() {
            assert!(
                (g - w).abs() <= 1e-12 + 1e-9 * w.abs(),
                "lr[{s}]: {g} vs {w}"
            );
        }
    }
}

#[test]
fn adamw_matches_torch() {
    let g = golden();
    let case = &g["adamw"];
    let vs = nn::VarStore::new(Device::Cpu);
    let mut names: Vec<String> = case["init"].as_object().unwrap().keys().cloned().collect();
    names.sort();
    for name in &names {
        let init = &case["init"][name];
        let shape: Vec<i64> = f64s(&init["shape"]).iter().map(|&x| x as i64).collect();
        let data: Vec<f32> = f64s(&init["data"]).iter().map(|&x| x as f32).collect();
        let _ = vs
            .root()
            .var_copy(name, &Tensor::from_slice(&data).view(shape.as_slice()));
    }
    let cfg = OptimConfig {
        lr: 0.01,
        weight_decay: 0.01,
        ..OptimConfig::default()
    };
    let mut opt = AdamW::new(&vs, &cfg);
    let vars = vs.variables();
    for (lr, grads) in f64s(&case["lrs"])
        .iter()
        .zip(case["grads"].as_array().unwrap())
    {
        opt.zero_grad();
        // d/dp sum(p * g) = g: sets each gradient to the reference's exactly.
        let mut loss = Tensor::zeros([], (Kind::Float, Device::Cpu));
        for name in &names {
            let gdat: Vec<f32> = f64s(&grads[name]).iter().map(|&x| x as f32).collect();
            let p = &vars[name];
            let gt = Tensor::from_slice(&gdat).view(p.size().as_slice());
            loss += (p * gt).sum(Kind::Float);
        }
        loss.backward();
        opt.step(*lr).unwrap();
    }
    for name in &names {
        let got = Vec::<f64>::try_from(vars[name].to_kind(Kind::Double).flatten(0, -1)).unwrap();
        assert_close(
            &format!("adamw {name}"),
            &got,
            &f64s(&case["expected"][name]),
        );
    }
    assert_eq!(opt.step_count(), 3);
}
