//! The process's malloc setting for tensor work spread over many threads.
//!
//! glibc gives every thread that allocates its own malloc arena. The runtime's
//! tensor work hops between tokio's blocking threads, so large buffers are
//! freed back to the kernel from one arena and faulted in again from another;
//! docs/benchmarks/runtime.md measured this at 6-11% of a CPU step. One arena
//! for the whole process removes it. Only the binaries call this: a program
//! that embeds the runtime decides its own allocator policy (or exports
//! `MALLOC_ARENA_MAX=1`).

/// Use a single malloc arena for the whole process, unless the user set
/// `MALLOC_ARENA_MAX` themselves. Call first thing in `main`, before threads
/// start. A no-op on platforms without glibc.
pub fn use_one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator tuning; it is called before
        // any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
