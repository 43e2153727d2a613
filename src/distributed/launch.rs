//! `rlsd train --nproc N` / `--gpus 0,1`: this binary starts its ranks as
//! child processes of itself and supervises them.
//!
//! Child processes rather than threads: each rank gets its own libtorch
//! (allocator, thread pools, CUDA context), a crash takes down one rank
//! that the supervisor sees, and the multi-node path (torchrun, Slurm)
//! runs the very same per-rank code.
//!
//! The launcher hosts the rendezvous store (a c10d TCPStore on a free
//! port) and hands each child `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `MASTER_ADDR`, `MASTER_PORT` and `RLSD_STORE_HOSTED=1`; with `--gpus`
//! also `CUDA_VISIBLE_DEVICES=<its GPU>` and `RLSD_DIST_DEVICE=cuda:0`. A
//! child that exits non-zero (or is killed) stops the others (SIGTERM, then
//! SIGKILL after a grace period) and the launcher returns an error naming
//! it. Children die with the launcher (`PR_SET_PDEATHSIG`).
//!
//! The ranks share the node's cores: unless `OMP_NUM_THREADS` is set, each
//! child gets `OMP_NUM_THREADS = max(1, cores / N)` (and the same
//! `MKL_NUM_THREADS`), so N ranks do not each start a thread per core and
//! fight over them ([`rank_threads`]); unless `OMP_WAIT_POLICY` is set, it
//! is `PASSIVE`, so a rank's idle OpenMP workers sleep instead of spinning
//! on cores another process needs (a one-rank job on this 2-core machine
//! beside one busy process: 8.5 s a step spinning, 0.98 s passive).

use super::gloo::Store;
use crate::error::{Error, Result};
use std::ffi::OsString;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// What to launch.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Number of ranks.
    pub nproc: usize,
    /// One GPU per rank (`--gpus`), or CPU ranks.
    pub gpus: Option<Vec<usize>>,
    /// The children's arguments (this command line without `--nproc`/`--gpus`).
    pub args: Vec<OsString>,
    /// Timeout of the launcher's store; with `forward_timeout`, also handed
    /// to the ranks as `RLSD_DIST_TIMEOUT_S`.
    pub timeout: Duration,
    /// Whether the ranks get `timeout` (set when `RLSD_DIST_TIMEOUT_S` was
    /// given); otherwise each rank reads `runtime.collective_timeout_s`.
    pub forward_timeout: bool,
    /// Grace period between SIGTERM and SIGKILL when stopping the ranks.
    pub grace: Duration,
}

/// Parse `--gpus 0,1,3`.
pub fn parse_gpus(s: &str) -> Result<Vec<usize>> {
    let ids = s
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<usize>()
                .map_err(|_| Error::Distributed(format!("--gpus {s:?}: {p:?} is not a GPU index")))
        })
        .collect::<Result<Vec<usize>>>()?;
    let mut seen = ids.clone();
    seen.sort_unstable();
    seen.dedup();
    if ids.is_empty() || seen.len() != ids.len() {
        return Err(Error::Distributed(format!(
            "--gpus {s:?}: list each GPU once"
        )));
    }
    Ok(ids)
}

/// `args` without the launcher's own flags (`--nproc N`, `--nproc=N`,
/// `--gpus L`, `--gpus=L`).
pub fn child_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for a in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        let s = a.to_string_lossy();
        if s == "--nproc" || s == "--gpus" {
            skip_value = true;
        } else if !(s.starts_with("--nproc=") || s.starts_with("--gpus=")) {
            out.push(a);
        }
    }
    out
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "unknown status".into(),
    }
}

fn spawn(l: &Launch, rank: usize, port: u16) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()
        .map_err(|e| Error::Distributed(format!("finding this binary: {e}")))?;
    let mut cmd = Command::new(&exe);
    cmd.args(&l.args)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", l.nproc.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("LOCAL_WORLD_SIZE", l.nproc.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("RLSD_STORE_HOSTED", "1")
        .env("RLSD_DIST_BIND", "127.0.0.1");
    if l.forward_timeout {
        cmd.env("RLSD_DIST_TIMEOUT_S", l.timeout.as_secs_f64().to_string());
    }
    if std::env::var_os("OMP_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = rank_threads(cores, l.nproc).to_string();
        cmd.env("OMP_NUM_THREADS", &n).env("MKL_NUM_THREADS", &n);
    }
    if std::env::var_os("OMP_WAIT_POLICY").is_none() {
        cmd.env("OMP_WAIT_POLICY", "PASSIVE");
    }
    if let Some(gpus) = &l.gpus {
        cmd.env("CUDA_VISIBLE_DEVICES", gpus[rank].to_string())
            .env("RLSD_DIST_DEVICE", "cuda:0");
    }
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| Error::Distributed(format!("starting rank {rank} ({}): {e}", exe.display())))
}

/// Intra-op threads of each of `nproc` ranks on a node of `cores` cores:
/// an even share, at least one.
pub fn rank_threads(cores: usize, nproc: usize) -> usize {
    (cores / nproc.max(1)).max(1)
}

