//! Spec properties 6 and 7 on small enumerable distributions.
//!
//! A toy joint `P(r, y)` over privileged values `r in {0..R}` and responses
//! `y in {0..V}^T` stands in for "the exact joint distribution". The student is
//! its marginal `P_S(y_t) = P(y_t | y_<t)`, the teacher its conditional
//! `P_T(y_t) = P(y_t | r, y_<t)`.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rlsd::rlsd::{support_divergence, token_delta, OpsdLoss};
use tch::{Device, Kind, Tensor};

const R: usize = 3;
const V: usize = 3;
const T: usize = 3;

/// `joint[r][y]` with `y` the base-V number of the token sequence.
fn random_joint(seed: u64) -> Vec<Vec<f64>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = V.pow(T as u32);
    let mut j: Vec<Vec<f64>> = (0..R)
        .map(|_| (0..n).map(|_| rng.random_range(0.01..1.0)).collect())
        .collect();
    let z: f64 = j.iter().flatten().sum();
    j.iter_mut().flatten().for_each(|p| *p /= z);
    j
}

fn tokens(y: usize) -> Vec<usize> {
    (0..T)
        .map(|t| (y / V.pow((T - 1 - t) as u32)) % V)
        .collect()
}

/// `P(r, y_<=t prefix)`, summed over completions; `r = None` marginalises r.
fn prefix_mass(joint: &[Vec<f64>], r: Option<usize>, prefix: &[usize]) -> f64 {
    let n = V.pow(T as u32);
    (0..n)
        .filter(|&y| tokens(y)[..prefix.len()] == *prefix)
        .map(|y| match r {
            Some(r) => joint[r][y],
            None => (0..R).map(|r| joint[r][y]).sum(),
        })
        .sum()
}

/// Student `P_S(y_t = v | y_<t)` and teacher `P_T(y_t = v | r, y_<t)` as vectors over v.
fn next_token(joint: &[Vec<f64>], r: Option<usize>, prefix: &[usize]) -> Vec<f64> {
    let base = prefix_mass(joint, r, prefix);
    (0..V)
        .map(|v| {
            let mut p = prefix.to_vec();
            p.push(v);
            prefix_mass(joint, r, &p) / base
        })
        .collect()
}

fn kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter().zip(q).map(|(a, b)| a * (a / b).ln()).sum()
}

/// Property 6 (paper Thm. 4): prod_t P_T(y_t) / P_S(y_t) = P(r | x, y) / P(r | x),
/// i.e. the sum of the per-token `delta_t` RLSD computes is the log belief update.
#[test]
fn p6_belief_update() {
    for seed in 0..4 {
        let joint = random_joint(seed);
        let n = V.pow(T as u32);
        let p_r: Vec<f64> = (0..R).map(|r| joint[r].iter().sum()).collect();
        for y in 0..n {
            let toks = tokens(y);
            let p_y: f64 = (0..R).map(|r| joint[r][y]).sum();
            for r in 0..R {
                let mut lp_t = Vec::new();
                let mut lp_s = Vec::new();
                for t in 0..T {
                    lp_t.push(next_token(&joint, Some(r), &toks[..t])[toks[t]].ln());
                    lp_s.push(next_token(&joint, None, &toks[..t])[toks[t]].ln());
                }
                let delta =
                    token_delta(&Tensor::from_slice(&lp_t), &Tensor::from_slice(&lp_s)).unwrap();
                let sum_delta = f64::try_from(delta.sum(Kind::Double)).unwrap();
                let posterior = joint[r][y] / p_y;
                let want = (posterior / p_r[r]).ln();
                assert!(
                    (sum_delta - want).abs() < 1e-12,
                    "seed {seed} y {toks:?} r {r}: sum delta {sum_delta} vs log belief update {want}"
                );
            }
        }
    }
}

