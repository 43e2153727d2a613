//! Where a rank stands: its rank, the world size and the rendezvous, read
//! from the environment the way torchrun and Slurm set it.
//!
//! | value        | torchrun / `rlsd train --nproc` | Slurm (`srun`)        |
//! |--------------|---------------------------------|-----------------------|
//! | rank         | `RANK`                          | `SLURM_PROCID`        |
//! | world size   | `WORLD_SIZE`                    | `SLURM_NTASKS`        |
//! | local rank   | `LOCAL_RANK`                    | `SLURM_LOCALID`       |
//! | store host   | `MASTER_ADDR`                   | `MASTER_ADDR`         |
//! | store port   | `MASTER_PORT` (default 29500)   | `MASTER_PORT`         |
//!
//! `RANK` wins over `SLURM_PROCID` when both are set (torchrun inside an
//! allocation). Also read: `RLSD_DIST_TIMEOUT_S` (collective and rendezvous
//! timeout; overrides `runtime.collective_timeout_s`, default 300), `RLSD_DIST_BIND` (the address Gloo listens on;
//! `if:NAME` for an interface; `GLOO_SOCKET_IFNAME` works too),
//! `RLSD_STORE_HOSTED=1` or torchrun's `TORCHELASTIC_USE_AGENT_STORE=True`
//! (the store already runs; rank 0 connects instead of hosting it).

use crate::error::{Error, Result};
use std::time::Duration;

/// The default rendezvous port (torchrun's).
pub const DEFAULT_PORT: u16 = 29500;
/// The default collective timeout (`runtime.collective_timeout_s`).
pub const DEFAULT_TIMEOUT: Duration = crate::config::DEFAULT_COLLECTIVE_TIMEOUT;

/// One rank's place in the job.
#[derive(Debug, Clone, PartialEq)]
pub struct DistEnv {
    /// This rank, `0..world`.
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
    /// This rank's index on its node (its GPU, with `--gpus`).
    pub local_rank: usize,
    /// Host of the rendezvous store.
    pub master_addr: String,
    /// Port of the rendezvous store.
    pub master_port: u16,
    /// Rank 0 hosts the store (false when a launcher already does).
    pub host_store: bool,
    /// Address or `if:NAME` Gloo binds to; empty: this host's name.
    pub bind: String,
    /// Collective and rendezvous timeout from `RLSD_DIST_TIMEOUT_S`;
    /// `None`: `runtime.collective_timeout_s` decides.
    pub timeout: Option<Duration>,
}

fn parse<T: std::str::FromStr>(
    get: &dyn Fn(&str) -> Option<String>,
    key: &str,
) -> Result<Option<T>> {
    match get(key) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| {
            Error::Distributed(format!(
                "environment variable {key}={v:?} is not a valid number"
            ))
        }),
    }
}

impl DistEnv {
    /// From the process environment; `None` when no rank variables are set.
    pub fn from_env() -> Result<Option<DistEnv>> {
        DistEnv::from_vars(&|k| std::env::var(k).ok())
    }

    /// From `get` (an environment lookup); see the module docs for the keys.
    pub fn from_vars(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<DistEnv>> {
        let (rank_key, world_key, local_key) =
            if get("RANK").is_some() || get("WORLD_SIZE").is_some() {
                ("RANK", "WORLD_SIZE", "LOCAL_RANK")
            } else if get("SLURM_PROCID").is_some() {
                ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
            } else {
                return Ok(None);
            };
        let need = |key: &str| -> Result<usize> {
            parse(get, key)?.ok_or_else(|| {
                Error::Distributed(format!("{key} is not set (needed with {rank_key})"))
            })
        };
        let rank = need(rank_key)?;
        let world = need(world_key)?;
        if world == 0 || rank >= world {
            return Err(Error::Distributed(format!(
                "{rank_key}={rank} is not a rank of {world_key}={world}"
            )));
        }
        let local_rank = parse(get, local_key)?.unwrap_or(rank);
        let master_addr = match get("MASTER_ADDR") {
            Some(a) if !a.trim().is_empty() => a.trim().to_string(),
            _ if world == 1 => "127.0.0.1".into(),
            _ => {
                return Err(Error::Distributed(format!(
                    "MASTER_ADDR is not set: with {world_key}={world} every rank needs the address of rank 0's node"
                )))
            }
        };
        let master_port = parse(get, "MASTER_PORT")?.unwrap_or(DEFAULT_PORT);
        let hosted = get("RLSD_STORE_HOSTED").is_some_and(|v| v == "1")
            || get("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let bind = match (get("RLSD_DIST_BIND"), get("GLOO_SOCKET_IFNAME")) {
            (Some(b), _) => b,
            (None, Some(i)) => format!("if:{i}"),
            (None, None) => String::new(),
        };
        let timeout = match parse::<f64>(get, "RLSD_DIST_TIMEOUT_S")? {
            Some(s) if s > 0.0 && s.is_finite() => Some(Duration::from_secs_f64(s)),
            Some(s) => {
                return Err(Error::Distributed(format!(
                    "RLSD_DIST_TIMEOUT_S={s} must be > 0"
                )))
            }
            None => None,
        };
        Ok(Some(DistEnv {
            rank,
            world,
            local_rank,
            master_addr,
            master_port,
            host_store: rank == 0 && !hosted,
            bind,
            timeout,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Option<DistEnv>> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DistEnv::from_vars(&|k| m.get(k).cloned())
    }

    #[test]
    fn torchrun_variables() {
        let e = env(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "1234"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (e.rank, e.world, e.local_rank, e.master_port),
            (3, 8, 1, 1234)
        );
        assert_eq!(e.master_addr, "node0");
        assert!(!e.host_store);
        assert_eq!(e.timeout, None);
    }

    #[test]
    fn slurm_variables_and_defaults() {
        let e = env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_LOCALID", "0"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("GLOO_SOCKET_IFNAME", "ib0"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((e.rank, e.world, e.master_port), (0, 2, DEFAULT_PORT));
        assert!(e.host_store);
        assert_eq!(e.bind, "if:ib0");
        assert_eq!(env(&[]).unwrap(), None);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let msg = |r: Result<Option<DistEnv>>| r.unwrap_err().to_string();
        assert!(msg(env(&[("RANK", "x"), ("WORLD_SIZE", "2")])).contains("RANK=\"x\""));
        assert!(msg(env(&[
            ("RANK", "2"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "a")
        ]))
        .contains("not a rank"));
        assert!(msg(env(&[("RANK", "0"), ("WORLD_SIZE", "2")])).contains("MASTER_ADDR"));
        assert!(msg(env(&[("RANK", "0")])).contains("WORLD_SIZE"));
    }
}
