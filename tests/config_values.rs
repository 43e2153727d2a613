//! Every numeric config key against bad values, through the real binary:
//! negative, zero where it means nothing, NaN, infinite and overflowing
//! values must each stop `rlsd train` at once with one line naming the key,
//! exit status 2, no panic, and nothing written into the run folder.
//!
//! The table lists, per key, the probes that must be refused; the probes it
//! leaves out are meaningful values of that key (`top_k = 0` disables the
//! cut-off, `seed = -1`... is not one: seeds are unsigned). A coverage test
//! checks that every numeric key of the default configuration is in the
//! table, so a new key cannot skip this test.

#[path = "common/timed.rs"]
mod timed;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The most an `i64` (TOML's integers) holds: overflows any product it enters.
const BIG: &str = "9223372036854775807";

/// Probes for an unsigned count whose zero means "off" or "all".
const COUNT0: &[&str] = &["-1", "nan", "inf", "1.5"];
/// Probes for an unsigned count that must be at least 1.
const COUNT1: &[&str] = &["-1", "0", "nan", "inf"];
/// Probes for a count that must be at least 1 and also not absurdly large.
const COUNT1_BOUNDED: &[&str] = &["-1", "0", "nan", "inf", BIG];
/// Probes for a probability-like value in [0, 1).
const UNIT: &[&str] = &["-1", "nan", "inf", "-inf", "1e300"];
/// Probes for a finite value >= 0.
const NONNEG: &[&str] = &["-1", "nan", "inf", "-inf"];
/// Probes for a positive, finite number of seconds.
const SECONDS: &[&str] = &["-1", "0", "nan", "inf", "-inf", "1e300"];

/// `(dotted key, probes that must be refused)`.
const TABLE: &[(&str, &[&str])] = &[
    ("rollout.batch_prompts", COUNT1_BOUNDED),
    ("rollout.group_size", COUNT1_BOUNDED),
    ("rollout.max_new_tokens", COUNT1_BOUNDED),
    ("rollout.temperature", &["-1", "0", "nan", "inf", "-inf"]),
    ("rollout.top_p", &["-1", "0", "nan", "inf", "1e300"]),
    ("rollout.top_k", COUNT0),
    ("rollout.kv_cache_bytes", COUNT0),
    ("runtime.steps", COUNT1),
    ("runtime.seed", COUNT0),
    ("runtime.max_staleness", COUNT0),
    ("runtime.teacher_sync_interval", COUNT1),
    ("runtime.verifier_workers", COUNT1_BOUNDED),
    ("runtime.verifier_timeout_s", SECONDS),
    ("runtime.max_restarts", &["-1", "nan", "inf", BIG]),
    ("runtime.restart_window_s", SECONDS),
    ("runtime.max_consecutive_skips", COUNT0),
    ("runtime.device_memory_gib", NONNEG),
    ("runtime.collective_timeout_s", SECONDS),
    ("runtime.sampler_ranks", COUNT0),
    ("runtime.cpu_threads", &["-1", "nan", "inf", BIG]),
    ("checkpoint.every_steps", COUNT0),
    ("checkpoint.keep_last", COUNT0),
    ("optim.lr", NONNEG),
    ("optim.beta1", UNIT),
    ("optim.beta2", UNIT),
    ("optim.eps", &["-1", "0", "nan", "inf"]),
    ("optim.weight_decay", NONNEG),
    ("optim.max_grad_norm", NONNEG),
    ("optim.warmup_steps", COUNT0),
    ("optim.total_steps", COUNT0),
    ("optim.min_lr_ratio", &["-1", "nan", "inf", "1e300"]),
    ("optim.micro_batch_size", COUNT0),
    ("optim.max_tokens_per_micro_batch", COUNT0),
    ("optim.logit_chunk_tokens", COUNT0),
    ("algo.lambda0", &["-1", "nan", "inf", "1e300"]),
    ("algo.lambda_warmup", COUNT0),
    ("algo.lambda_decay_steps", COUNT0),
    ("algo.distill_topk", COUNT0),
    ("algo.distill_coef", NONNEG),
    ("algo.eps_w", UNIT),
    ("algo.eps_low", UNIT),
    ("algo.eps_high", NONNEG),
    ("algo.dual_clip_c", &["-1", "0", "nan", "inf"]),
    ("algo.kl_coef", NONNEG),
    ("algo.entropy_coef", &["nan", "inf", "-inf"]),
    ("algo.outcome_ppo_coef", &["-1", "0", "nan", "inf"]),
    ("algo.sdpo_num_candidates", COUNT0),
    ("algo.adaptive_threshold", &["nan", "inf", "-inf"]),
    ("algo.adaptive_patience", COUNT1),
    ("algo.adaptive_factor", &["-1", "0", "nan", "inf", "1e300"]),
    ("algo.adaptive_min_lambda", &["-1", "nan", "inf", "1e300"]),
    ("data.seed", COUNT0),
    ("data.epochs", COUNT0),
    ("data.task.min_operands", &["-1", "0", "nan", "inf", BIG]),
    ("data.task.max_operands", &["-1", "0", "nan", "inf", BIG]),
    ("data.task.max_value", &["-1", "nan", "inf"]),
    ("data.task.num_examples", COUNT1),
    ("data.task.seed", COUNT0),
    ("verifier.math.rel_tol", UNIT),
    ("verifier.command.timeout_ms", COUNT1),
    ("observe.completions_per_step", COUNT0),
    ("validation.every", COUNT0),
    ("validation.num_prompts", COUNT1),
    ("validation.samples", COUNT1),
    ("validation.temperature", NONNEG),
    ("validation.max_new_tokens", COUNT0),
    ("validation.seed", COUNT0),
    ("validation.top_k", COUNT0),
    ("validation.top_p", &["-1", "0", "nan", "inf", "1e300"]),
    ("validation.presence_penalty", &["nan", "inf", "-inf"]),
    ("validation.leakage_ngram", COUNT0),
    ("env.max_turns", COUNT1_BOUNDED),
    ("env.turn_timeout_s", SECONDS),
    ("model.images_per_prompt", &["-1", "nan", "inf", BIG]),
    ("model.image_pixels", COUNT1_BOUNDED),
];

/// Dotted keys of every integer or float leaf of `v`.
fn numeric_keys(prefix: &str, v: &toml::Value, out: &mut BTreeSet<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                numeric_keys(&key, v, out);
            }
        }
        toml::Value::Integer(_) | toml::Value::Float(_) => {
            out.insert(prefix.to_string());
        }
        _ => {}
    }
}

