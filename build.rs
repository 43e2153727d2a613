//! Link-time glue for libtorch.
//!
//! - Embeds an rpath to libtorch's `lib/` folder so `rlsd` runs without
//!   `LD_LIBRARY_PATH`.
//! - Keeps `libtorch_cuda.so` linked when the libtorch has it. Nothing in the
//!   binary references a CUDA symbol directly, so the linker's default
//!   `--as-needed` would drop the library, and `tch::Cuda::is_available()`
//!   would then report false on a GPU machine.
//!
//! - Passes that folder on to the build scripts of crates that depend on
//!   rlsd (`links = "rlsd"` makes it `DEP_RLSD_LIBTORCH_LIB` there), so a
//!   user's program can embed the same rpath (examples/embed/build.rs).
//!
//! `DEP_TCH_LIBTORCH_LIB` is exported by `torch-sys` (its `links = "tch"`
//! metadata) and names the folder it linked against.
//!
//! - Compiles `csrc/rlsd_dist.cpp`, the C ABI over libtorch's c10d
//!   (TCPStore, ProcessGroupGloo) that `src/distributed` calls. c10d's Gloo header
//!   includes gloo's own headers, which the torch wheel does not ship:
//!   `scripts/setup_gloo.sh` puts them in the cache at the pinned commit
//!   (`RLSD_GLOO_INCLUDE` overrides). Without them the shim is left out,
//!   cfg `rlsd_no_gloo` is set, and creating a Gloo group is an error that
//!   says so.
//!
//! - With the `gpu` feature, compiles `csrc/rlsd_cuda.cpp`, the C ABI over
//!   libtorch's CUDA streams and events that `src/cuda` calls, and sets cfg
//!   `rlsd_cuda_shim`. It needs only libtorch's own headers (it goes through
//!   c10's device-generic stream/event interface, which libc10_cuda
//!   implements), so it builds wherever the rest does; without the feature,
//!   or when libtorch's headers are missing, the cfg is unset and every
//!   stream call in `src/cuda` is a no-op.

use std::path::PathBuf;

/// The gloo commit whose headers the shim compiles against (the one nearest
/// libtorch 2.11's third_party/gloo; scripts/setup_gloo.sh fetches it).
const GLOO_COMMIT: &str = "9322e67cf84d1c0a514b5ec250957bce3b1098b3";

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo::rustc-check-cfg=cfg(rlsd_no_gloo)");
    println!("cargo::rustc-check-cfg=cfg(rlsd_cuda_shim)");
    build_dist_shim();
    if std::env::var_os("CARGO_FEATURE_GPU").is_some() {
        build_cuda_shim();
    }
    let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=torch-sys did not report its libtorch folder; no rpath set");
        return;
    };
    let lib = PathBuf::from(lib);
    // Resolve the `.libtorch` symlink so the binary keeps working from any
    // working directory and after the clone moves.
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:libtorch_lib={}", lib.display());
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" {
        return;
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-env=RLSD_LIBTORCH_LIB={}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}

/// Where gloo's headers are: `RLSD_GLOO_INCLUDE`, or the setup cache.
fn gloo_include() -> Option<PathBuf> {
    println!("cargo:rerun-if-env-changed=RLSD_GLOO_INCLUDE");
    if let Some(dir) = std::env::var_os("RLSD_GLOO_INCLUDE") {
        let dir = PathBuf::from(dir);
        return dir.join("gloo/context.h").exists().then_some(dir);
    }
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
    };
    // The pinned commit's headers, else Debian's libgloo-dev (setup_gloo.sh's
    // fallback where GitHub is out of reach).
    [format!("gloo-{GLOO_COMMIT}"), "gloo-debian".to_string()]
        .into_iter()
        .map(|d| cache.join("rlsd").join(d))
        .find(|d| d.join("gloo/context.h").exists())
}

