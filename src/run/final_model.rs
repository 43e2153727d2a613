//! The final model of a run: `<out_dir>/final/`, a Hugging Face folder
//! (`config.json`, `model.safetensors`, tokenizer files, and peft's
//! `adapter_config.json` / `adapter_model.safetensors` when the run trained
//! LoRA adapters) holding the policy of the run's last checkpoint.
//!
//! It lives beside the checkpoint root, not in it, so `checkpoint.keep_last`
//! never prunes it. It is written atomically: the files are copied (and
//! synced) into a staging folder that is renamed to `final` only when
//! complete; an earlier `final` (a resumed run's) is moved aside first and
//! removed after the rename, so a crash leaves either the old folder or the
//! new one, never a half-written `final`.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Name of the final-model folder inside the run folder.
pub const FINAL_DIR: &str = "final";

/// Copy the model of `checkpoint` (a checkpoint folder: its `model/`) into
/// `<out_dir>/final`, replacing an earlier one; returns the folder.
pub fn write_final_model(out_dir: &Path, checkpoint: &Path) -> Result<PathBuf> {
    let model = checkpoint.join(crate::checkpoint::MODEL_DIR);
    let target = out_dir.join(FINAL_DIR);
    if checkpoint.starts_with(&target) {
        return Err(Error::config(
            "checkpoint.dir",
            format!(
                "{} is inside the final-model folder {}; name the checkpoint folder otherwise",
                checkpoint.display(),
                target.display()
            ),
        ));
    }
    let pid = std::process::id();
    let staging = out_dir.join(format!(".{FINAL_DIR}.tmp-{pid}"));
    let aside = out_dir.join(format!(".{FINAL_DIR}.old-{pid}"));
    remove_dir_if_present(&staging)?;
    if let Err(e) = copy_files(&model, &staging) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if target.exists() {
        remove_dir_if_present(&aside)?;
        std::fs::rename(&target, &aside).map_err(|e| Error::io(&target, e))?;
    }
    std::fs::rename(&staging, &target).map_err(|e| Error::io(&target, e))?;
    remove_dir_if_present(&aside)?;
    sync_dir(out_dir);
    Ok(target)
}

/// Copy every file of `from` (recursively) into the new folder `to`, each
/// synced to disk.
fn copy_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    let entries = std::fs::read_dir(from).map_err(|e| Error::io(from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let kind = entry.file_type().map_err(|e| Error::io(&src, e))?;
        if kind.is_dir() {
            copy_files(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| Error::io(&dst, e))?;
            std::fs::File::open(&dst)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&dst, e))?;
        }
    }
    sync_dir(to);
    Ok(())
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Best effort: make a folder's entries (renames) durable.
fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_replaces_an_earlier_one_and_leaves_no_staging() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path();
        let ck = |name: &str, body: &str| {
            let model = run.join(name).join(crate::checkpoint::MODEL_DIR);
            std::fs::create_dir_all(&model).unwrap();
            std::fs::write(model.join("config.json"), body).unwrap();
            run.join(name)
        };
        let first = write_final_model(run, &ck("step-1", "one")).unwrap();
        assert_eq!(first, run.join(FINAL_DIR));
        std::fs::write(first.join("stale.txt"), "x").unwrap();
        write_final_model(run, &ck("step-2", "two")).unwrap();
        let read = |f: &str| std::fs::read_to_string(run.join(FINAL_DIR).join(f));
        assert_eq!(read("config.json").unwrap(), "two");
        assert!(
            read("stale.txt").is_err(),
            "the old folder is replaced whole"
        );
        let names: Vec<String> = std::fs::read_dir(run)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
        // A checkpoint without a model folder is an error naming it, and the
        // final folder is kept.
        let err = write_final_model(run, &run.join("nowhere")).unwrap_err();
        assert!(err.to_string().contains("nowhere"), "{err}");
        assert_eq!(read("config.json").unwrap(), "two");
    }
}
