//! Proves libtorch links and computes: small tensor ops on CPU checked against
//! hand-computed values, and the CUDA library staying linked where it exists.

use tch::{Kind, Tensor};
#[path = "common/timed.rs"]
mod timed;

#[test]
fn matmul_and_softmax_match_hand_computed_values() {
    // [[1,2],[3,4]] @ [[5],[6]] = [[1*5+2*6],[3*5+4*6]] = [[17],[39]]
    let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
    let b = Tensor::from_slice(&[5.0f32, 6.0]).view([2, 1]);
    let c = a.matmul(&b);
    assert_eq!(
        Vec::<f32>::try_from(c.flatten(0, -1)).unwrap(),
        vec![17.0, 39.0]
    );

    // log_softmax([0, ln 3]) = [ln(1/4), ln(3/4)]
    let x = Tensor::from_slice(&[0.0f64, 3f64.ln()]);
    let ls = Vec::<f64>::try_from(x.log_softmax(0, Kind::Double)).unwrap();
    assert!((ls[0] - 0.25f64.ln()).abs() < 1e-12);
    assert!((ls[1] - 0.75f64.ln()).abs() < 1e-12);
}

#[test]
fn autograd_gives_hand_computed_gradient() {
    // d/dx sum(x^3) = 3x^2 -> at [1, 2] that is [3, 12].
    let x = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
    let y = x.pow_tensor_scalar(3).sum(Kind::Float);
    y.backward();
    let g = Vec::<f32>::try_from(x.grad()).unwrap();
    assert_eq!(g, vec![3.0, 12.0]);
}

/// `build.rs` must keep `libtorch_cuda.so` linked when the libtorch has it,
/// or a tch binary cannot see the GPU.
#[test]
fn binary_keeps_libtorch_cuda_linked() {
    let exe = env!("CARGO_BIN_EXE_rlsd");
    let lib = option_env!("RLSD_LIBTORCH_LIB");
    let out = std::process::Command::new("ldd").arg(exe).output();
    let Ok(out) = out else {
        eprintln!("ldd not available; skipping");
        return;
    };
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("libtorch_cpu.so") && !listing.contains("not found"),
        "rpath should resolve libtorch without LD_LIBRARY_PATH:\n{listing}"
    );
    let has_cuda = lib
        .map(|l| std::path::Path::new(l).join("libtorch_cuda.so").exists())
        .unwrap_or(false);
    if has_cuda {
        assert!(
            listing.contains("libtorch_cuda.so"),
            "libtorch_cuda.so exists but the binary does not link it:\n{listing}"
        );
    }
}

#[test]
fn binary_runs_without_ld_library_path() {
    let out = timed::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_rlsd"))
            .arg("info")
            .env_remove("LD_LIBRARY_PATH"),
        std::time::Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sum([1,2,3]^2) = 14"), "{text}");
}
