//! The built-in task's base models, carried inside the binary.
//!
//! Two models are embedded: `builtin` ([`BASE`], `assets/tiny-arith`, the
//! built-in task's base) and `builtin-agent` ([`AGENT`],
//! `assets/tiny-arith-agent`, the built-in agent task's base, which calls
//! the calculator tool). Each is a [`BuiltinModel`]; the free functions
//! below are [`BASE`]'s. What follows says it for `builtin`; `builtin-agent`
//! is the same with its own folder names.
//!
//! The files of `assets/tiny-arith` that loading needs are embedded with
//! `include_bytes!` ([`FILES`], about 420 KiB), so a copied or
//! `cargo install`ed binary runs `rlsd train` with no argument anywhere. On
//! first use they are written to a per-user cache folder,
//! `$XDG_CACHE_HOME/rlsd/builtin-<hash>/` (else `~/.cache/rlsd/...`), where
//! `<hash>` is a SHA-256 prefix of the embedded files: a build with another
//! model gets another folder. The folder is written under a temporary name
//! and renamed into place, so a folder under the final name is complete;
//! it is still checked (every file present with the embedded bytes) and
//! rewritten when it is not.
//!
//! Only when the cache cannot be written is the source checkout's
//! `assets/tiny-arith` used, and only while it still exists and holds the
//! same bytes. The test hook `RLSD_NO_SOURCE_FALLBACK=1` forbids that
//! fallback (tests/relocatable.rs sets it to prove a relocated binary never
//! reads the checkout).

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One embedded file: its name in the model folder and its bytes.
#[derive(Debug)]
pub struct EmbeddedFile {
    /// File name inside the model folder.
    pub name: &'static str,
    /// Its content, as committed in `assets/tiny-arith`.
    pub bytes: &'static [u8],
}

macro_rules! embed {
    ($dir:literal, $name:literal) => {
        EmbeddedFile {
            name: $name,
            bytes: include_bytes!(concat!("../../assets/", $dir, "/", $name)),
        }
    };
}

/// The model folder's files the loader reads, from `assets/<dir>`.
macro_rules! model_files {
    ($dir:literal) => {
        &[
            embed!($dir, "config.json"),
            embed!($dir, "generation_config.json"),
            embed!($dir, "model.safetensors"),
            embed!($dir, "tokenizer.json"),
            embed!($dir, "tokenizer_config.json"),
        ]
    };
}

/// The model folder's files the loader reads (weights, shape, tokenizer,
/// generation defaults); `pretrain_report.json` is documentation and stays
/// in the checkout.
pub static FILES: &[EmbeddedFile] = model_files!("tiny-arith");

/// One model carried in the binary.
#[derive(Debug)]
pub struct BuiltinModel {
    /// The `model.path` that names it.
    pub key: &'static str,
    /// Its folder in the source checkout, relative to the root.
    pub source: &'static str,
    /// Its files.
    pub files: &'static [EmbeddedFile],
    /// [`BuiltinModel::content_hash`], computed once.
    hash: OnceLock<String>,
    /// [`BuiltinModel::dir`], located once per process.
    located: OnceLock<std::result::Result<PathBuf, String>>,
}

/// The built-in task's base model (`model.path = "builtin"`).
pub static BASE: BuiltinModel = BuiltinModel {
    key: "builtin",
    source: "assets/tiny-arith",
    files: FILES,
    hash: OnceLock::new(),
    located: OnceLock::new(),
};

/// The built-in agent task's base model (`model.path = "builtin-agent"`,
/// configs/agent.toml), made by `rlsd pretrain --config
/// configs/pretrain-agent.toml`.
pub static AGENT: BuiltinModel = BuiltinModel {
    key: "builtin-agent",
    source: "assets/tiny-arith-agent",
    files: model_files!("tiny-arith-agent"),
    hash: OnceLock::new(),
    located: OnceLock::new(),
};

/// The embedded model a `model.path` names (`builtin`, `builtin-agent`).
pub fn by_key(path: &str) -> Option<&'static BuiltinModel> {
    [&BASE, &AGENT].into_iter().find(|m| m.key == path)
}

impl BuiltinModel {
    /// Total size of the embedded files in bytes.
    pub fn embedded_bytes(&self) -> usize {
        self.files.iter().map(|f| f.bytes.len()).sum()
    }

    /// First 16 hex digits of the SHA-256 over every embedded file's name,
    /// length and bytes: the cache folder's suffix.
    pub fn content_hash(&self) -> &str {
        self.hash.get_or_init(|| {
            let mut h = Sha256::new();
            for f in self.files {
                h.update(f.name.as_bytes());
                h.update([0u8]);
                h.update((f.bytes.len() as u64).to_le_bytes());
                h.update(f.bytes);
            }
            let digest = h.finalize();
            digest[..8].iter().map(|b| format!("{b:02x}")).collect()
        })
    }

