//! Checkpoints: everything needed to continue a run, written atomically.
//!
//! A checkpoint is a directory `<root>/step-000123/` holding
//!
//! - `model/`: the policy in Hugging Face format, written by a closure the
//!   caller supplies (so this module does not depend on the model code);
//! - `optimizer.safetensors`: the optimizer's named tensors (AdamW moments...);
//! - `state.json`: the caller's run state (step, policy version, RNG seeds,
//!   data cursor...);
//! - `config.toml`: the resolved run configuration;
//! - `manifest.json` ([`Manifest`]): format version, step, creation time and
//!   the sha256 of every other file.
//!
//! Writing happens in `<root>/.tmp-step-000123-<pid>/`; every file and
//! directory is fsynced, the manifest is written last, and only then is the
//! directory renamed to `step-000123` (and the root fsynced). A crash at any
//! point therefore leaves either the complete new checkpoint or none: the
//! readers ([`list_checkpoints`], [`latest_checkpoint`]) only see directories
//! named exactly `step-<digits>` that contain a manifest, and
//! [`load_checkpoint`] checks every checksum. One writer per root is assumed:
//! [`save_checkpoint`] clears leftover temporary directories of earlier,
//! crashed writers. See docs/CHECKPOINTS.md.

mod manifest;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::{Error, Result};
use manifest::{ckpt_err, fsync_path, fsync_tree, hash_file, list_files, now_utc};
pub use manifest::{FileEntry, Manifest, FORMAT_VERSION, MANIFEST_FILE};

/// Directory holding the model (Hugging Face format) inside a checkpoint.
pub const MODEL_DIR: &str = "model";
/// Optimizer tensors inside a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Caller run state inside a checkpoint.
pub const STATE_FILE: &str = "state.json";
/// Resolved run configuration inside a checkpoint.
pub const CONFIG_FILE: &str = "config.toml";
/// The teacher replica's weights (optional; the runtime writes it).
pub const TEACHER_FILE: &str = "teacher.safetensors";

const STEP_PREFIX: &str = "step-";
/// Prefixes of directories that are never checkpoints: in-progress writes,
/// checkpoints being replaced, checkpoints being deleted.
const TMP_PREFIX: &str = ".tmp-step-";
const OLD_PREFIX: &str = ".old-step-";
const DEL_PREFIX: &str = ".del-step-";

/// The `[checkpoint]` section of the run config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Root folder; checkpoints go to `<dir>/step-NNNNNN/`.
    pub dir: PathBuf,
    /// Save after every this many steps; 0 saves only at the end of the run
    /// (and on a graceful shutdown).
    pub every_steps: u64,
    /// How many complete checkpoints to keep (oldest deleted first); 0 keeps
    /// all. The newest complete checkpoint is never deleted.
    pub keep_last: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("checkpoints"),
            every_steps: 10,
            keep_last: 3,
        }
    }
}

impl CheckpointConfig {
    /// Check values a TOML file could get wrong (errors name the key).
    ///
    /// `dir` is joined to the run folder and `--overwrite` empties it, so it
    /// must name a folder strictly inside the run folder: not empty, not
    /// absolute, not `.`, and no `..` anywhere.
    pub fn validate(&self) -> Result<()> {
        use std::path::Component;
        let key = "checkpoint.dir";
        if self.dir.as_os_str().is_empty() {
            return Err(Error::config(key, "must not be empty"));
        }
        let mut inside = false;
        for c in self.dir.components() {
            match c {
                Component::Normal(_) => inside = true,
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(Error::config(
                        key,
                        format!(
                            "{:?} leaves the run folder (`..`); use a relative folder inside runtime.out_dir",
                            self.dir
                        ),
                    ))
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(Error::config(
                        key,
                        format!(
                            "{:?} is absolute; use a relative folder inside runtime.out_dir",
                            self.dir
                        ),
                    ))
                }
            }
        }
        if !inside {
            return Err(Error::config(
                key,
                format!(
                    "{:?} is the run folder itself; use a subfolder such as \"checkpoints\"",
                    self.dir
                ),
            ));
        }
        Ok(())
    }

    /// Whether a periodic checkpoint is due after `step` (steps count from 1).
    pub fn is_due(&self, step: u64) -> bool {
        self.every_steps > 0 && step > 0 && step % self.every_steps == 0
    }
}