/// Compile csrc/rlsd_dist.cpp against libtorch's headers and gloo's.
fn build_dist_shim() {
    println!("cargo:rerun-if-changed=csrc/rlsd_dist.cpp");
    println!("cargo:rerun-if-changed=csrc/rlsd_guard.h");
    let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:rustc-cfg=rlsd_no_gloo");
        return;
    };
    let torch = PathBuf::from(lib)
        .canonicalize()
        .ok()
        .and_then(|l| l.parent().map(PathBuf::from));
    let Some(torch) = torch.filter(|t| {
        t.join("include/torch/csrc/distributed/c10d/ProcessGroupGloo.hpp")
            .exists()
    }) else {
        println!("cargo:warning=libtorch has no c10d headers; distributed training is left out");
        println!("cargo:rustc-cfg=rlsd_no_gloo");
        return;
    };
    let Some(gloo) = gloo_include() else {
        println!("cargo:warning=gloo headers not found (run scripts/setup_gloo.sh or set RLSD_GLOO_INCLUDE); distributed training is left out");
        println!("cargo:rustc-cfg=rlsd_no_gloo");
        return;
    };
    // gloo's config.h is generated by its CMake; these are the values of a
    // Linux libtorch build (TCP transport only, no CUDA inside gloo).
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let cfg_dir = out.join("gloo-config");
    std::fs::create_dir_all(cfg_dir.join("gloo")).expect("creating gloo-config");
    let mut config = String::from("#pragma once\n");
    for (k, v) in [
        ("GLOO_VERSION_MAJOR", 0),
        ("GLOO_VERSION_MINOR", 5),
        ("GLOO_VERSION_PATCH", 0),
        ("GLOO_USE_CUDA", 0),
        ("GLOO_USE_NCCL", 0),
        ("GLOO_USE_ROCM", 0),
        ("GLOO_USE_RCCL", 0),
        ("GLOO_USE_REDIS", 0),
        ("GLOO_USE_IBVERBS", 0),
        ("GLOO_USE_MPI", 0),
        ("GLOO_USE_AVX", 0),
        ("GLOO_USE_LIBUV", 0),
        ("GLOO_HAVE_TRANSPORT_TCP", 1),
        ("GLOO_HAVE_TRANSPORT_TCP_TLS", 0),
        ("GLOO_HAVE_TRANSPORT_IBVERBS", 0),
        ("GLOO_HAVE_TRANSPORT_UV", 0),
        ("GLOO_USE_TORCH_DTYPES", 1),
    ] {
        config.push_str(&format!("#define {k} {v}\n"));
    }
    config.push_str("#define GLOO_VERSION (GLOO_VERSION_MAJOR * 10000 + GLOO_VERSION_MINOR * 100 + GLOO_VERSION_PATCH)\n");
    std::fs::write(cfg_dir.join("gloo/config.h"), config).expect("writing gloo/config.h");
    cc::Build::new()
        .cpp(true)
        .file("csrc/rlsd_dist.cpp")
        .std("c++17")
        .define("USE_C10D_GLOO", None)
        .define("USE_DISTRIBUTED", None)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .include(&cfg_dir)
        .include(&gloo)
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"))
        .flag_if_supported("-w")
        .opt_level(1)
        .debug(false)
        .compile("rlsd_dist");
    // The shim calls into these; torch-sys links them too, but order matters
    // for a static archive, so name them after it.
    let lib = torch.join("lib");
    println!("cargo:rustc-link-search=native={}", lib.display());
    for l in ["torch_cpu", "c10"] {
        println!("cargo:rustc-link-lib=dylib={l}");
    }
}

/// Compile csrc/rlsd_cuda.cpp (the `gpu` feature) against libtorch's headers
/// and set cfg `rlsd_cuda_shim`. Nothing of CUDA itself is needed here: the
/// shim calls c10's device-generic interface, and the CUDA implementation
/// comes from libtorch_cuda at run time.
fn build_cuda_shim() {
    println!("cargo:rerun-if-changed=csrc/rlsd_cuda.cpp");
    println!("cargo:rerun-if-changed=csrc/rlsd_guard.h");
    let torch = std::env::var_os("DEP_TCH_LIBTORCH_LIB")
        .and_then(|l| PathBuf::from(l).canonicalize().ok())
        .and_then(|l| l.parent().map(PathBuf::from))
        .filter(|t| {
            t.join("include/c10/core/impl/DeviceGuardImplInterface.h")
                .exists()
        });
    let Some(torch) = torch else {
        println!("cargo:warning=libtorch's c10 headers not found; CUDA streams per actor are left out (every stream call is a no-op)");
        return;
    };
    cc::Build::new()
        .cpp(true)
        .file("csrc/rlsd_cuda.cpp")
        .std("c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .include(torch.join("include"))
        .flag_if_supported("-w")
        .opt_level(1)
        .debug(false)
        .compile("rlsd_cuda");
    let lib = torch.join("lib");
    println!("cargo:rustc-link-search=native={}", lib.display());
    for l in ["torch_cpu", "c10"] {
        println!("cargo:rustc-link-lib=dylib={l}");
    }
    println!("cargo:rustc-cfg=rlsd_cuda_shim");
}
