//! AdamW details beyond the golden vectors: bf16 parameters learn through an
//! f32 master copy, which checkpoints with the rest of the state.

use rlsd::optim::{AdamW, OptimConfig};
use tch::{nn, Device, Kind, Tensor};

/// `steps` AdamW steps of one parameter `[1.0, -0.5, 0.25]` of dtype `kind`
/// under the constant gradient `[1, -1, 0.5]`, with learning rate `lr`.
fn run(kind: Kind, lr: f64, steps: usize) -> (nn::VarStore, AdamW) {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let _ = vs
        .root()
        .var_copy("p", &Tensor::from_slice(&[1.0f32, -0.5, 0.25]));
    vs.set_kind(kind);
    let p = vs.variables()["p"].shallow_clone();
    assert_eq!(p.kind(), kind);
    let mut opt = AdamW::new(&vs, &OptimConfig::default());
    let g = Tensor::from_slice(&[1.0f32, -1.0, 0.5]).to_kind(kind);
    for _ in 0..steps {
        opt.zero_grad();
        (&p * &g).sum(kind).backward();
        opt.step(lr).unwrap();
    }
    (vs, opt)
}

fn values(vs: &nn::VarStore) -> Vec<f32> {
    Vec::<f32>::try_from(vs.variables()["p"].to_kind(Kind::Float)).unwrap()
}

#[test]
fn bf16_updates_below_precision_accumulate() {
    // Each step moves a weight by about lr = 1e-4, far below bf16's spacing
    // near 1.0 (2^-7); without a master copy nothing would ever change.
    let (f32_vs, _) = run(Kind::Float, 1e-4, 60);
    let (bf_vs, _) = run(Kind::BFloat16, 1e-4, 60);
    let want = values(&f32_vs);
    let got = values(&bf_vs);
    assert!((want[0] - 0.994).abs() < 1e-3, "{want:?}");
    for (g, w) in got.iter().zip(&want) {
        // bf16 rounding of the f32 trajectory: within half a bf16 step.
        assert!(
            (g - w).abs() <= w.abs() * 2f32.powi(-8),
            "{got:?} vs {want:?}"
        );
    }
    assert_ne!(got[0], 1.0);
}

#[test]
fn master_copy_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adamw.safetensors");
    let (vs_a, mut a) = run(Kind::BFloat16, 1e-4, 20);
    a.save(&path).unwrap();
    let names: Vec<String> = a.state_tensors().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"master.p".to_string()), "{names:?}");

    // A fresh store with the same (bf16-rounded) weights and the loaded state
    // continues exactly like the original.
    let mut vs_b = nn::VarStore::new(Device::Cpu);
    let _ = vs_b.root().var_copy("p", &vs_a.variables()["p"].detach());
    vs_b.set_kind(Kind::BFloat16);
    let p_b = vs_b.variables()["p"].shallow_clone();
    assert_eq!(p_b.kind(), Kind::BFloat16);
    let mut b = AdamW::new(&vs_b, &OptimConfig::default());
    b.load(&path).unwrap();
    let p_a = vs_a.variables()["p"].shallow_clone();
    let g = Tensor::from_slice(&[1.0f32, -1.0, 0.5]).to_kind(Kind::BFloat16);
    for _ in 0..20 {
        for (opt, p) in [(&mut a, &p_a), (&mut b, &p_b)] {
            opt.zero_grad();
            (p * &g).sum(Kind::BFloat16).backward();
            opt.step(1e-4).unwrap();
        }
    }
    assert_eq!(values(&vs_a), values(&vs_b));
    let (f32_vs, _) = run(Kind::Float, 1e-4, 40);
    assert_ne!(values(&vs_a)[0], 1.0);
    assert!((values(&vs_a)[0] - values(&f32_vs)[0]).abs() < 2f32.powi(-8));
}

#[test]
fn f64_parameters_update_in_f64() {
    // Ten steps of lr 1e-10 move 1.0 by 1e-9: invisible in float32 (its
    // spacing near 1.0 is 1.2e-7), exact to ~1e-15 in float64. Under a
    // constant gradient AdamW's bias-corrected step is lr * g / (|g| + eps)
    // per step; weight decay adds lr * wd * p, 1e-12 per step here.
    let (vs, opt) = run(Kind::Double, 1e-10, 10);
    let p = Vec::<f64>::try_from(vs.variables()["p"].shallow_clone()).unwrap();
    let wd = OptimConfig::default().weight_decay;
    let eps = OptimConfig::default().eps;
    let mut want = [1.0f64, -0.5, 0.25];
    let g = [1.0f64, -1.0, 0.5];
    for _ in 0..10 {
        for (w, g) in want.iter_mut().zip(g) {
            *w = *w * (1.0 - 1e-10 * wd) - 1e-10 * g / (g.abs() + eps);
        }
    }
    for (got, want) in p.iter().zip(want) {
        assert!((got - want).abs() < 1e-15, "{p:?} vs {want}");
    }
    assert!((p[0] - (1.0 - 1e-9)).abs() < 2e-11, "{p:?}");
    for (name, t) in opt.state_tensors() {
        if name.starts_with("exp_avg") {
            assert_eq!(t.kind(), Kind::Double, "{name}");
        }
    }
}
