//! What the bench binaries read about their own process (Linux `/proc`):
//! CPU seconds and resident memory. Included by each with `mod bench_common;`.

/// CPU seconds (user + system) used by this process so far, from
/// `/proc/self/stat` (clock ticks of 1/100 s): the work done, whatever else
/// shares the cores. With one intra-op thread it is the computation's time.
pub(crate) fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// A byte count from `/proc/self/status`: `"VmHWM:"` (peak resident set) or
/// `"VmRSS:"` (resident now); NaN where it cannot be read.
pub(crate) fn status_bytes(key: &str) -> f64 {
    rlsd::process::status_bytes(key).map_or(f64::NAN, |b| b as f64)
}
