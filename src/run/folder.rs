//! The run folder (`runtime.out_dir`): one run at a time, no silent mixing.
//!
//! - [`RunLock`]: an exclusive OS file lock (`flock`) on `<out_dir>/.rlsd.lock`,
//!   held for the whole run and released by the kernel on exit or crash, so a
//!   second run or resume into the same folder is refused while one is alive.
//! - [`prepare_fresh`]: a fresh run into a folder that already holds a run
//!   (metrics or checkpoints) is refused, naming `--resume` and `--overwrite`;
//!   with `overwrite` what the old run wrote (and nothing else) is removed first.
//! - [`resolve_resume`]: `latest`, a run folder, a checkpoint root or one
//!   checkpoint folder, to the newest complete checkpoint.

use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};

/// Name of the lock file inside the run folder.
pub const LOCK_FILE: &str = ".rlsd.lock";

/// An exclusive lock on a run folder; unlocked when dropped (or when the
/// process dies, however it dies).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Lock `out_dir` (created if missing), or fail at once if another
    /// process holds it.
    pub fn acquire(out_dir: &Path) -> Result<RunLock> {
        std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
        let path = out_dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::InvalidInput(format!(
                    "{}: another rlsd run is using this run folder (it holds {}); wait for it to end or pick another runtime.out_dir",
                    out_dir.display(),
                    path.display()
                )));
            }
            return Err(Error::io(&path, err));
        }
        Ok(RunLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What a fresh run would clash with in `out_dir`: a non-empty metrics log
/// or any checkpoint folder under `ckpt_root`.
fn existing_run(out_dir: &Path, ckpt_root: &Path) -> Option<String> {
    let metrics = out_dir.join("metrics.jsonl");
    if std::fs::metadata(&metrics).is_ok_and(|m| m.len() > 0) {
        return Some(metrics.display().to_string());
    }
    match crate::checkpoint::list_checkpoints(ckpt_root) {
        Ok(list) if !list.is_empty() => Some(list[list.len() - 1].1.display().to_string()),
        _ => None,
    }
}

/// Files of the run folder a run writes itself (beside `events.out.tfevents.*`
/// and the checkpoint root): the only files `--overwrite` deletes there.
const RUN_FILES: &[&str] = &[
    "metrics.jsonl",
    crate::observe::COMPLETIONS_FILE,
    crate::observe::CONFIG_FILE,
    "reward.svg",
    "reward.png",
    "panels.svg",
    "panels.png",
    crate::observe::report::REPORT_FILE,
];

/// Make `out_dir` ready for a fresh run (not a resume): refuse when it holds
/// an earlier run, unless `overwrite`, which deletes what the earlier run
/// wrote: its files in `out_dir` ([`RUN_FILES`], TensorBoard event files),
/// its final-model folder and its checkpoint folders in `ckpt_root`.
/// Nothing else is touched, and
/// `ckpt_root` must lie strictly inside `out_dir`.
pub fn prepare_fresh(out_dir: &Path, ckpt_root: &Path, overwrite: bool) -> Result<()> {
    let inside = ckpt_root.strip_prefix(out_dir).ok().is_some_and(|rel| {
        rel.components().any(|c| matches!(c, Component::Normal(_)))
            && rel
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    });
    if !inside {
        return Err(Error::config(
            "checkpoint.dir",
            format!(
                "{} is not a folder inside the run folder {}",
                ckpt_root.display(),
                out_dir.display()
            ),
        ));
    }
    let Some(found) = existing_run(out_dir, ckpt_root) else {
        return Ok(());
    };
    if !overwrite {
        return Err(Error::InvalidInput(format!(
            "{} already holds a run ({found}); continue it with `--resume latest`, start over with `--overwrite`, or set another runtime.out_dir",
            out_dir.display()
        )));
    }
    tracing::warn!(dir = %out_dir.display(), "--overwrite: removing the earlier run's files and checkpoints");
    for name in names_in(out_dir)? {
        if RUN_FILES.contains(&name.as_str()) || name.starts_with("events.out.tfevents.") {
            remove_file(&out_dir.join(name))?;
        }
    }
    let final_model = out_dir.join(super::final_model::FINAL_DIR);
    if final_model.is_dir() {
        std::fs::remove_dir_all(&final_model).map_err(|e| Error::io(&final_model, e))?;
    }
    for name in names_in(ckpt_root)? {
        if crate::checkpoint::is_checkpoint_entry(&name) {
            let p = ckpt_root.join(name);
            std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    // The root goes only when nothing but checkpoints was in it.
    let _ = std::fs::remove_dir(ckpt_root);
    Ok(())
}

/// Entry names of `dir` (none when it does not exist).
fn names_in(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// Remove one file; a file already gone is fine.
fn remove_file(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(p, e)),
    }
}

/// The checkpoint folder a `--resume` argument means: `latest` (the newest
/// complete checkpoint of this run's checkpoint root), a checkpoint folder
/// (has `manifest.json`), a checkpoint root, or a run folder (its
/// `checkpoints/`).
pub fn resolve_resume(arg: &Path, ckpt_root: &Path, ckpt_dir_name: &Path) -> Result<PathBuf> {
    let root = if arg == Path::new("latest") {
        ckpt_root.to_path_buf()
    } else if arg.join(crate::checkpoint::MANIFEST_FILE).is_file() {
        return Ok(arg.to_path_buf());
    } else if arg.join(ckpt_dir_name).is_dir() {
        arg.join(ckpt_dir_name)
    } else {
        arg.to_path_buf()
    };
    if !root.exists() && arg != Path::new("latest") {
        return Err(Error::InvalidInput(format!(
            "--resume {}: no such checkpoint or run folder",
            arg.display()
        )));
    }
    crate::checkpoint::latest_checkpoint(&root)?.ok_or_else(|| {
        Error::InvalidInput(format!(
            "--resume {}: no complete checkpoint in {}",
            arg.display(),
            root.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_folder_is_refused_until_the_first_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let a = RunLock::acquire(d.path()).unwrap();
        let err = RunLock::acquire(d.path()).unwrap_err().to_string();
        assert!(err.contains("another rlsd run"), "{err}");
        drop(a);
        RunLock::acquire(d.path()).unwrap();
    }

    #[test]
    fn fresh_run_into_a_used_folder_names_resume_and_overwrite() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("checkpoints");
        prepare_fresh(d.path(), &root, false).unwrap();
        std::fs::write(d.path().join("metrics.jsonl"), "{\"step\":1}\n").unwrap();
        let err = prepare_fresh(d.path(), &root, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--resume") && err.contains("--overwrite"),
            "{err}"
        );
        prepare_fresh(d.path(), &root, true).unwrap();
        assert!(!d.path().join("metrics.jsonl").exists());
        prepare_fresh(d.path(), &root, false).unwrap();
    }

    #[test]
    fn overwrite_removes_only_what_a_run_wrote_inside_its_folder() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("run");
        let root = run.join("checkpoints");
        std::fs::create_dir_all(root.join("step-000010")).unwrap();
        std::fs::write(root.join("step-000010").join("manifest.json"), "{}").unwrap();
        std::fs::create_dir_all(root.join(".tmp-step-000011-7")).unwrap();
        std::fs::write(root.join("notes.txt"), "mine").unwrap();
        std::fs::write(run.join("metrics.jsonl"), "{\"step\":1}\n").unwrap();
        std::fs::write(run.join("events.out.tfevents.1.host"), "x").unwrap();
        std::fs::write(run.join("keep.txt"), "mine").unwrap();
        std::fs::write(d.path().join("beside.txt"), "mine").unwrap();
        prepare_fresh(&run, &root, true).unwrap();
        assert!(!run.join("metrics.jsonl").exists());
        assert!(!run.join("events.out.tfevents.1.host").exists());
        assert!(!root.join("step-000010").exists());
        assert!(!root.join(".tmp-step-000011-7").exists());
        assert!(root.join("notes.txt").is_file());
        assert!(run.join("keep.txt").is_file());
        assert!(d.path().join("beside.txt").is_file());
        // A checkpoint root that is not strictly inside the run folder is refused.
        for bad in [run.clone(), d.path().to_path_buf(), run.join("..")] {
            let err = prepare_fresh(&run, &bad, true).unwrap_err().to_string();
            assert!(err.contains("checkpoint.dir"), "{err}");
        }
        assert!(d.path().join("beside.txt").is_file());
    }
}
