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
}
