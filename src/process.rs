//! What this process's kernel accounting says about it (Linux `/proc`):
//! its resident memory, for the rank reports, the allocator's trim and the
//! bench binaries.

/// A byte count from `/proc/self/status`: `"VmHWM:"` (peak resident set),
/// `"VmRSS:"` (resident now); `None` where it cannot be read.
pub fn status_bytes(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_resident_and_peak() {
        let rss = super::status_bytes("VmRSS:").unwrap();
        let peak = super::status_bytes("VmHWM:").unwrap();
        assert!(rss > 0 && peak >= rss, "{rss} {peak}");
        assert_eq!(super::status_bytes("NoSuchKey:"), None);
    }
}
