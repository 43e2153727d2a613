//! The one build script an rlsd program needs: run without
//! `LD_LIBRARY_PATH` by embedding an rpath to the libtorch rlsd was linked
//! against. rlsd hands that folder to the build scripts of crates that depend
//! on it directly (`links = "rlsd"`) as `DEP_RLSD_LIBTORCH_LIB`.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_RLSD_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_RLSD_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        // On a CUDA libtorch, keep libtorch_cuda linked (nothing references
        // it directly, and `--as-needed` would drop it).
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