    /// The folder the embedded model is written to under `root`
    /// (`<key>-<hash>`).
    pub fn cache_dir_in(&self, root: &Path) -> PathBuf {
        root.join(format!("{}-{}", self.key, self.content_hash()))
    }

    /// Whether `dir` holds every embedded file with exactly the embedded bytes.
    pub fn matches_embedded(&self, dir: &Path) -> bool {
        self.files.iter().all(|f| {
            let p = dir.join(f.name);
            // Size first: a mismatch costs no read.
            std::fs::metadata(&p).is_ok_and(|m| m.len() == f.bytes.len() as u64)
                && std::fs::read(&p).is_ok_and(|b| b == f.bytes)
        })
    }

    /// The model's folder in the per-user cache (written on first use, see
    /// [`materialise_in`]), else the source checkout's copy (see
    /// [`locate`]); located once per process.
    pub fn dir(&self, source_root: &Path) -> Result<PathBuf> {
        self.located
            .get_or_init(|| {
                self.locate(&cache_root(), &source_root.join(self.source))
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|msg| Error::config("model.path", msg))
    }
}

/// Environment variable that, set to a non-empty value other than `0`,
/// forbids falling back to the source checkout (a test hook).
pub const NO_SOURCE_FALLBACK_ENV: &str = "RLSD_NO_SOURCE_FALLBACK";

/// Total size of the embedded files in bytes.
pub fn embedded_bytes() -> usize {
    BASE.embedded_bytes()
}

/// First 16 hex digits of the SHA-256 over every embedded file's name,
/// length and bytes: the cache folder's suffix.
pub fn content_hash() -> &'static str {
    BASE.content_hash()
}

/// The per-user cache root: `$XDG_CACHE_HOME/rlsd`, else `$HOME/.cache/rlsd`,
/// else `rlsd-cache` under the system's temporary folder.
pub fn cache_root() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(x) = var("XDG_CACHE_HOME") {
        x.join("rlsd")
    } else if let Some(h) = var("HOME") {
        h.join(".cache").join("rlsd")
    } else {
        std::env::temp_dir().join("rlsd-cache")
    }
}

/// The folder the embedded model is written to under `root`.
pub fn cache_dir_in(root: &Path) -> PathBuf {
    BASE.cache_dir_in(root)
}

/// Whether `dir` holds every embedded file with exactly the embedded bytes.
pub fn matches_embedded(dir: &Path) -> bool {
    BASE.matches_embedded(dir)
}

/// Write the embedded model into `cache_dir_in(root)` unless a complete copy
/// is already there, and return that folder. Written into a temporary
/// sibling folder and renamed into place, so concurrent callers (parallel
/// tests, two runs) never see a half-written folder; an incomplete or
/// altered folder under the final name is replaced.
pub fn materialise_in(root: &Path) -> Result<PathBuf> {
    BASE.materialise_in(root)
}

impl BuiltinModel {
    /// [`materialise_in`] for this model.
    pub fn materialise_in(&self, root: &Path) -> Result<PathBuf> {
        let dir = self.cache_dir_in(root);
        if self.matches_embedded(&dir) {
            return Ok(dir);
        }
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let tmp = TempFolder::create_in(root)?;
        for f in self.files {
            let p = tmp.0.join(f.name);
            std::fs::write(&p, f.bytes).map_err(|e| Error::io(&p, e))?;
        }
        // Make the files durable before the rename publishes them.
        for f in self.files {
            let p = tmp.0.join(f.name);
            std::fs::File::open(&p)
                .and_then(|h| h.sync_all())
                .map_err(|e| Error::io(&p, e))?;
        }
        if dir.exists() && !self.matches_embedded(&dir) {
            // An incomplete or altered copy (checked again: another process may
            // have published a good one meanwhile): move it aside, then drop it.
            let stale = TempFolder::name_in(root, "stale");
            if std::fs::rename(&dir, &stale).is_ok() {
                let _ = std::fs::remove_dir_all(&stale);
            }
        }
        match std::fs::rename(&tmp.0, &dir) {
            Ok(()) => Ok(dir),
            // Another process published a complete copy first (the rename of a
            // folder onto a non-empty one fails); `tmp` is removed on drop.
            Err(_) if self.matches_embedded(&dir) => Ok(dir),
            Err(e) => Err(Error::io(&dir, e)),
        }
    }

    /// [`locate`] for this model.
    pub fn locate(&self, cache_root: &Path, source_model_dir: &Path) -> Result<PathBuf> {
        match self.materialise_in(cache_root) {
            Ok(dir) => Ok(dir),
            Err(err) => {
                if !source_fallback_forbidden() && self.matches_embedded(source_model_dir) {
                    Ok(source_model_dir.to_path_buf())
                } else {
                    Err(Error::Model {
                        path: self.cache_dir_in(cache_root),
                        msg: format!(
                            "cannot write the built-in model here ({err}); set XDG_CACHE_HOME \
                             to a writable folder"
                        ),
                    })
                }
            }
        }
    }
}

