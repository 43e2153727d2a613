//! Rehearsed rank failures for the tests (`RLSD_DIST_FAIL`), the
//! data-parallel counterpart of [`super::actors`]:
//!
//! - `R:S` or `R:S:abort`: rank `R` aborts (SIGABRT) as step `S` starts;
//! - `R:S:stall`: rank `R` stops answering as step `S` starts (sleeps until
//!   it is killed), so its peers' next collective must time out;
//! - `R:S:commit`: rank `R` aborts inside the checkpoint commit of step `S`,
//!   after the ranks agreed on the weights and while rank 0 writes.
//!
//! Unset, nothing is injected. A malformed value is an error naming the
//! variable.

use crate::error::{Error, Result};

/// The environment variable read by [`RankFault::from_env`].
pub const FAULT_VAR: &str = "RLSD_DIST_FAIL";

/// When the injected failure strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// As the step starts: abort.
    Abort,
    /// As the step starts: stop answering.
    Stall,
    /// Inside the step's checkpoint commit: abort.
    Commit,
}

/// One injected rank failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankFault {
    /// The rank that fails.
    pub rank: usize,
    /// The step at which it fails.
    pub step: u64,
    /// How and where.
    pub point: FaultPoint,
}

impl RankFault {
    /// Parse `R:S[:abort|stall|commit]`.
    pub fn parse(spec: &str) -> Result<RankFault> {
        let bad = |why: &str| {
            Error::Distributed(format!(
                "{FAULT_VAR}={spec:?}: {why} (expected RANK:STEP[:abort|stall|commit])"
            ))
        };
        let parts: Vec<&str> = spec.trim().split(':').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(bad("wrong number of fields"));
        }
        let rank = parts[0].parse().map_err(|_| bad("RANK is not a number"))?;
        let step = parts[1].parse().map_err(|_| bad("STEP is not a number"))?;
        let point = match parts.get(2).copied().unwrap_or("abort") {
            "abort" => FaultPoint::Abort,
            "stall" => FaultPoint::Stall,
            "commit" => FaultPoint::Commit,
            _ => return Err(bad("unknown kind")),
        };
        Ok(RankFault { rank, step, point })
    }

    /// The failure `RLSD_DIST_FAIL` asks of rank `rank`, if any.
    pub fn from_env(rank: usize) -> Result<Option<RankFault>> {
        match std::env::var(FAULT_VAR) {
            Ok(spec) => Ok(Some(RankFault::parse(&spec)?).filter(|f| f.rank == rank)),
            Err(_) => Ok(None),
        }
    }

    /// Strike if this is the fault's step and moment (`at_commit`: inside
    /// the checkpoint commit; otherwise as the step starts): abort the
    /// process, or sleep until killed.
    pub fn strike(fault: Option<&RankFault>, step: u64, at_commit: bool) {
        let Some(f) = fault.filter(|f| f.step == step) else {
            return;
        };
        match (f.point, at_commit) {
            (FaultPoint::Abort, false) | (FaultPoint::Commit, true) => {
                eprintln!("rank {}: {FAULT_VAR}: aborting at step {step}", f.rank);
                std::process::abort();
            }
            (FaultPoint::Stall, false) => {
                eprintln!("rank {}: {FAULT_VAR}: stalling at step {step}", f.rank);
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let f = RankFault::parse("1:3").unwrap();
        assert_eq!((f.rank, f.step, f.point), (1, 3, FaultPoint::Abort));
        assert_eq!(
            RankFault::parse("0:2:stall").unwrap().point,
            FaultPoint::Stall
        );
        assert_eq!(
            RankFault::parse("2:9:commit").unwrap().point,
            FaultPoint::Commit
        );
        for bad in ["1", "a:2", "1:b", "1:2:boom", "1:2:3:4"] {
            let e = RankFault::parse(bad).unwrap_err().to_string();
            assert!(e.contains(FAULT_VAR) && e.contains(bad), "{e}");
        }
    }
}
