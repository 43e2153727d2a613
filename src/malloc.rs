//! The process's malloc settings for tensor work spread over many threads.
//!
//! glibc gives every thread that allocates its own malloc arena. The runtime's
//! tensor work hops between tokio's blocking threads, so large buffers are
//! freed back to the kernel from one arena and faulted in again from another;
//! docs/benchmarks/runtime.md measured this at 6-11% of a CPU step. One arena
//! for the whole process removes it.
//!
//! glibc also keeps freed memory inside the heap (its mmap threshold grows
//! after large frees, so later large buffers come from the heap and fragment
//! it): the resident size of a long run creeps up although nothing leaks.
//! [`trim`] hands the free pages back (`malloc_trim(0)`); the runtime calls
//! it after every committed step once [`use_one_arena`] or [`enable_trim`]
//! turned it on.
//!
//! Only the binaries call [`use_one_arena`]: a program that embeds the
//! runtime decides its own allocator policy (or exports `MALLOC_ARENA_MAX=1`).

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether [`trim`] does anything (set by the binaries).
static TRIM: AtomicBool = AtomicBool::new(false);

/// Use a single malloc arena for the whole process, unless the user set
/// `MALLOC_ARENA_MAX` themselves, and turn on [`trim`] after each step.
/// Call first thing in `main`, before threads start. A no-op on platforms
/// without glibc.
pub fn use_one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator tuning; it is called before
        // any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
    enable_trim();
}

/// Let the runtime return freed heap pages to the kernel after every step.
pub fn enable_trim() {
    TRIM.store(true, Ordering::Relaxed);
}

/// Return free heap pages to the kernel (glibc `malloc_trim(0)`), if enabled;
/// otherwise, or without glibc, nothing.
pub fn trim() {
    if !TRIM.load(Ordering::Relaxed) {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it takes the arena locks itself.
    unsafe {
        libc::malloc_trim(0);
    }
}
