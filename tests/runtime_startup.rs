//! Real write failures and start-up refusals (issue 9): a disk that fills up
//! mid-run (a small tmpfs, where this process may mount one) and a file-size
//! limit (`RLIMIT_FSIZE`, which binds root too) both stop `rlsd train`
//! non-zero with the previous complete checkpoint intact; a model folder
//! without `tokenizer.json` and a checkpoint of another model shape are
//! refused at start, naming the path. CPU, the built-in tiny model.

#[path = "common/timed.rs"]
mod timed;
#[path = "common/tiny_run.rs"]
mod tiny_run;

use rlsd::actors::Runtime;
use rlsd::config::RunConfig;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sets(out: &Path, steps: u64, extra: &[&str]) -> Vec<String> {
    let base = tiny_run::tiny_run(out, steps, 16);
    let mut set = tiny_run::with(
        base,
        &[
            "algo.algo=\"rlsd\"",
            "runtime.max_staleness=0",
            "checkpoint.every_steps=2",
            "checkpoint.keep_last=0",
            "observe.tensorboard=false",
        ],
    );
    set.extend(extra.iter().map(|s| s.to_string()));
    set
}

fn config(out: &Path, steps: u64, extra: &[&str]) -> RunConfig {
    RunConfig::load(None, &sets(out, steps, extra)).unwrap()
}

/// `rlsd train` with the test's settings, then `args` (more flags).
fn rlsd_train(out: &Path, steps: u64, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlsd"));
    cmd.arg("train");
    for s in sets(out, steps, &[]) {
        cmd.arg("--set").arg(s);
    }
    cmd.args(args);
    cmd.env("RLSD_LOG", "warn").env("NO_COLOR", "1");
    cmd
}

/// Run `cmd` to its end, failing the test (child killed) after 300 s.
fn run(cmd: &mut Command) -> Output {
    timed::output_within(cmd, std::time::Duration::from_secs(300))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn checkpoint_steps(out: &Path) -> Vec<u64> {
    rlsd::checkpoint::list_checkpoints(&out.join("checkpoints"))
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

fn bytes_under(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        n += if m.is_dir() {
            bytes_under(&e.path())
        } else {
            m.len()
        };
    }
    n
}

/// Size of one checkpoint of the tiny model, from a real 2-step run.
fn checkpoint_bytes() -> u64 {
    let d = tempfile::tempdir().unwrap();
    let o = run(&mut rlsd_train(d.path(), 2, &[]));
    assert!(o.status.success(), "{}", text(&o));
    bytes_under(&d.path().join("checkpoints"))
}

/// After a failed run in `out`: the step-2 checkpoint is the only one, it
/// loads (every checksum holds), and no temporary folder is left behind.
fn assert_previous_checkpoint_intact(out: &Path, o: &Output) {
    assert!(!o.status.success(), "the run must fail: {}", text(o));
    let t = text(o);
    assert!(
        t.contains("checkpoint"),
        "the cause names the checkpoint: {t}"
    );
    assert_eq!(checkpoint_steps(out), vec![2], "{t}");
    let ck = rlsd::checkpoint::checkpoint_dir_name(2);
    rlsd::checkpoint::load_checkpoint(&out.join("checkpoints").join(ck)).unwrap();
}

/// Unmounts on drop, so a failing assertion does not leave the mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_the_run_and_keeps_the_previous_checkpoint() {
    let c = checkpoint_bytes();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    std::fs::create_dir_all(&out).unwrap();
    // Room for the step-2 checkpoint and the logs, not for a second one
    // (the first is kept until a newer one is complete).
    let size_kb = (c + c / 2) / 1024 + 64;
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size_kb}k"), "tmpfs"])
        .arg(&out)
        .output();
    let _guard = match mounted {
        Ok(o) if o.status.success() => Mount(out.clone()),
        other => {
            // Not root, or no mount in this sandbox: the file-size test below
            // covers the same path with a limit any process can set.
            eprintln!("skipped: cannot mount a tmpfs here ({other:?})");
            return;
        }
    };
    let o = run(&mut rlsd_train(&out, 6, &[]));
    let t = text(&o);
    assert!(t.contains("No space left"), "{t}");
    assert_previous_checkpoint_intact(&out, &o);
}

#[test]
fn a_file_size_limit_stops_the_run_and_keeps_the_previous_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path();
    // Steps 1-2 and their checkpoint with no limit.
    let o = run(&mut rlsd_train(out, 2, &[]));
    assert!(o.status.success(), "{}", text(&o));
    // The largest file of that checkpoint; resume under a limit below it.
    let largest = std::fs::read_dir(
        out.join("checkpoints")
            .join(rlsd::checkpoint::checkpoint_dir_name(2)),
    )
    .unwrap()
    .filter_map(|e| e.ok()?.metadata().ok())
    .filter(|m| m.is_file())
    .map(|m| m.len())
    .max()
    .unwrap();
    let limit = largest / 2;
    let mut cmd = rlsd_train(out, 6, &["--resume", "latest"]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Writes past the limit fail with EFBIG instead of killing the process.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = run(&mut cmd);
    let t = text(&o);
    assert!(t.contains("File too large"), "{t}");
    assert_previous_checkpoint_intact(out, &o);
}

#[test]
fn a_model_folder_without_a_tokenizer_is_refused_at_start_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("no-tokenizer");
    std::fs::create_dir_all(&model).unwrap();
    let builtin = RunConfig::default().model.resolved_path();
    for e in std::fs::read_dir(&builtin).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name.to_string_lossy().starts_with("tokenizer") || !e.path().is_file() {
            continue;
        }
        std::fs::copy(e.path(), model.join(name)).unwrap();
    }
    let out = d.path().join("run");
    let cfg = config(&out, 2, &[&format!("model.path=\"{}\"", model.display())]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(Runtime::builder(cfg).run())
        .expect_err("a model without tokenizer.json must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&model.display().to_string()) && msg.contains("tokenizer.json"),
        "{msg}"
    );
    assert!(
        !out.join("metrics.jsonl").exists(),
        "refused before anything trained"
    );
}

#[test]
fn a_checkpoint_of_another_model_shape_is_refused_naming_both_paths() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let o = run(&mut rlsd_train(&out, 2, &[]));
    assert!(o.status.success(), "{}", text(&o));
    // [model] names a copy of the built-in model with one more layer.
    let model = d.path().join("deeper");
    std::fs::create_dir_all(&model).unwrap();
    let builtin = RunConfig::default().model.resolved_path();
    for e in std::fs::read_dir(&builtin).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), model.join(e.file_name())).unwrap();
        }
    }
    let cfg_path = model.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let layers = json["num_hidden_layers"].as_u64().unwrap();
    json["num_hidden_layers"] = serde_json::json!(layers + 1);
    std::fs::write(&cfg_path, serde_json::to_string(&json).unwrap()).unwrap();
    let before = std::fs::read(out.join("metrics.jsonl")).unwrap();

    let mut cmd = rlsd_train(
        &out,
        4,
        &[
            "--set",
            &format!("model.path=\"{}\"", model.display()),
            "--resume",
            "latest",
        ],
    );
    let o = run(&mut cmd);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains(&cfg_path.display().to_string()) && t.contains("num_hidden_layers"),
        "{t}"
    );
    assert!(t.contains("checkpoints"), "names the checkpoint too: {t}");
    assert_eq!(
        std::fs::read(out.join("metrics.jsonl")).unwrap(),
        before,
        "the run folder is untouched"
    );
}
