//! The checkpoint manifest: format version, step, creation time and the
//! sha256 of every file, plus the small file-system helpers (hashing,
//! fsync) the writer and the loader share.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Version of the on-disk layout; bumped when a loader could misread a
/// checkpoint written by an older writer.
pub const FORMAT_VERSION: u32 = 1;

/// File name of the manifest inside a checkpoint directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// `manifest.json`: what a checkpoint holds and how to check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Layout version ([`FORMAT_VERSION`] when written by this crate).
    pub format_version: u32,
    /// Training step the checkpoint was taken after.
    pub step: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Creation time as `YYYY-MM-DDTHH:MM:SSZ`, for people.
    pub created_utc: String,
    /// Names of the optimizer tensors in the order the caller gave them
    /// (safetensors files do not keep an order).
    pub optimizer_tensors: Vec<String>,
    /// Every file of the checkpoint except the manifest, keyed by its path
    /// relative to the checkpoint directory with `/` separators.
    pub files: BTreeMap<String, FileEntry>,
}

/// Size and checksum of one file listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Lower-case hex sha256 of the file's bytes.
    pub sha256: String,
    /// File length in bytes.
    pub bytes: u64,
}

/// A checkpoint error naming the file at fault.
pub(crate) fn ckpt_err(path: impl Into<PathBuf>, msg: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.into(),
        msg: msg.into(),
    }
}

/// sha256 (hex) and length of a file, streamed in 1 MiB chunks.
pub(crate) fn hash_file(path: &Path) -> Result<FileEntry> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    let digest = hasher.finalize();
    let sha256 = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(FileEntry { sha256, bytes })
}

/// All regular files under `dir`, as paths relative to `dir` with `/`
/// separators, sorted. Anything that is neither a file nor a directory
/// (a socket, a dangling link) is an error naming it.
pub(crate) fn list_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        if meta.is_dir() {
            walk(&path, &rel, out)?;
        } else if meta.is_file() {
            out.push(rel);
        } else {
            return Err(ckpt_err(path, "neither a regular file nor a directory"));
        }
    }
    Ok(())
}

/// fsync a file or a directory (Linux allows fsync on a read-only handle).
pub(crate) fn fsync_path(path: &Path) -> Result<()> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

/// fsync every file and directory under `dir`, then `dir` itself.
pub(crate) fn fsync_tree(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        if meta.is_dir() {
            fsync_tree(&path)?;
        } else {
            fsync_path(&path)?;
        }
    }
    fsync_path(dir)
}

/// Milliseconds since the Unix epoch and the same instant as
/// `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn now_utc() -> (u64, String) {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    (ms, format_utc(ms / 1000))
}

/// Format seconds since the epoch as an ISO-8601 UTC timestamp (proleptic
/// Gregorian calendar; days to civil date after H. Hinnant's algorithm).
pub(crate) fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting_matches_known_instants() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        // 2000-02-29 (leap day) 12:34:56 UTC = 951827696 (date -u -d @951827696).
        assert_eq!(format_utc(951_827_696), "2000-02-29T12:34:56Z");
        // 2026-11-26 00:00:00 UTC = 1795651200.
        assert_eq!(format_utc(1_795_651_200), "2026-11-26T00:00:00Z");
    }

    #[test]
    fn sha256_of_known_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        let e = hash_file(&p).unwrap();
        assert_eq!(e.bytes, 3);
        // FIPS 180-2 test vector for "abc".
        assert_eq!(
            e.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
