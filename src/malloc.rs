//! The process's malloc settings for tensor work spread over many threads.
//!
//! glibc gives every thread that allocates its own malloc arena. The runtime's
//! tensor work hops between tokio's blocking threads, so large buffers are
//! freed back to the kernel from one arena and faulted in again from another;
//! docs/benchmarks/runtime.md measured this at 6-11% of a CPU step. One arena
//! for the whole process removes it.
//!
//! glibc also hands big buffers back to the kernel as soon as they are freed:
//! a buffer above its mmap threshold (128 KiB, rising with the largest buffer
//! freed so far up to 32 MiB) is unmapped at `free`, and the top of the heap
//! is returned once more than twice that threshold is free there. A train
//! step allocates and frees the same activations every layer and every step,
//! so each of them was faulted in again, page by page (a tiny Qwen2 step: 62k
//! faults, 11% of its CPU time in the kernel). [`use_one_arena`] therefore
//! fixes the mmap threshold at [`MMAP_THRESHOLD`] and the trim threshold at
//! [`TRIM_THRESHOLD`]: freed buffers up to 32 MiB stay in the heap and are
//! reused (docs/benchmarks/runtime.md, 2026-11-30).
//!
//! Memory kept that way is bounded by [`trim`]: the runtime calls it after
//! every committed step, and it hands the free pages back (`malloc_trim(0)`)
//! when the resident size has grown by more than [`TRIM_GROWTH_DIVISOR`]th
//! (and at least [`TRIM_MIN_GROWTH`]) over the size at the end of the step
//! after the last trim: a long run's resident size creeps by at most that
//! much between trims (fragmentation made it grow without bound before
//! trimming existed), and steady steps do not fault their whole working set
//! in again. The bound was a quarter until 2026-12-07: that let free
//! fragments reach a quarter of the resident size before a trim (the
//! default run's creep itself was MKL's, below; docs/benchmarks/recovery.md).
//!
//! Intel MKL (inside libtorch's CPU library, for float32 matrix products)
//! keeps its own pool of work buffers per thread that calls it and did not
//! hand a thread's buffers back when the thread ended. The runtime's tensor
//! work runs on tokio's blocking threads, which come and go, so the pool grew
//! for the whole run: 233 MB of the 322 MB still allocated after 190 steps of
//! an 8 x 8 default run were MKL's (heaptrack, 2026-12-07), and the default
//! run's resident size crept from 745 MB at step 100 to 1,015 MB at step 377
//! (docs/benchmarks/recovery.md). [`use_one_arena`] therefore also sets
//! `MKL_DISABLE_FAST_MM=1` (MKL then takes its buffers from malloc and frees
//! them after each call), unless the user set it.
//!
//! Only the binaries call [`use_one_arena`]: a program that embeds the
//! runtime decides its own allocator policy (or exports `MALLOC_ARENA_MAX=1`,
//! `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`); a variable the user
//! exported always wins over the setting here.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Buffers at least this large are mapped on their own and unmapped at
/// `free`; smaller ones come from the heap and are reused (32 MiB, the
/// highest value glibc's sliding threshold reaches). Higher values were
/// measured worse: at 256 MiB a real-vocabulary train step's 64 MiB logit
/// chunks came from the heap too and its peak resident size grew from 1.7
/// to 2.9 GiB (fragmentation), although it ran 45% faster.
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Free memory at the top of the heap beyond this is returned to the kernel
/// at `free` (256 MiB); below it the heap keeps it for the next allocation.
pub const TRIM_THRESHOLD: usize = 256 << 20;

/// [`trim`] hands memory back only when the resident size grew by more than
/// this (16 MiB) or by the baseline over [`TRIM_GROWTH_DIVISOR`], whichever
/// is more.
pub const TRIM_MIN_GROWTH: u64 = 16 << 20;

/// [`trim`]'s bound on growth as a fraction of the baseline: one 32nd (3%).
pub const TRIM_GROWTH_DIVISOR: u64 = 32;

/// Whether [`trim`] does anything (set by the binaries).
static TRIM: AtomicBool = AtomicBool::new(false);

/// Resident bytes at the first [`trim`] call after the last actual trim (0:
/// not measured yet).
static BASELINE: AtomicU64 = AtomicU64::new(0);