#[test]
fn the_table_covers_every_numeric_key_of_the_default_config() {
    let cfg = rlsd::config::RunConfig::load(None, &[]).unwrap();
    let value = toml::Value::try_from(&cfg).unwrap();
    let mut keys = BTreeSet::new();
    numeric_keys("", &value, &mut keys);
    let table: BTreeSet<String> = TABLE.iter().map(|(k, _)| k.to_string()).collect();
    let missing: Vec<_> = keys.difference(&table).collect();
    assert!(missing.is_empty(), "numeric keys not in TABLE: {missing:?}");
    assert!(keys.len() > 40, "{keys:?}");
}

/// The overrides every probe runs under: one tiny step on the CPU, so a
/// value wrongly accepted ends quickly instead of training.
const BASE: &[&str] = &[
    "runtime.steps=1",
    "rollout.batch_prompts=2",
    "rollout.group_size=2",
    "rollout.max_new_tokens=4",
    "runtime.sampler_device=cpu",
    "runtime.teacher_device=cpu",
    "runtime.optimizer_device=cpu",
];

#[test]
fn every_probe_of_every_key_is_refused_by_the_start_up_checks() {
    let mut failures = Vec::new();
    for (key, probes) in TABLE {
        for probe in *probes {
            let mut sets: Vec<String> = BASE.iter().map(|s| s.to_string()).collect();
            sets.push(format!("{key}={probe}"));
            let result = rlsd::config::RunConfig::load(None, &sets)
                .and_then(|cfg| rlsd::run::preflight::check_run(&cfg, true, true));
            match result {
                Err(e) if e.to_string().contains(key) => {}
                Err(e) => {
                    failures.push(format!("{key} = {probe}: error does not name the key: {e}"))
                }
                Ok(()) => failures.push(format!("{key} = {probe}: accepted")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `rlsd train` of the built-in config into `out` under [`BASE`] and `key=value`.
fn train_with(out: &Path, key: &str, value: &str) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlsd"));
    cmd.args(["train", "--set"])
        .arg(format!("runtime.out_dir={}", out.display()));
    for kv in BASE {
        cmd.args(["--set", kv]);
    }
    cmd.arg("--set")
        .arg(format!("{key}={value}"))
        .env("RLSD_LOG", "error")
        .env("NO_COLOR", "1");
    timed::output_within(&mut cmd, Duration::from_secs(60))
}

/// Through the binary, one probe per key (the table's probes taken in turn,
/// so every kind of bad value is exercised; the test above has them all):
/// one line naming the key, status 2, no panic, no run folder.
#[test]
fn the_binary_refuses_each_key_with_one_line_status_2_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let cases: Vec<(usize, &str, &str)> = TABLE
        .iter()
        .enumerate()
        .map(|(i, (key, probes))| (i, *key, probes[i % probes.len()]))
        .collect();
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for chunk in cases.chunks(cases.len().div_ceil(4)) {
            let (d, failures) = (d.path(), &failures);
            s.spawn(move || {
                for &(i, key, probe) in chunk {
                    let out = d.join(format!("run-{i}"));
                    let o = train_with(&out, key, probe);
                    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
                    let lines = err.lines().count();
                    let ok = o.status.code() == Some(2)
                        && err.contains(key)
                        && lines == 1
                        && !err.contains("panicked")
                        && !out.exists();
                    if !ok {
                        failures.lock().unwrap().push(format!(
                            "{key} = {probe}: status {:?}, {lines} lines, written: {}: {}",
                            o.status.code(),
                            out.exists(),
                            err.lines().take(3).collect::<Vec<_>>().join(" | ")
                        ));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