/// A checkpoint read back and verified by [`load_checkpoint`].
#[derive(Debug)]
pub struct LoadedCheckpoint {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// `<dir>/model`, to hand to the model loader.
    pub model_dir: PathBuf,
    /// Optimizer tensors on CPU, in the order they were saved.
    pub optimizer: Vec<(String, Tensor)>,
    /// The caller run state from `state.json`.
    pub state: serde_json::Value,
    /// The run configuration text from `config.toml`.
    pub config_toml: String,
    /// Step from the manifest.
    pub step: u64,
    /// The verified manifest.
    pub manifest: Manifest,
    /// Teacher weights on CPU (`teacher.safetensors`), when the checkpoint has them.
    pub teacher: Option<Vec<(String, Tensor)>>,
}

impl LoadedCheckpoint {
    /// The named tensors of `rel`, a file the manifest lists (so its
    /// checksum was verified on load), sorted by name.
    pub fn read_tensors(&self, rel: &str) -> Result<Vec<(String, Tensor)>> {
        let path = self.dir.join(rel);
        if !self.manifest.files.contains_key(rel) {
            return Err(ckpt_err(&path, "not listed in manifest.json"));
        }
        let mut t = Tensor::read_safetensors(&path)
            .map_err(|e| ckpt_err(&path, format!("unreadable safetensors: {e}")))?;
        t.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(t)
    }
}

/// Directory name of the checkpoint for `step`: `step-000123`.
pub fn checkpoint_dir_name(step: u64) -> String {
    format!("{STEP_PREFIX}{step:06}")
}

