//! Device selection from config strings (`cpu`, `cuda:N`, `auto`).

use crate::error::{Error, Result};
use tch::Device;

/// Parse a device name from the config. `auto` picks the first GPU when one is
/// visible and the CPU otherwise.
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim();
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available()),
        "cuda" => cuda(0, name),
        _ => match name.strip_prefix("cuda:") {
            Some(n) => {
                let idx = n.parse::<usize>().map_err(|_| {
                    Error::config("device", format!("`{name}`: expected cpu, auto or cuda:N"))
                })?;
                cuda(idx, name)
            }
            None => Err(Error::config(
                "device",
                format!("`{name}`: expected cpu, auto or cuda:N"),
            )),
        },
    }
}

/// Check that `name` is a device string (`cpu`, `auto`, `cuda`, `cuda:N`)
/// without asking libtorch which devices exist, so a config for a GPU
/// machine can be shown and planned on a laptop; [`parse_device`] checks
/// availability when a run starts.
pub fn check_device_name(name: &str) -> Result<()> {
    let name = name.trim();
    let ok = matches!(name, "cpu" | "auto" | "cuda")
        || name
            .strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            "device",
            format!("`{name}`: expected cpu, auto or cuda:N"),
        ))
    }
}

fn cuda(idx: usize, name: &str) -> Result<Device> {
    let n = tch::Cuda::device_count() as usize;
    if idx >= n {
        return Err(Error::config(
            "device",
            format!("`{name}` requested but {n} CUDA device(s) are visible"),
        ));
    }
    Ok(Device::Cuda(idx))
}

/// Intra-op CPU threads for one process of the actor runtime: `configured`
/// (`runtime.cpu_threads`) when not 0, else `OMP_NUM_THREADS` when set
/// (`omp`), else the `cores` shared among the actors that compute at once:
/// with `max_staleness >= 1` the sampler, the teacher-scorer and the
/// optimizer overlap (3), otherwise one stage runs at a time. Each actor
/// that runs a tensor op starts its own OpenMP team of this size, so a
/// per-core team per actor oversubscribes the cores, and spinning OpenMP
/// workers then steal the cycles of the ones doing work (measured on a
/// loaded 2-core machine: 4 steps of the default run in 12.8 s with 2
/// threads, 3.6 s with 1).
pub fn cpu_threads(
    configured: usize,
    omp: Option<&str>,
    cores: usize,
    max_staleness: u64,
) -> usize {
    if configured > 0 {
        return configured;
    }
    if let Some(n) = omp
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    let overlapping = if max_staleness >= 1 { 3 } else { 1 };
    (cores / overlapping).max(1)
}

/// One line describing the libtorch build and the devices it can see.
pub fn describe() -> String {
    format!(
        "libtorch {} | cuda available: {} | cuda devices: {} | cudnn: {} | threads: {}",
        libtorch_version(),
        tch::Cuda::is_available(),
        tch::Cuda::device_count(),
        tch::Cuda::cudnn_is_available(),
        tch::get_num_threads(),
    )
}

/// libtorch version this binary was built against (from the `version.py` or
/// `build-version` file next to the library, when present).
pub fn libtorch_version() -> String {
    let Some(lib) = option_env!("RLSD_LIBTORCH_LIB") else {
        return "unknown".into();
    };
    let root = std::path::Path::new(lib).parent().map(|p| p.to_path_buf());
    let Some(root) = root else {
        return "unknown".into();
    };
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("__version__ = ") {
                return v.trim_matches(|c| c == '\'' || c == '"').to_string();
            }
        }
    }
    std::fs::read_to_string(root.join("build-version"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("gpu").is_err());
        assert!(parse_device("cuda:x").is_err());
        if !tch::Cuda::is_available() {
            assert_eq!(parse_device("auto").unwrap(), Device::Cpu);
            let err = parse_device("cuda:0").unwrap_err().to_string();
            assert!(err.contains("cuda:0"), "{err}");
        }
    }

    #[test]
    fn cpu_threads_share_the_cores_among_overlapping_actors() {
        assert_eq!(cpu_threads(0, None, 2, 1), 1);
        assert_eq!(cpu_threads(0, None, 16, 1), 5);
        assert_eq!(cpu_threads(0, None, 16, 0), 16);
        assert_eq!(cpu_threads(0, Some("4"), 16, 1), 4);
        assert_eq!(cpu_threads(0, Some("junk"), 2, 0), 2);
        assert_eq!(cpu_threads(3, Some("4"), 16, 1), 3);
    }
}