/// Stop every child still running: SIGTERM, then SIGKILL after `grace`.
fn stop_all(children: &mut [(usize, Child)], grace: Duration) {
    for (_, c) in children.iter() {
        if let Ok(pid) = i32::try_from(c.id()) {
            // SAFETY: signalling our own child by its pid.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if children
            .iter_mut()
            .all(|(_, c)| matches!(c.try_wait(), Ok(Some(_))))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (_, c) in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Check, before any rank starts, that a job of `--nproc`/`--gpus` ranks
/// can hold `cfg`'s placement (split placement needs a learner and a
/// sampler).
pub fn check_job(
    cfg: &crate::config::RunConfig,
    nproc: Option<usize>,
    gpus: Option<&str>,
) -> Result<()> {
    let world = match gpus {
        Some(g) => parse_gpus(g)?.len(),
        None => nproc.unwrap_or(1),
    };
    super::split::Role::of(cfg, 0, world.max(1)).map(|_| ())
}

/// `rlsd train --nproc N` / `--gpus LIST`: this process's arguments (less
/// those flags) for the children; `RLSD_DIST_TIMEOUT_S`, when set, is
/// checked here and handed on.
pub fn launch_from_cli(nproc: Option<usize>, gpus: Option<&str>) -> Result<()> {
    let gpus = gpus.map(parse_gpus).transpose()?;
    let nproc = match (&gpus, nproc) {
        (Some(g), _) => g.len(),
        (None, Some(n)) => n,
        (None, None) => 1,
    };
    let given = std::env::var("RLSD_DIST_TIMEOUT_S").is_ok();
    let timeout = match std::env::var("RLSD_DIST_TIMEOUT_S") {
        Ok(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0 && s.is_finite())
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                Error::Distributed(format!(
                    "RLSD_DIST_TIMEOUT_S={v:?} is not a positive number"
                ))
            })?,
        Err(_) => super::env::DEFAULT_TIMEOUT,
    };
    launch(&Launch {
        nproc,
        gpus,
        args: child_args(std::env::args_os().skip(1)),
        timeout,
        forward_timeout: given,
        grace: Duration::from_secs(10),
    })
}

/// Start the ranks and wait for them; an error when any rank fails.
pub fn launch(l: &Launch) -> Result<()> {
    if l.nproc == 0 {
        return Err(Error::Distributed("--nproc must be at least 1".into()));
    }
    if let Some(g) = &l.gpus {
        if g.len() != l.nproc {
            return Err(Error::Distributed(format!(
                "{} GPUs for {} ranks",
                g.len(),
                l.nproc
            )));
        }
    }
    let store = Store::server("127.0.0.1", 0, l.timeout)?;
    let mut running: Vec<(usize, Child)> = Vec::with_capacity(l.nproc);
    for rank in 0..l.nproc {
        match spawn(l, rank, store.port()) {
            Ok(c) => running.push((rank, c)),
            Err(e) => {
                stop_all(&mut running, l.grace);
                return Err(e);
            }
        }
    }
    tracing::info!(ranks = l.nproc, port = store.port(), "started ranks");
    loop {
        let mut failed: Vec<String> = Vec::new();
        let mut i = 0;
        while i < running.len() {
            match running[i].1.try_wait() {
                Ok(Some(status)) => {
                    let rank = running[i].0;
                    running.swap_remove(i);
                    if !status.success() {
                        failed.push(format!(
                            "rank {rank} of {} failed ({})",
                            l.nproc,
                            describe(status)
                        ));
                    }
                }
                Ok(None) => i += 1,
                Err(e) => {
                    failed.push(format!("waiting for rank {}: {e}", running[i].0));
                    i += 1;
                }
            }
        }
        if !failed.is_empty() {
            // Ranks that died in the same poll are all named: the first to
            // fail often takes its peers' collectives down with it.
            stop_all(&mut running, l.grace);
            return Err(Error::Distributed(format!(
                "{}; stopped the other ranks",
                failed.join("; ")
            )));
        }
        if running.is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_launcher_flags_only() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let got = child_args(a(&[
            "train",
            "--nproc",
            "2",
            "--set",
            "x=1",
            "--gpus=0,1",
            "--config",
            "c.toml",
        ]));
        assert_eq!(got, a(&["train", "--set", "x=1", "--config", "c.toml"]));
    }

    #[test]
    fn ranks_share_the_cores() {
        assert_eq!(rank_threads(2, 2), 1);
        assert_eq!(rank_threads(16, 4), 4);
        assert_eq!(rank_threads(16, 3), 5);
        assert_eq!(rank_threads(2, 4), 1);
        assert_eq!(rank_threads(8, 0), 8);
    }

    #[test]
    fn gpu_lists() {
        assert_eq!(parse_gpus("0, 2,3").unwrap(), vec![0, 2, 3]);
        assert!(parse_gpus("0,0").is_err());
        assert!(parse_gpus("a").unwrap_err().to_string().contains("\"a\""));
    }
}