/// `E_r KL(P_T(.|r) || P_S)` through the project's OPSD divergence
/// ([`support_divergence`], `kl` over the whole vocabulary, so no tail): one
/// row per `r`, weighted by `q(r)`. `log_ps` is `[V]`; the gradient flows
/// through it only (the teacher is detached inside).
fn opsd_expected_kl(q: &[f64], pt: &[Vec<f64>], log_ps: &Tensor) -> Tensor {
    let log_pt = Tensor::from_slice(&pt.concat())
        .view([R as i64, V as i64])
        .log();
    let log_ps = log_ps.unsqueeze(0).expand([R as i64, V as i64], false);
    let per_r = support_divergence(OpsdLoss::Kl, &log_pt, &log_ps, false).unwrap();
    assert_eq!(per_r.size(), vec![R as i64]);
    (per_r * Tensor::from_slice(q)).sum(Kind::Double)
}

/// Property 7 (paper Thm. 1): E_r KL(P_T(.|r) || P_S) = KL(mean_r P_T || P_S) + I(Y_t; R),
/// with the left side computed by the project's OPSD divergence (`support_divergence`),
/// and the minimum of that loss over P_S leaves I(Y_t; R) > 0: OPSD's target cannot be met.
#[test]
fn p7_opsd_leakage() {
    let mut rng = StdRng::seed_from_u64(7);
    for seed in 0..4 {
        let joint = random_joint(100 + seed);
        for prefix in [vec![], vec![1], vec![2, 0]] {
            // q(r) = P(r | x, y_<t); P_T(. | r); their mixture.
            let mass: Vec<f64> = (0..R)
                .map(|r| prefix_mass(&joint, Some(r), &prefix))
                .collect();
            let z: f64 = mass.iter().sum();
            let q: Vec<f64> = mass.iter().map(|m| m / z).collect();
            let pt: Vec<Vec<f64>> = (0..R)
                .map(|r| next_token(&joint, Some(r), &prefix))
                .collect();
            let mix: Vec<f64> = (0..V)
                .map(|v| (0..R).map(|r| q[r] * pt[r][v]).sum())
                .collect();
            // The mixture is the student of the exact joint.
            let ps_true = next_token(&joint, None, &prefix);
            for (a, b) in mix.iter().zip(&ps_true) {
                assert!((a - b).abs() < 1e-12);
            }
            // I(Y_t; R) from its definition: sum_{r,v} p(r, v) log p(r, v) / (p(r) p(v)).
            let mi: f64 = (0..R)
                .flat_map(|r| (0..V).map(move |v| (r, v)))
                .map(|(r, v)| {
                    let prv = q[r] * pt[r][v];
                    prv * (prv / (q[r] * mix[v])).ln()
                })
                .sum();
            assert!(mi > 0.0);
            // The OPSD objective as the project computes it, against the
            // decomposition worked out from the definitions above.
            let expected_kl = |ps: &[f64]| -> f64 {
                let log_ps = Tensor::from_slice(ps).log();
                f64::try_from(opsd_expected_kl(&q, &pt, &log_ps)).unwrap()
            };
            for _ in 0..20 {
                let raw: Vec<f64> = (0..V).map(|_| rng.random_range(0.01..1.0)).collect();
                let s: f64 = raw.iter().sum();
                let ps: Vec<f64> = raw.iter().map(|x| x / s).collect();
                let lhs = expected_kl(&ps);
                let rhs = kl(&mix, &ps) + mi;
                assert!((lhs - rhs).abs() < 1e-12, "decomposition: {lhs} vs {rhs}");
                assert!(lhs >= mi - 1e-12);
            }
            assert!((expected_kl(&mix) - mi).abs() < 1e-12);
            // Minimise the project's OPSD loss over P_S by gradient descent on
            // logits (the gradient reaches the student only): the floor is
            // I(Y_t; R), so OPSD's target cannot be met.
            let opts = (Kind::Double, Device::Cpu);
            let mut logits = Tensor::zeros([V as i64], opts).set_requires_grad(true);
            for _ in 0..2000 {
                let loss = opsd_expected_kl(&q, &pt, &logits.log_softmax(0, Kind::Double));
                logits.zero_grad();
                loss.backward();
                tch::no_grad(|| {
                    let _ = logits.f_sub_(&(logits.grad() * 2.0)).unwrap();
                });
            }
            let min = f64::try_from(tch::no_grad(|| {
                opsd_expected_kl(&q, &pt, &logits.log_softmax(0, Kind::Double))
            }))
            .unwrap();
            assert!((min - mi).abs() < 1e-8, "min over P_S {min} vs I {mi}");
        }
    }
}
