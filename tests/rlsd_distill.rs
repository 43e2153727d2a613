//! The OPSD baselines' losses: the distillation divergences against numbers
//! worked out by hand and against scripts/rlsd_reference.py (the reference's
//! opsd_algos.py formulas, in PyTorch), and the credit of opsd / sdpo /
//! grpo+opsd.

use rlsd::rlsd::{
    sdpo_feedback, support_divergence, token_kl, update_credit, Algo, AlgoConfig, OpsdLoss,
};
use serde_json::Value;
use tch::{Kind, Tensor};

fn t2(rows: &[&[f64]]) -> Tensor {
    let n = rows.len() as i64;
    let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_slice(&flat).view([n, -1])
}

fn vals(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).view([-1])).unwrap()
}

#[test]
fn kl_on_top_k_with_tail_matches_hand_values() {
    let ln = f64::ln;
    // Teacher puts 1/2 and 1/4 on the two support tokens (tail 1/4); the
    // student 1/4 and 1/4 (tail 1/2):
    // KL = 1/2 ln(2) + 1/4 ln(1) + 1/4 ln(1/2) = 1/4 ln 2.
    let t = t2(&[&[ln(0.5), ln(0.25)]]);
    let s = t2(&[&[ln(0.25), ln(0.25)]]);
    let kl = vals(&support_divergence(OpsdLoss::Kl, &t, &s, true).unwrap());
    assert!((kl[0] - 0.25 * ln(2.0)).abs() < 1e-12, "{kl:?}");
    // Without the tail bucket: 1/2 ln 2 only.
    let kl = vals(&support_divergence(OpsdLoss::Kl, &t, &s, false).unwrap());
    assert!((kl[0] - 0.5 * ln(2.0)).abs() < 1e-12);
    // Equal distributions: 0 for both forms.
    for form in [OpsdLoss::Kl, OpsdLoss::Jsd] {
        let d = vals(&support_divergence(form, &t, &t, true).unwrap());
        assert!(d[0].abs() < 1e-12, "{form:?}: {d:?}");
    }
}

#[test]
fn jsd_matches_hand_values_and_is_symmetric() {
    let ln = f64::ln;
    // Full support {a, b}: P = (1, 0), Q = (0, 1): JSD = ln 2 (its maximum).
    let t = t2(&[&[0.0, -1e9]]);
    let s = t2(&[&[-1e9, 0.0]]);
    let d = vals(&support_divergence(OpsdLoss::Jsd, &t, &s, false).unwrap());
    assert!((d[0] - ln(2.0)).abs() < 1e-9, "{d:?}");
    // P = (1/2, 1/2), Q = (1, 0): M = (3/4, 1/4);
    // JSD = 1/2 [1/2 ln(2/3) + 1/2 ln 2] + 1/2 [ln(4/3)].
    let t = t2(&[&[ln(0.5), ln(0.5)]]);
    let s = t2(&[&[0.0, -1e9]]);
    let want = 0.5 * (0.5 * ln(2.0 / 3.0) + 0.5 * ln(2.0)) + 0.5 * ln(4.0 / 3.0);
    let d = vals(&support_divergence(OpsdLoss::Jsd, &t, &s, false).unwrap());
    assert!((d[0] - want).abs() < 1e-9, "{d:?} vs {want}");
    let back = vals(&support_divergence(OpsdLoss::Jsd, &s, &t, false).unwrap());
    assert!((back[0] - want).abs() < 1e-9);
    // Not a divergence form: a clear error.
    assert!(support_divergence(OpsdLoss::Pg, &t, &s, false).is_err());
    assert!(support_divergence(OpsdLoss::Kl, &t, &t2(&[&[0.0]]), false).is_err());
}

/// The gradient of `f(teacher, student)` w.r.t. both (an undefined gradient,
/// the teacher's when it is detached, reads as zeros).
fn grads(f: impl Fn(&Tensor, &Tensor) -> Tensor, t: &[f64], s: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let t = t2(&[t]).set_requires_grad(true);
    let s = t2(&[s]).set_requires_grad(true);
    f(&t, &s).sum(Kind::Double).backward();
    let g = |x: &Tensor| {
        let gr = x.grad();
        if gr.defined() {
            vals(&gr)
        } else {
            vec![0.0; x.numel()]
        }
    };
    (g(&t), g(&s))
}

#[test]
fn gradient_flows_through_the_student_only() {
    for form in [OpsdLoss::Kl, OpsdLoss::Jsd] {
        let (gt, gs) = grads(
            |t, s| support_divergence(form, t, s, true).unwrap(),
            &[-0.3, -1.7, -2.2],
            &[-1.1, -0.9, -2.5],
        );
        assert_eq!(gt, vec![0.0; 3], "{form:?}: teacher gradient");
        assert!(gs.iter().any(|g| g.abs() > 1e-6));
    }
    // token-kl: d/d logp_S of (logp_T - logp_S) is -1; the teacher gets none.
    let d = token_kl(&t2(&[&[-0.5, -2.0]]), &t2(&[&[-1.0, -0.1]])).unwrap();
    let want = [0.5, -1.9];
    for (a, b) in vals(&d).iter().zip(want) {
        assert!((a - b).abs() < 1e-12);
    }
    let (gt, gs) = grads(|t, s| token_kl(t, s).unwrap(), &[-0.5, -2.0], &[-1.0, -0.1]);
    assert_eq!(gt, vec![0.0, 0.0]);
    assert_eq!(gs, vec![-1.0, -1.0]);
}