/// Step encoded in a checkpoint directory name (`step-<digits>` exactly).
fn parse_step_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(STEP_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Write a checkpoint into `root` atomically, then keep only the newest
/// `keep_last` (0 = all). Returns the final directory.
///
/// - `step`: the training step the checkpoint is taken after;
/// - `write_model`: writes the model in Hugging Face format into the given
///   (existing, empty) directory;
/// - `optimizer`: optimizer state as named tensors (any device; saved from
///   CPU copies; names must be unique);
/// - `state`: caller run state (step, policy version, RNG seeds, data cursor...);
/// - `config_toml`: the resolved run configuration.
///
/// If the step already has a checkpoint it is replaced. On error the
/// temporary directory is removed and earlier checkpoints are untouched.
pub fn save_checkpoint(
    root: &Path,
    step: u64,
    write_model: &dyn Fn(&Path) -> Result<()>,
    optimizer: &[(String, Tensor)],
    state: &serde_json::Value,
    config_toml: &str,
    keep_last: usize,
) -> Result<PathBuf> {
    save_checkpoint_with_teacher(
        root,
        step,
        write_model,
        optimizer,
        None,
        state,
        config_toml,
        keep_last,
    )
}

/// [`save_checkpoint`] that also stores the teacher replica's weights as
/// `teacher.safetensors` (checksummed like every other file), so a resumed
/// run continues with the same teacher instead of a copy of the policy.
#[allow(clippy::too_many_arguments)] // each argument is one file of the checkpoint
pub fn save_checkpoint_with_teacher(
    root: &Path,
    step: u64,
    write_model: &dyn Fn(&Path) -> Result<()>,
    optimizer: &[(String, Tensor)],
    teacher: Option<&[(String, Tensor)]>,
    state: &serde_json::Value,
    config_toml: &str,
    keep_last: usize,
) -> Result<PathBuf> {
    save_checkpoint_with_extras(
        root,
        step,
        write_model,
        optimizer,
        teacher,
        &[],
        state,
        config_toml,
        keep_last,
    )
}

/// A tensor file a checkpoint carries beside its fixed ones: (path inside
/// the checkpoint, named tensors), such as the runtime's pinned policy and
/// teacher versions (`pinned/...`). Checksummed like every other file; read
/// back with [`LoadedCheckpoint::read_tensors`].
pub type TensorFile = (String, Vec<(String, Tensor)>);

/// The extra tensor files of a checkpoint ([`TensorFile`]).
pub type ExtraTensorFiles = [TensorFile];

/// [`save_checkpoint_with_teacher`] that also writes the `extra` tensor
/// files (paths relative to the checkpoint, inside a subfolder that is not
/// `model/`).
#[allow(clippy::too_many_arguments)] // each argument is one file of the checkpoint
pub fn save_checkpoint_with_extras(
    root: &Path,
    step: u64,
    write_model: &dyn Fn(&Path) -> Result<()>,
    optimizer: &[(String, Tensor)],
    teacher: Option<&[(String, Tensor)]>,
    extra: &ExtraTensorFiles,
    state: &serde_json::Value,
    config_toml: &str,
    keep_last: usize,
) -> Result<PathBuf> {
    for (rel, _) in extra {
        check_extra_path(rel)?;
    }
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    remove_stale(root)?;
    let tmp = root.join(format!("{TMP_PREFIX}{step:06}-{}", std::process::id()));
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let contents = Contents {
        step,
        write_model,
        optimizer,
        teacher,
        extra,
        state,
        config_toml,
    };
    if let Err(e) = write_contents(&tmp, &contents) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let final_dir = root.join(checkpoint_dir_name(step));
    publish(root, &tmp, &final_dir, step)?;
    if let Some((newer, dir)) = list_checkpoints(root)?.pop().filter(|(s, _)| *s > step) {
        tracing::warn!(
            newer = %dir.display(),
            step,
            "a checkpoint of a later step ({newer}) exists in this root; latest_checkpoint will pick it, not this one"
        );
    }
    prune(root, keep_last, Some(&final_dir))?;
    tracing::info!(dir = %final_dir.display(), step, "checkpoint saved");
    Ok(final_dir)
}

/// The arguments of [`save_checkpoint`] that end up in files.
struct Contents<'a> {
    step: u64,
    write_model: &'a dyn Fn(&Path) -> Result<()>,
    optimizer: &'a [(String, Tensor)],
    teacher: Option<&'a [(String, Tensor)]>,
    extra: &'a ExtraTensorFiles,
    state: &'a serde_json::Value,
    config_toml: &'a str,
}

/// An extra file's path must be relative, plain (no `.`, `..` or empty
/// part), inside a subfolder, and clear of the fixed files and `model/`.
fn check_extra_path(rel: &str) -> Result<()> {
    let parts: Vec<&str> = rel.split('/').collect();
    let plain = parts
        .iter()
        .all(|c| !c.is_empty() && *c != "." && *c != ".." && !c.contains('\\'));
    if !plain || parts.len() < 2 || parts[0] == MODEL_DIR {
        return Err(Error::InvalidInput(format!(
            "checkpoint file `{rel}`: extra files go in a subfolder other than `{MODEL_DIR}/`, as a plain relative path"
        )));
    }
    Ok(())
}