/// Use a single malloc arena for the whole process and keep freed buffers
/// for reuse ([`MMAP_THRESHOLD`], [`TRIM_THRESHOLD`]), each unless the user
/// set the matching `MALLOC_*` variable (or `GLIBC_TUNABLES`) themselves,
/// turn off MKL's per-thread buffer pool (`MKL_DISABLE_FAST_MM=1` unless
/// set), and turn on [`trim`] after each step. Call first thing in `main`, before
/// threads start. A no-op on platforms without glibc.
pub fn use_one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        let unset = |var: &str, tunable: &str| {
            std::env::var_os(var).is_none() && !tunables.contains(tunable)
        };
        if std::env::var_os("MKL_DISABLE_FAST_MM").is_none() {
            // Read by MKL at its first allocation, after `main` started (see
            // the module docs); no other thread exists yet.
            std::env::set_var("MKL_DISABLE_FAST_MM", "1");
        }
        // SAFETY: mallopt only changes allocator tuning; it is called before
        // any other thread exists.
        unsafe {
            if unset("MALLOC_ARENA_MAX", "arena_max") {
                libc::mallopt(libc::M_ARENA_MAX, 1);
            }
            if unset("MALLOC_MMAP_THRESHOLD_", "mmap_threshold") {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
            }
            if unset("MALLOC_TRIM_THRESHOLD_", "trim_threshold") {
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
            }
        }
    }
    enable_trim();
}

/// Let the runtime return freed heap pages to the kernel after a step when
/// the resident size has grown (see [`trim`]).
pub fn enable_trim() {
    TRIM.store(true, Ordering::Relaxed);
}

/// Whether [`trim`] hands memory back at `resident` bytes, given the
/// `baseline` measured after the last trim: growth over a 32nd of the
/// baseline ([`TRIM_GROWTH_DIVISOR`]) and over [`TRIM_MIN_GROWTH`].
pub fn should_trim(resident: u64, baseline: u64) -> bool {
    resident > baseline.saturating_add((baseline / TRIM_GROWTH_DIVISOR).max(TRIM_MIN_GROWTH))
}

/// The process's resident bytes, where readable.
fn resident_bytes() -> Option<u64> {
    crate::process::status_bytes("VmRSS:")
}

/// What the allocator holds, in bytes (glibc `mallinfo2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeapStats {
    /// Bytes of the heap (`arena`: obtained with `sbrk`).
    pub heap: u64,
    /// Bytes in use by the program, heap and mapped buffers together.
    pub in_use: u64,
    /// Free bytes kept in the heap for reuse.
    pub free: u64,
    /// Bytes of buffers mapped on their own (at or above the mmap threshold).
    pub mapped: u64,
}

/// The allocator's current totals; `None` without glibc.
pub fn heap_stats() -> Option<HeapStats> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters (taking its locks).
        let m = unsafe { libc::mallinfo2() };
        Some(HeapStats {
            heap: m.arena as u64,
            in_use: (m.uordblks + m.hblkhd) as u64,
            free: m.fordblks as u64,
            mapped: m.hblkhd as u64,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// If enabled: return free heap pages to the kernel (glibc `malloc_trim(0)`)
/// when the resident size has grown past [`should_trim`]'s bound over the
/// first size measured after the last trim (the first call only measures).
/// Otherwise, or without glibc, nothing.
pub fn trim() {
    if !TRIM.load(Ordering::Relaxed) {
        return;
    }
    let Some(resident) = resident_bytes() else {
        release();
        return;
    };
    let baseline = BASELINE.load(Ordering::Relaxed);
    if let Some(h) = heap_stats() {
        tracing::debug!(
            resident,
            baseline,
            heap = h.heap,
            in_use = h.in_use,
            free = h.free,
            mapped = h.mapped,
            "malloc"
        );
    }
    if baseline == 0 {
        BASELINE.store(resident, Ordering::Relaxed);
    } else if should_trim(resident, baseline) {
        release();
        BASELINE.store(0, Ordering::Relaxed);
    }
}

/// glibc `malloc_trim(0)`; nothing without glibc.
fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it takes the arena locks itself.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_past_a_32nd_or_the_minimum_growth() {
        let mib = 1u64 << 20;
        // Baseline 1 GiB: the bound is a 32nd, 32 MiB.
        assert!(!should_trim(1024 * mib + 32 * mib, 1024 * mib));
        assert!(should_trim(1024 * mib + 32 * mib + 1, 1024 * mib));
        // Baseline 320 MiB: a 32nd is 10 MiB, below the 16 MiB minimum.
        assert!(!should_trim(336 * mib, 320 * mib));
        assert!(should_trim(336 * mib + 1, 320 * mib));
        // Shrinking never trims; a huge baseline does not overflow.
        assert!(!should_trim(10 * mib, 100 * mib));
        assert!(!should_trim(u64::MAX, u64::MAX));
    }

    #[test]
    fn resident_size_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let r = resident_bytes().expect("statm");
            assert!(r > 1 << 20, "{r} resident bytes");
        }
    }
}