#[test]
fn divergences_match_the_reference_formulas() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rlsd_golden.json"
    );
    let g: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = g["distill"].as_array().expect("distill cases");
    assert_eq!(cases.len(), 5);
    let grid = |v: &Value| -> Tensor {
        let rows: Vec<Vec<f64>> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect();
        let refs: Vec<&[f64]> = rows.iter().map(|r| r.as_slice()).collect();
        t2(&refs)
    };
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let form = match case["form"].as_str().unwrap() {
            "kl" => OpsdLoss::Kl,
            _ => OpsdLoss::Jsd,
        };
        let ids: Vec<Vec<i64>> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_i64().unwrap())
                    .collect()
            })
            .collect();
        let n = ids.len() as i64;
        let ids = Tensor::from_slice(&ids.concat()).view([n, -1]);
        let lt = grid(&case["teacher_logits"])
            .log_softmax(-1, Kind::Double)
            .gather(-1, &ids, false);
        let s_logits = grid(&case["student_logits"]).set_requires_grad(true);
        let ls = s_logits
            .log_softmax(-1, Kind::Double)
            .gather(-1, &ids, false);
        let d = support_divergence(form, &lt, &ls, case["tail"].as_bool().unwrap()).unwrap();
        let want: Vec<f64> = case["divergence"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        for (i, (a, b)) in vals(&d).iter().zip(&want).enumerate() {
            assert!((a - b).abs() < 1e-9, "{name}[{i}]: {a} vs {b}");
        }
        d.mean(Kind::Double).backward();
        let got = vals(&s_logits.grad());
        let want = vals(&grid(&case["grad_student_logits"]));
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() < 1e-9, "{name} grad[{i}]: {a} vs {b}");
        }
    }
}

#[test]
fn baseline_credit_per_algorithm_and_form() {
    let adv = Tensor::from_slice(&[1.0f64, -0.5]);
    let delta = t2(&[&[0.2, -0.4], &[0.6, 0.0]]);
    let mask = t2(&[&[1.0, 1.0], &[1.0, 0.0]]);
    let credit = |algo, form, coef| {
        let cfg = AlgoConfig {
            opsd_loss: form,
            distill_coef: coef,
            ..AlgoConfig::with_algo(algo)
        };
        vals(
            &update_credit(&cfg, algo, &adv, Some(&delta), 0.5, &mask)
                .unwrap()
                .ahat,
        )
    };
    // pg form: opsd / sdpo use delta_t; grpo+opsd adds coef * delta_t to A_i.
    assert_eq!(
        credit(Algo::Opsd, OpsdLoss::Pg, 1.0),
        vec![0.2, -0.4, 0.6, 0.0]
    );
    assert_eq!(
        credit(Algo::Sdpo, OpsdLoss::Pg, 1.0),
        vec![0.2, -0.4, 0.6, 0.0]
    );
    let g = credit(Algo::GrpoOpsd, OpsdLoss::Pg, 0.5);
    let want = [1.1, 0.8, -0.2, 0.0];
    for (a, b) in g.iter().zip(want) {
        assert!((a - b).abs() < 1e-12, "{g:?}");
    }
    // Distribution forms: the divergence carries opsd / sdpo (no PPO credit);
    // grpo+opsd keeps GRPO's A_i.
    assert_eq!(credit(Algo::Opsd, OpsdLoss::Jsd, 1.0), vec![0.0; 4]);
    assert_eq!(credit(Algo::Sdpo, OpsdLoss::TokenKl, 1.0), vec![0.0; 4]);
    assert_eq!(
        credit(Algo::GrpoOpsd, OpsdLoss::Kl, 1.0),
        vec![1.0, 1.0, -0.5, 0.0]
    );
}

#[test]
fn sdpo_feedback_picks_the_shortest_attempts() {
    // Group 0: correct 0 (len 9), 2 (len 4) -> 2; wrong 1 (len 7), 3 (len 7) -> 1 (first).
    // Group 1: all correct -> no feedback; shortest correct 5 (len 2).
    let correct = [true, false, true, false, true, true, true, true];
    let lens = [9, 7, 4, 7, 3, 2, 8, 2];
    let picks = sdpo_feedback(&correct, &lens, 4).unwrap();
    assert_eq!(picks, vec![(Some(2), Some(1)), (Some(5), None)]);
    assert!(sdpo_feedback(&correct, &lens, 3).is_err());
}
