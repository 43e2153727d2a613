//! The spec's "Properties that must hold" 1-5 as property tests over random
//! inputs (RLSD-SPEC.md). Properties 6 and 7 are in rlsd_theorems.rs.

use proptest::prelude::*;
use rlsd::rlsd::{policy_loss, token_advantages, token_delta, Algo, AlgoConfig, LossAgg, LossNorm};
use tch::{Device, Kind, Tensor};

fn t1(v: &[f64]) -> Tensor {
    Tensor::from_slice(v)
}

fn t2(v: &[f64]) -> Tensor {
    Tensor::from_slice(v).view([1, v.len() as i64])
}

fn vec_of(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

/// `Ahat_t` of one response with advantage `a` under `algo`.
fn ahat(algo: Algo, a: f64, delta: &[f64], lambda: f64, eps_w: f64) -> Vec<f64> {
    let mask = t2(&vec![1.0; delta.len()]);
    let credit = token_advantages(algo, &t1(&[a]), Some(&t2(delta)), lambda, eps_w, &mask).unwrap();
    vec_of(&credit.ahat)
}

fn deltas() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(prop_oneof![-40.0f64..40.0, -1.0f64..1.0, Just(0.0)], 1..24)
}

fn advantage() -> impl Strategy<Value = f64> {
    prop_oneof![-5.0f64..5.0, Just(0.0), 1e-6f64..1e-3, -1e-3f64..-1e-6]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// 1. sign(Ahat_t) == sign(A_i) for any delta, lambda in [0, 1], eps_w < 1.
    #[test]
    fn p1_sign(a in advantage(), delta in deltas(), lambda in 0.0f64..=1.0, eps_w in 0.0f64..0.999) {
        for algo in [Algo::Rlsd, Algo::Cepo, Algo::Grpo] {
            for h in ahat(algo, a, &delta, lambda, eps_w) {
                prop_assert_eq!(h.signum() * f64::from(u8::from(h != 0.0)),
                                a.signum() * f64::from(u8::from(a != 0.0)),
                                "{:?}: Ahat {} for A {}", algo, h, a);
            }
        }
    }

    /// 2. |Ahat_t| / |A_i| lies in [1 - lambda eps_w, 1 + lambda eps_w].
    #[test]
    fn p2_bound(a in advantage().prop_filter("nonzero", |a| *a != 0.0), delta in deltas(),
                lambda in 0.0f64..=1.0, eps_w in 0.0f64..0.999) {
        for h in ahat(Algo::Rlsd, a, &delta, lambda, eps_w) {
            let r = h.abs() / a.abs();
            prop_assert!(r >= 1.0 - lambda * eps_w - 1e-12 && r <= 1.0 + lambda * eps_w + 1e-12,
                         "ratio {} outside bound (lambda {}, eps_w {})", r, lambda, eps_w);
        }
    }

    /// 3. lambda = 0, or logp_T == logp_S, gives exactly GRPO (credit and loss).
    #[test]
    fn p3_reduction(a in advantage(), delta in deltas(), lambda in 0.0f64..=1.0,
                    eps_w in 0.0f64..0.999, logp in prop::collection::vec(-8.0f64..0.0, 1..24)) {
        let grpo = ahat(Algo::Grpo, a, &delta, lambda, eps_w);
        prop_assert_eq!(&ahat(Algo::Rlsd, a, &delta, 0.0, eps_w), &grpo);
        // logp_T == logp_S: delta is exactly 0 whatever the log-probs.
        let lp = t2(&logp);
        let d0 = vec_of(&token_delta(&lp, &lp).unwrap());
        prop_assert!(d0.iter().all(|&d| d == 0.0));
        let grpo_l = ahat(Algo::Grpo, a, &d0, lambda, eps_w);
        prop_assert_eq!(&ahat(Algo::Rlsd, a, &d0, lambda, eps_w), &grpo_l);
        // And so the loss is exactly GRPO's.
        let mask = t2(&vec![1.0; d0.len()]);
        let cfg = AlgoConfig::default();
        let norm = LossNorm { total_tokens: d0.len() as f64, total_seqs: 1.0 };
        let old = lp.shallow_clone() - 0.1;
        let loss = |algo| {
            let c = token_advantages(algo, &t1(&[a]), Some(&t2(&d0)), lambda, eps_w, &mask).unwrap();
            f64::try_from(policy_loss(&lp, &old, &c.ahat, &mask, None, None, &cfg, norm).unwrap().loss).unwrap()
        };
        prop_assert_eq!(loss(Algo::Rlsd).to_bits(), loss(Algo::Grpo).to_bits());
    }

    /// 4. Direction awareness: A > 0 and delta > 0 raise |Ahat|; A < 0 and delta > 0
    /// lower it; and |Ahat| is monotone in delta in that direction.
    #[test]
    fn p4_direction(a in 1e-3f64..5.0, d in 1e-3f64..30.0, d2 in 0.0f64..30.0,
                    lambda in 0.01f64..=1.0, eps_w in 0.01f64..0.999) {
        for (sign, raises) in [(1.0, true), (-1.0, false)] {
            let a = sign * a;
            let base = ahat(Algo::Rlsd, a, &[0.0], lambda, eps_w)[0].abs();
            prop_assert_eq!(base, a.abs());
            let h = ahat(Algo::Rlsd, a, &[d], lambda, eps_w)[0].abs();
            if raises { prop_assert!(h > base, "A {} delta {}: {} !> {}", a, d, h, base); }
            else { prop_assert!(h < base, "A {} delta {}: {} !< {}", a, d, h, base); }
            let (lo, hi) = if d <= d2 { (d, d2) } else { (d2, d) };
            let h_lo = ahat(Algo::Rlsd, a, &[lo], lambda, eps_w)[0].abs();
            let h_hi = ahat(Algo::Rlsd, a, &[hi], lambda, eps_w)[0].abs();
            if raises { prop_assert!(h_hi >= h_lo); } else { prop_assert!(h_hi <= h_lo); }
        }
    }

    /// 5. Stop-gradient: zero gradient wrt the teacher's log-probs and delta; the
    /// gradient on each token's policy log-prob has the sign of -A_i.
    #[test]
    fn p5_stop_gradient(advs in prop::collection::vec(prop_oneof![-3.0f64..-1e-3, 1e-3f64..3.0], 1..5),
                        len in 1usize..10, seed in 0i64..1000, lambda in 0.0f64..=1.0,
                        algo in prop_oneof![Just(Algo::Rlsd), Just(Algo::Cepo), Just(Algo::Grpo)],
                        agg in prop_oneof![Just(LossAgg::TokenMean), Just(LossAgg::SeqMeanTokenMean)]) {
        tch::manual_seed(seed);
        let b = advs.len() as i64;
        let opts = (Kind::Double, Device::Cpu);
        let logp_new = (Tensor::rand([b, len as i64], opts) * -4.0).set_requires_grad(true);
        // On-policy: logp_old == logp_new, ratio 1, no clipping.
        let logp_old = logp_new.detach().copy();
        let teacher = (logp_new.detach() + Tensor::randn([b, len as i64], opts))
            .set_requires_grad(true);
        let delta = token_delta(&teacher, &logp_new).unwrap();
        let delta_leaf = delta.detach().copy().set_requires_grad(true);
        let mask = Tensor::ones([b, len as i64], opts);
        let cfg = AlgoConfig { loss_agg: agg, ..AlgoConfig::with_algo(algo) };
        let norm = LossNorm { total_tokens: (b * len as i64) as f64, total_seqs: b as f64 };
        for d in [&delta, &delta_leaf] {
            let c = token_advantages(algo, &t1(&advs), Some(d), lambda, 0.2, &mask).unwrap();
            let l = policy_loss(&logp_new, &logp_old, &c.ahat, &mask, None, None, &cfg, norm).unwrap();
            l.loss.backward();
        }
        for (name, leaf) in [("teacher", &teacher), ("delta", &delta_leaf)] {
            let g = leaf.grad();
            prop_assert!(!g.defined() || vec_of(&g).iter().all(|&x| x == 0.0),
                         "gradient reaches {}", name);
        }
        let g = logp_new.grad();
        prop_assert!(g.defined());
        for (i, &a) in advs.iter().enumerate() {
            for x in vec_of(&g.get(i as i64)) {
                prop_assert!(x != 0.0 && x.signum() == -a.signum(), "grad {} for A {}", x, a);
            }
        }
    }
}