/// A uniquely named hidden folder beside the cache folder, removed on drop
/// unless it was renamed away.
struct TempFolder(PathBuf);

impl TempFolder {
    /// A name no other process or thread uses: pid, a per-process counter
    /// and the clock.
    fn name_in(root: &Path, what: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        root.join(format!(
            ".builtin-{what}-{}-{n}-{nanos}",
            std::process::id()
        ))
    }

    fn create_in(root: &Path) -> Result<Self> {
        let path = Self::name_in(root, "tmp");
        std::fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Self(path))
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The built-in model's folder: the per-user cache copy (written on first
/// use), else the source checkout's `assets/tiny-arith` when it still holds
/// the same files and [`NO_SOURCE_FALLBACK_ENV`] does not forbid it.
pub fn locate(cache_root: &Path, source_model_dir: &Path) -> Result<PathBuf> {
    BASE.locate(cache_root, source_model_dir)
}

/// Whether the test hook [`NO_SOURCE_FALLBACK_ENV`] is set.
pub fn source_fallback_forbidden() -> bool {
    std::env::var_os(NO_SOURCE_FALLBACK_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeds_the_committed_model_files() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tiny-arith");
        for f in FILES {
            let on_disk = std::fs::read(src.join(f.name)).unwrap();
            assert_eq!(on_disk, f.bytes, "{}", f.name);
        }
        assert!(matches_embedded(&src));
        assert_eq!(content_hash().len(), 16);
        assert!(embedded_bytes() > 400_000, "{}", embedded_bytes());
    }

    #[test]
    fn embeds_the_committed_agent_model_files() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(AGENT.source);
        for f in AGENT.files {
            let on_disk = std::fs::read(src.join(f.name)).unwrap();
            assert_eq!(on_disk, f.bytes, "{}", f.name);
        }
        assert!(AGENT.matches_embedded(&src));
        assert!(!BASE.matches_embedded(&src));
        assert_ne!(AGENT.content_hash(), BASE.content_hash());
        assert_eq!(
            by_key("builtin-agent").map(|m| m.key),
            Some("builtin-agent")
        );
        assert_eq!(by_key("builtin").map(|m| m.key), Some("builtin"));
        assert!(by_key("assets/tiny-arith").is_none());
        let root = tempfile::tempdir().unwrap();
        let dir = AGENT.materialise_in(root.path()).unwrap();
        assert!(dir.ends_with(format!("builtin-agent-{}", AGENT.content_hash())));
        assert!(AGENT.matches_embedded(&dir));
    }

    #[test]
    fn materialises_once_and_reuses_a_complete_copy() {
        let root = tempfile::tempdir().unwrap();
        let dir = materialise_in(root.path()).unwrap();
        assert_eq!(dir, cache_dir_in(root.path()));
        assert!(matches_embedded(&dir));
        let before = std::fs::metadata(dir.join("model.safetensors"))
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(materialise_in(root.path()).unwrap(), dir);
        let after = std::fs::metadata(dir.join("model.safetensors"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            before, after,
            "a complete copy must be reused, not rewritten"
        );
        // Nothing but the model folder is left behind.
        let names: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn replaces_an_incomplete_or_altered_copy() {
        let root = tempfile::tempdir().unwrap();
        let dir = materialise_in(root.path()).unwrap();
        std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
        assert!(!matches_embedded(&dir));
        assert_eq!(materialise_in(root.path()).unwrap(), dir);
        assert!(matches_embedded(&dir));
        // Same size, other bytes.
        let p = dir.join("config.json");
        let mut b = std::fs::read(&p).unwrap();
        b[0] ^= 1;
        std::fs::write(&p, b).unwrap();
        assert!(!matches_embedded(&dir));
        materialise_in(root.path()).unwrap();
        assert!(matches_embedded(&dir));
    }

    #[test]
    fn parallel_callers_all_get_a_complete_copy() {
        let root = tempfile::tempdir().unwrap();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let r = root.path().to_path_buf();
                std::thread::spawn(move || materialise_in(&r).unwrap())
            })
            .collect();
        for h in handles {
            assert!(matches_embedded(&h.join().unwrap()));
        }
        let names: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn unwritable_cache_falls_back_only_to_a_matching_source() {
        let tmp = tempfile::tempdir().unwrap();
        // A file where the cache root's parent folder should be: not writable.
        let blocker = tmp.path().join("blocker");
        std::fs::write(&blocker, b"x").unwrap();
        let root = blocker.join("rlsd");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tiny-arith");
        if !source_fallback_forbidden() {
            assert_eq!(locate(&root, &src).unwrap(), src);
        }
        // A source folder with other bytes is never used.
        let other = tmp.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let err = locate(&root, &other).unwrap_err().to_string();
        assert!(err.contains("XDG_CACHE_HOME"), "{err}");
        assert!(err.contains("builtin-"), "{err}");
    }
}
