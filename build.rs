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

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
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
