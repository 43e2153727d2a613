//! Range checks of the numeric run-config keys that no section validator
//! covers: seconds that become a `Duration`, counts that become threads,
//! keys whose zero means nothing. [`check_ranges`] runs from
//! [`crate::config::RunConfig::validate`], so a bad value stops the command
//! at start with an error naming the dotted key, before anything is written.

use super::RunConfig;
use crate::error::{Error, Result};

/// Most seconds a timeout or window may be (about 31 years): beyond it a
/// `Duration` cannot be formed from the value.
pub const MAX_SECONDS: f64 = 1e9;

/// Most threads a run may ask for (`runtime.cpu_threads`,
/// `runtime.verifier_workers`); more is a typo, and each is an OS thread.
pub const MAX_THREADS: usize = 1024;

/// Most responses a step may sample (`batch_prompts x group_size`) and most
/// new tokens per response: beyond them no device holds the step, and the
/// memory plan's products would overflow.
pub const MAX_ROWS: usize = 1 << 20;
/// See [`MAX_ROWS`].
pub const MAX_NEW_TOKENS: usize = 1 << 20;

/// A positive, finite number of seconds no larger than [`MAX_SECONDS`].
fn seconds(key: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 && v <= MAX_SECONDS {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("must be a positive number of seconds up to {MAX_SECONDS:e}, found {v}"),
        ))
    }
}

/// At least 1.
fn positive(key: &str, v: u64) -> Result<()> {
    if v >= 1 {
        Ok(())
    } else {
        Err(Error::config(key, "must be at least 1"))
    }
}

/// At most [`MAX_THREADS`].
fn threads(key: &str, v: usize) -> Result<()> {
    if v <= MAX_THREADS {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("must be at most {MAX_THREADS} (each is an OS thread), found {v}"),
        ))
    }
}

/// Most images per prompt the memory plan accepts (`model.images_per_prompt`).
const MAX_IMAGES_PER_PROMPT: usize = 1024;
/// Most pixels per image the memory plan accepts (`model.image_pixels`;
/// Qwen's processors cap images far below this).
const MAX_IMAGE_PIXELS: usize = 1 << 32;

/// Check the keys above; the first problem is returned, naming its key.
pub fn check_ranges(cfg: &RunConfig) -> Result<()> {
    let r = &cfg.rollout;
    if r.batch_prompts.saturating_mul(r.group_size) > MAX_ROWS {
        let key = if r.batch_prompts >= r.group_size {
            "rollout.batch_prompts"
        } else {
            "rollout.group_size"
        };
        return Err(Error::config(
            key,
            format!(
                "batch_prompts x group_size = {} x {} is more than {MAX_ROWS} responses a step",
                r.batch_prompts, r.group_size
            ),
        ));
    }
    if r.max_new_tokens > MAX_NEW_TOKENS {
        return Err(Error::config(
            "rollout.max_new_tokens",
            format!(
                "must be at most {MAX_NEW_TOKENS}, found {}",
                r.max_new_tokens
            ),
        ));
    }
    positive("data.task.num_examples", cfg.data.task.num_examples as u64)?;
    let m = &cfg.model;
    if m.images_per_prompt > MAX_IMAGES_PER_PROMPT {
        return Err(Error::config(
            "model.images_per_prompt",
            format!(
                "must be at most {MAX_IMAGES_PER_PROMPT}, found {}",
                m.images_per_prompt
            ),
        ));
    }
    if m.image_pixels == 0 || m.image_pixels > MAX_IMAGE_PIXELS {
        return Err(Error::config(
            "model.image_pixels",
            format!(
                "must be between 1 and {MAX_IMAGE_PIXELS} pixels, found {}",
                m.image_pixels
            ),
        ));
    }
    let rt = &cfg.runtime;
    positive("runtime.steps", rt.steps)?;
    if rt.out_dir.as_os_str().is_empty() {
        return Err(Error::config(
            "runtime.out_dir",
            "must not be empty (the run folder; e.g. \"runs/default\")",
        ));
    }
    seconds("runtime.verifier_timeout_s", rt.verifier_timeout_s)?;
    seconds("runtime.restart_window_s", rt.restart_window_s)?;
    seconds("runtime.collective_timeout_s", rt.collective_timeout_s)?;
    if !(rt.device_memory_gib.is_finite() && rt.device_memory_gib >= 0.0) {
        return Err(Error::config(
            "runtime.device_memory_gib",
            format!(
                "must be a finite number of GiB >= 0 (0 = detect), found {}",
                rt.device_memory_gib
            ),
        ));
    }
    threads("runtime.cpu_threads", rt.cpu_threads)?;
    threads("runtime.verifier_workers", rt.verifier_workers)?;
    positive(
        "verifier.command.timeout_ms",
        cfg.verifier.command.timeout_ms,
    )?;
    let v = &cfg.validation;
    positive("validation.num_prompts", v.num_prompts as u64)?;
    positive("validation.samples", v.samples as u64)?;
    if !(v.temperature.is_finite() && v.temperature >= 0.0) {
        return Err(Error::config(
            "validation.temperature",
            format!(
                "must be a finite number >= 0 (0 = greedy), found {}",
                v.temperature
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(toml: &str) -> String {
        RunConfig::from_toml_str(toml).unwrap_err().to_string()
    }

    #[test]
    fn each_check_names_its_key() {
        for (toml, key) in [
            ("[runtime]\nsteps = 0", "runtime.steps"),
            ("[runtime]\nout_dir = \"\"", "runtime.out_dir"),
            (
                "[runtime]\nverifier_timeout_s = inf",
                "runtime.verifier_timeout_s",
            ),
            (
                "[runtime]\nrestart_window_s = -1.0",
                "runtime.restart_window_s",
            ),
            (
                "[runtime]\nrestart_window_s = nan",
                "runtime.restart_window_s",
            ),
            (
                "[runtime]\ndevice_memory_gib = -inf",
                "runtime.device_memory_gib",
            ),
            ("[runtime]\ncpu_threads = 100000", "runtime.cpu_threads"),
            (
                "[runtime]\nverifier_workers = 5000",
                "runtime.verifier_workers",
            ),
            (
                "[verifier.command]\ntimeout_ms = 0",
                "verifier.command.timeout_ms",
            ),
            ("[validation]\nsamples = 0", "validation.samples"),
            ("[validation]\ntemperature = nan", "validation.temperature"),
        ] {
            let e = err(toml);
            assert!(e.contains(key), "{toml}: {e}");
        }
        // The limits themselves are accepted.
        RunConfig::from_toml_str("[runtime]\ncpu_threads = 1024\nrestart_window_s = 1e9\n")
            .unwrap();
    }
}
