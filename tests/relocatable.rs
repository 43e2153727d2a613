//! A copied binary runs the zero-argument built-in run with no source checkout:
//! the tiny model is embedded (src/config/builtin_model.rs) and written to
//! the per-user cache on first use.
//!
//! The binary is copied into an empty folder and run from there, with HOME
//! and XDG_CACHE_HOME in another temporary folder. The checkout cannot be
//! hidden from the process entirely, so `RLSD_SOURCE_DIR` points at a folder
//! that does not exist and the test hook `RLSD_NO_SOURCE_FALLBACK=1` forbids
//! the code path that would read it.

#[path = "common/timed.rs"]
mod timed;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Generous: one step of the built-in run takes a few seconds.
const LIMIT: Duration = Duration::from_secs(300);

/// The checkout this test was built from; no output may name it.
const SOURCE: &str = env!("CARGO_MANIFEST_DIR");

/// Held by each test for its whole length: a child forked by one test
/// thread can inherit the write handle of a binary another thread is still
/// copying, and executing that copy then fails with "Text file busy".
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A copy of the binary alone in `<tmp>/bin`, plus the folders it runs with.
struct Relocated {
    _serial: std::sync::MutexGuard<'static, ()>,
    _tmp: tempfile::TempDir,
    bin: PathBuf,
    cwd: PathBuf,
    home: PathBuf,
    cache: PathBuf,
}

impl Relocated {
    fn new() -> Self {
        let serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bin");
        let home = tmp.path().join("home");
        let cache = home.join("xdg-cache");
        let cwd = tmp.path().join("empty");
        for d in [&dir, &home, &cwd] {
            std::fs::create_dir_all(d).unwrap();
        }
        let bin = dir.join("rlsd");
        std::fs::copy(env!("CARGO_BIN_EXE_rlsd"), &bin).unwrap();
        Self {
            bin,
            cwd,
            home,
            cache,
            _serial: serial,
            _tmp: tmp,
        }
    }

    /// Run the copy from the empty folder with `cache` as XDG_CACHE_HOME.
    fn run_with_cache(&self, cache: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .current_dir(&self.cwd)
            .env("HOME", &self.home)
            .env("XDG_CACHE_HOME", cache)
            .env("RLSD_SOURCE_DIR", self.home.join("no-checkout-here"))
            .env("RLSD_NO_SOURCE_FALLBACK", "1")
            .env_remove("CARGO_MANIFEST_DIR")
            .env_remove("RUST_LOG");
        timed::output_within(&mut cmd, LIMIT)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with_cache(&self.cache, args)
    }
}

/// stdout and stderr together, for messages.
fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn copied_binary_trains_the_builtin_run_without_the_checkout() {
    let r = Relocated::new();

    let show = r.run(&["config", "show"]);
    let shown = text(&show);
    assert!(show.status.success(), "config show failed:\n{shown}");
    assert!(shown.contains("path = \"builtin\""), "{shown}");
    assert!(
        !shown.contains(SOURCE),
        "config show names the checkout:\n{shown}"
    );

    let out_dir = r.home.join("run");
    let out_arg = format!("runtime.out_dir={}", out_dir.display());
    let train = r.run(&["train", "--set", "runtime.steps=1", "--set", &out_arg]);
    let said = text(&train);
    assert!(train.status.success(), "train failed:\n{said}");
    assert!(!said.contains(SOURCE), "train names the checkout:\n{said}");

    let metrics = std::fs::read_to_string(out_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 1, "{metrics}");
    for f in files_under(&out_dir) {
        let bytes = std::fs::read(&f).unwrap();
        let hit = bytes.windows(SOURCE.len()).any(|w| w == SOURCE.as_bytes());
        assert!(!hit, "{} names the checkout {SOURCE}", f.display());
    }

    // The model was written to the per-user cache, complete, in one folder.
    let root = r.cache.join("rlsd");
    let dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert_eq!(dirs[0], rlsd::config::builtin_model::cache_dir_in(&root));
    assert!(rlsd::config::builtin_model::matches_embedded(&dirs[0]));
}

#[test]
fn unwritable_cache_without_fallback_is_a_clear_error() {
    let r = Relocated::new();
    // A file where the cache folder should be.
    let blocker = r.home.join("not-a-folder");
    std::fs::write(&blocker, b"x").unwrap();
    let out_arg = format!("runtime.out_dir={}", r.home.join("run").display());
    let train = r.run_with_cache(
        &blocker,
        &["train", "--set", "runtime.steps=1", "--set", &out_arg],
    );
    let said = text(&train);
    assert!(!train.status.success(), "train succeeded:\n{said}");
    assert!(said.contains("XDG_CACHE_HOME"), "{said}");
    assert!(said.contains("model.path"), "{said}");
    assert!(!said.contains(SOURCE), "names the checkout:\n{said}");
}