/// Write named tensors to `path` as safetensors, from contiguous CPU copies.
fn write_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let cpu = tensors
        .iter()
        .map(|(n, t)| {
            Ok((
                n.clone(),
                t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::write_safetensors(&cpu, path).map_err(|e| ckpt_err(path, e.to_string()))
}

/// Fill the temporary directory: payload files, fsync, then the manifest.
fn write_contents(tmp: &Path, ckpt: &Contents<'_>) -> Result<()> {
    let model_dir = tmp.join(MODEL_DIR);
    std::fs::create_dir(&model_dir).map_err(|e| Error::io(&model_dir, e))?;
    (ckpt.write_model)(&model_dir)?;

    let mut seen = HashSet::new();
    let mut cpu = Vec::with_capacity(ckpt.optimizer.len());
    for (name, t) in ckpt.optimizer {
        if !seen.insert(name.as_str()) {
            return Err(Error::InvalidInput(format!(
                "optimizer tensor name `{name}` appears twice"
            )));
        }
        let t = t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?;
        cpu.push((name.clone(), t));
    }
    let opt_path = tmp.join(OPTIMIZER_FILE);
    Tensor::write_safetensors(&cpu, &opt_path).map_err(|e| ckpt_err(&opt_path, e.to_string()))?;
    if let Some(teacher) = ckpt.teacher {
        write_tensors(&tmp.join(TEACHER_FILE), teacher)?;
    }
    for (rel, tensors) in ckpt.extra {
        let path = tmp.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        write_tensors(&path, tensors)?;
    }

    let state_path = tmp.join(STATE_FILE);
    let state =
        serde_json::to_vec_pretty(ckpt.state).map_err(|e| ckpt_err(&state_path, e.to_string()))?;
    std::fs::write(&state_path, state).map_err(|e| Error::io(&state_path, e))?;
    let cfg_path = tmp.join(CONFIG_FILE);
    std::fs::write(&cfg_path, ckpt.config_toml).map_err(|e| Error::io(&cfg_path, e))?;

    let mut files = BTreeMap::new();
    for rel in list_files(tmp)? {
        files.insert(rel.clone(), hash_file(&tmp.join(&rel))?);
    }
    let (created_unix_ms, created_utc) = now_utc();
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        step: ckpt.step,
        created_unix_ms,
        created_utc,
        optimizer_tensors: ckpt.optimizer.iter().map(|(n, _)| n.clone()).collect(),
        files,
    };
    // Everything the manifest describes is durable before the manifest exists.
    fsync_tree(tmp)?;
    let man_path = tmp.join(MANIFEST_FILE);
    let text =
        serde_json::to_vec_pretty(&manifest).map_err(|e| ckpt_err(&man_path, e.to_string()))?;
    std::fs::write(&man_path, text).map_err(|e| Error::io(&man_path, e))?;
    fsync_path(&man_path)?;
    fsync_path(tmp)
}

/// Rename the finished temporary directory to its final name, moving an
/// existing checkpoint of the same step aside first.
fn publish(root: &Path, tmp: &Path, final_dir: &Path, step: u64) -> Result<()> {
    let old = root.join(format!("{OLD_PREFIX}{step:06}-{}", std::process::id()));
    let replaced = final_dir.exists();
    if replaced {
        std::fs::rename(final_dir, &old).map_err(|e| Error::io(final_dir, e))?;
    }
    std::fs::rename(tmp, final_dir).map_err(|e| Error::io(tmp, e))?;
    fsync_path(root)?;
    if replaced {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

/// Whether `name` is an entry [`save_checkpoint`] or [`prune_checkpoints`]
/// creates in a checkpoint root (a checkpoint `step-<digits>` or one of the
/// temporary `.tmp-step-*`, `.old-step-*`, `.del-step-*` folders): the only
/// entries `--overwrite` may delete there.
pub fn is_checkpoint_entry(name: &str) -> bool {
    parse_step_name(name).is_some()
        || [TMP_PREFIX, OLD_PREFIX, DEL_PREFIX]
            .iter()
            .any(|p| name.starts_with(p))
}

/// Remove directories left by crashed writers or deletions (`.tmp-step-*`,
/// `.old-step-*`, `.del-step-*`).
fn remove_stale(root: &Path) -> Result<()> {
    let entries = std::fs::read_dir(root).map_err(|e| Error::io(root, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if [TMP_PREFIX, OLD_PREFIX, DEL_PREFIX]
            .iter()
            .any(|p| name.starts_with(p))
        {
            let path = entry.path();
            tracing::warn!(dir = %path.display(), "removing leftover of an interrupted checkpoint write");
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Complete checkpoints in `root` (named `step-<digits>`, with a manifest),
/// sorted by step. A missing root gives an empty list.
pub fn list_checkpoints(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(root, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(step) = parse_step_name(&name) else {
            continue;
        };
        let path = entry.path();
        if path.is_dir() && path.join(MANIFEST_FILE).is_file() {
            out.push((step, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The newest complete checkpoint in `root` (highest step), ignoring
/// temporary and partial directories. Checksums are not verified here;
/// [`load_checkpoint`] does that.
pub fn latest_checkpoint(root: &Path) -> Result<Option<PathBuf>> {
    Ok(list_checkpoints(root)?.pop().map(|(_, p)| p))
}

/// The newest checkpoint in `root` that loads and verifies, skipping (with a
/// warning) newer ones that are corrupt.
pub fn load_latest_valid(root: &Path) -> Result<Option<LoadedCheckpoint>> {
    for (_, dir) in list_checkpoints(root)?.into_iter().rev() {
        match load_checkpoint(&dir) {
            Ok(c) => return Ok(Some(c)),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "skipping unusable checkpoint")
            }
        }
    }
    Ok(None)
}

/// Delete all but the newest `keep_last` complete checkpoints (0 keeps all;
/// the newest is always kept). Returns the deleted directories.
/// [`save_checkpoint`] prunes after writing and never deletes the
/// checkpoint it just wrote, even if later steps exist.
pub fn prune_checkpoints(root: &Path, keep_last: usize) -> Result<Vec<PathBuf>> {
    prune(root, keep_last, None)
}

/// [`prune_checkpoints`], never deleting `protect` (the checkpoint just
/// written, even when later steps exist in the root).
fn prune(root: &Path, keep_last: usize, protect: Option<&Path>) -> Result<Vec<PathBuf>> {
    if keep_last == 0 {
        return Ok(Vec::new());
    }
    let all = list_checkpoints(root)?;
    let n_delete = all.len().saturating_sub(keep_last);
    let mut removed = Vec::new();
    for (step, dir) in all.into_iter().take(n_delete) {
        if protect.is_some_and(|p| p == dir) {
            continue;
        }
        // Rename first so a half-deleted directory never looks like a checkpoint.
        let doomed = root.join(format!("{DEL_PREFIX}{step:06}-{}", std::process::id()));
        std::fs::rename(&dir, &doomed).map_err(|e| Error::io(&dir, e))?;
        std::fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, e))?;
        removed.push(dir);
    }
    if !removed.is_empty() {
        fsync_path(root)?;
    }
    Ok(removed)
}

/// Read and check a checkpoint's manifest: every listed file exists with the
/// recorded size and sha256, and the required files are listed. Errors name
/// the file at fault.
pub fn verify_checkpoint(dir: &Path) -> Result<Manifest> {
    let man_path = dir.join(MANIFEST_FILE);
    if !man_path.is_file() {
        return Err(ckpt_err(
            &man_path,
            "missing: not a complete checkpoint (interrupted write or wrong folder)",
        ));
    }
    let text = std::fs::read(&man_path).map_err(|e| Error::io(&man_path, e))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| ckpt_err(&man_path, format!("bad JSON: {e}")))?;
    if manifest.format_version != FORMAT_VERSION {
        return Err(ckpt_err(
            &man_path,
            format!(
                "format_version {} is not supported (this build reads {FORMAT_VERSION})",
                manifest.format_version
            ),
        ));
    }
    for required in [OPTIMIZER_FILE, STATE_FILE, CONFIG_FILE] {
        if !manifest.files.contains_key(required) {
            return Err(ckpt_err(&man_path, format!("does not list `{required}`")));
        }
    }
    for (rel, want) in &manifest.files {
        if rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(ckpt_err(&man_path, format!("bad file path `{rel}`")));
        }
        let path = dir.join(rel);
        if !path.is_file() {
            return Err(ckpt_err(&path, "missing (listed in manifest.json)"));
        }
        let got = hash_file(&path)?;
        if got.bytes != want.bytes {
            return Err(ckpt_err(
                &path,
                format!(
                    "size mismatch: manifest says {} bytes, file has {}",
                    want.bytes, got.bytes
                ),
            ));
        }
        if got.sha256 != want.sha256 {
            return Err(ckpt_err(
                &path,
                format!(
                    "sha256 mismatch: manifest says {}, file has {}",
                    want.sha256, got.sha256
                ),
            ));
        }
    }
    Ok(manifest)
}

/// Load a checkpoint directory after [`verify_checkpoint`]. Optimizer
/// tensors come back on CPU in their saved order.
pub fn load_checkpoint(dir: &Path) -> Result<LoadedCheckpoint> {
    let manifest = verify_checkpoint(dir)?;

    let opt_path = dir.join(OPTIMIZER_FILE);
    let mut by_name: BTreeMap<String, Tensor> = Tensor::read_safetensors(&opt_path)
        .map_err(|e| ckpt_err(&opt_path, format!("unreadable safetensors: {e}")))?
        .into_iter()
        .collect();
    let mut optimizer = Vec::with_capacity(manifest.optimizer_tensors.len());
    for name in &manifest.optimizer_tensors {
        let t = by_name.remove(name).ok_or_else(|| {
            ckpt_err(
                &opt_path,
                format!("tensor `{name}` listed in manifest.json is missing"),
            )
        })?;
        optimizer.push((name.clone(), t));
    }
    if let Some(extra) = by_name.keys().next() {
        return Err(ckpt_err(
            &opt_path,
            format!("tensor `{extra}` is not listed in manifest.json"),
        ));
    }

    let state_path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let state = serde_json::from_slice(&bytes)
        .map_err(|e| ckpt_err(&state_path, format!("bad JSON: {e}")))?;
    let cfg_path = dir.join(CONFIG_FILE);
    let config_toml = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let teacher = if manifest.files.contains_key(TEACHER_FILE) {
        let path = dir.join(TEACHER_FILE);
        let mut t = Tensor::read_safetensors(&path)
            .map_err(|e| ckpt_err(&path, format!("unreadable safetensors: {e}")))?;
        t.sort_by(|a, b| a.0.cmp(&b.0));
        Some(t)
    } else {
        None
    };

    Ok(LoadedCheckpoint {
        teacher,
        dir: dir.to_path_buf(),
        model_dir: dir.join(MODEL_DIR),
        optimizer,
        state,
        config_toml,
        step: manifest.step,
        manifest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_parse_exactly() {
        assert_eq!(checkpoint_dir_name(123), "step-000123");
        assert_eq!(checkpoint_dir_name(12_345_678), "step-12345678");
        assert_eq!(parse_step_name("step-000123"), Some(123));
        assert_eq!(parse_step_name("step-"), None);
        assert_eq!(parse_step_name("step-12a"), None);
        assert_eq!(parse_step_name(".tmp-step-000123-7"), None);
        assert_eq!(parse_step_name("step-000123.bak"), None);
    }

    #[test]
    fn config_defaults_and_unknown_keys() {
        let c: CheckpointConfig = toml::from_str("keep_last = 5").unwrap();
        assert_eq!(c.keep_last, 5);
        assert_eq!(c.every_steps, CheckpointConfig::default().every_steps);
        let err = toml::from_str::<CheckpointConfig>("keep_lats = 5").unwrap_err();
        assert!(err.to_string().contains("keep_lats"), "{err}");
        let c = CheckpointConfig {
            every_steps: 5,
            ..Default::default()
        };
        assert!(!c.is_due(0) && !c.is_due(4) && c.is_due(5) && c.is_due(10));
        let never = CheckpointConfig {
            every_steps: 0,
            ..Default::default()
        };
        assert!(!never.is_due(10));
    }
}
