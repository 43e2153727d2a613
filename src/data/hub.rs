//! Hugging Face dataset ids (`openai/gsm8k`) as `data.path`: the repo's
//! Parquet files of one subset and split, found in the local Hugging Face
//! cache first, as model ids are ([`crate::hub`]):
//!
//! ```text
//! $HF_HUB_CACHE (else $HF_HOME/hub, else ~/.cache/huggingface/hub)
//! └── datasets--openai--gsm8k/
//!     ├── refs/main                       # the commit `main` points at
//!     └── snapshots/<commit>/main/train-00000-of-00001.parquet
//! ```
//!
//! Which files are a subset's split, following the Hub's own layouts:
//! `<subset>/<split>-*.parquet` (e.g. gsm8k's `main/train-00000-of-00001.parquet`),
//! `<subset>/<split>/*.parquet` (the Hub's Parquet conversion), and for a
//! repo without subsets `data/<split>-*.parquet`, `<split>-*.parquet` or
//! `<split>.parquet` (subset `default`). With `data.subset` unset, a repo
//! with one subset (or a `default` one) uses it; several are an error
//! listing them. Custom `configs:` file patterns in a dataset card are not
//! read.
//!
//! Offline first: a cached snapshot holding the split is used without the
//! network. Otherwise, unless `HF_HUB_OFFLINE` is set, the files are listed
//! and downloaded into the same layout with the `hf-hub` crate; an id that
//! is not cached while the network is unreachable (or offline) is an error
//! naming the id and the folder looked in.

use crate::error::{Error, Result};
use crate::hub::HubEnv;
use std::path::{Path, PathBuf};

/// Which files of a dataset repo to read (`data.path`, `data.subset`,
/// `data.split`, `data.revision`).
#[derive(Debug, Clone, Copy)]
pub struct DatasetRef<'a> {
    /// The repo id, `org/name`.
    pub id: &'a str,
    /// Subset (Hugging Face's "config name"); `None`: the only one, or `default`.
    pub subset: Option<&'a str>,
    /// Split, e.g. `train`.
    pub split: &'a str,
    /// Branch, tag or commit; `None`: `main`.
    pub revision: Option<&'a str>,
}

/// Whether `data.path` names a Hub dataset rather than a file: it does not
/// exist, has no dataset file extension, and is an `org/name` id.
pub fn is_dataset_id(path: &Path) -> bool {
    let Some(s) = path.to_str() else {
        return false;
    };
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    !path.exists()
        && s.contains('/')
        && crate::hub::is_repo_id(s)
        && !matches!(ext.as_str(), "jsonl" | "json" | "ndjson" | "parquet" | "pq")
}

/// The cache folder of a dataset repository: `datasets--Org--Name`.
pub fn dataset_folder(cache: &Path, id: &str) -> PathBuf {
    cache.join(format!("datasets--{}", id.replace('/', "--")))
}

/// The Parquet files of `r`'s subset and split, in name order: from the
/// cache, else (online) downloaded.
pub fn resolve_dataset(r: &DatasetRef<'_>, env: &HubEnv) -> Result<Vec<PathBuf>> {
    let hub_err = |msg: String| Error::Hub {
        repo: r.id.to_string(),
        msg,
    };
    let rev = r.revision.unwrap_or("main");
    match cached_snapshot(&env.cache, r.id, rev) {
        Some(snap) => match pick_files(&files_under(&snap)?, r) {
            Ok(picked) => return Ok(picked.into_iter().map(|n| snap.join(n)).collect()),
            Err(msg) if env.offline => {
                return Err(hub_err(format!(
                    "{msg} (in the cached snapshot {}; HF_HUB_OFFLINE is set, so nothing was downloaded)",
                    snap.display()
                )))
            }
            // Online: the split may not be cached yet; ask the Hub.
            Err(_) => {}
        },
        None if env.offline => {
            return Err(hub_err(format!(
                "not a file, and revision `{rev}` of the dataset is not in the Hugging Face cache \
                 ({} looked for); HF_HUB_OFFLINE is set, so it was not downloaded",
                dataset_folder(&env.cache, r.id).join("snapshots").display()
            )))
        }
        None => {}
    }
    download(r, rev, &env.cache)
}

/// The snapshot folder `revision` (a branch or tag in `refs/`, or a commit
/// hash) names in the cache, if it is there.
fn cached_snapshot(cache: &Path, id: &str, revision: &str) -> Option<PathBuf> {
    let repo = dataset_folder(cache, id);
    let commit = match std::fs::read_to_string(repo.join("refs").join(revision)) {
        Ok(hash) => hash.trim().to_string(),
        Err(_) => revision.to_string(),
    };
    if commit.is_empty() || commit.contains(['/', '\\']) || commit.starts_with('.') {
        return None;
    }
    let dir = repo.join("snapshots").join(commit);
    dir.is_dir().then_some(dir)
}

/// Every file under `dir` as a `/`-separated relative path.
fn files_under(dir: &Path) -> Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let path = entry.map_err(|e| Error::io(dir, e))?.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else if let Ok(rel) = path.strip_prefix(root) {
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// The subset a repo file belongs to: its first folder, or `default` for
/// files at the top or under `data/`.
fn subset_of(name: &str) -> &str {
    match name.split_once('/') {
        Some((first, _)) if first != "data" => first,
        _ => "default",
    }
}

/// Whether a repo file holds `split`: named `<split>.parquet` or
/// `<split>-*.parquet`, or inside a `<split>/` folder.
fn in_split(name: &str, split: &str) -> bool {
    let mut parts: Vec<&str> = name.split('/').collect();
    let file = parts.pop().unwrap_or_default();
    let stem = file.strip_suffix(".parquet").unwrap_or(file);
    stem == split
        || stem
            .strip_prefix(split)
            .is_some_and(|rest| rest.starts_with('-'))
        || parts.last() == Some(&split)
}

/// The repo files (relative names) of `r`'s subset and split, sorted; the
/// error says which subsets and splits the names offer.
fn pick_files(names: &[String], r: &DatasetRef<'_>) -> std::result::Result<Vec<String>, String> {
    let parquet: Vec<&String> = names.iter().filter(|n| n.ends_with(".parquet")).collect();
    if parquet.is_empty() {
        return Err("the dataset has no Parquet files (only Parquet is read from the Hub)".into());
    }
    let mut subsets: Vec<&str> = parquet.iter().map(|n| subset_of(n)).collect();
    subsets.sort_unstable();
    subsets.dedup();
    let subset = match r.subset {
        Some(s) if subsets.contains(&s) => s,
        Some(s) => {
            return Err(format!(
                "has no subset `{s}` (data.subset); its subsets: {}",
                subsets.join(", ")
            ))
        }
        None if subsets.len() == 1 => subsets[0],
        None if subsets.contains(&"default") => "default",
        None => {
            return Err(format!(
                "has several subsets ({}); choose one with data.subset",
                subsets.join(", ")
            ))
        }
    };
    let mut picked: Vec<String> = parquet
        .iter()
        .filter(|n| subset_of(n) == subset && in_split(n, r.split))
        .map(|n| n.to_string())
        .collect();
    if picked.is_empty() {
        return Err(format!(
            "subset `{subset}` has no Parquet files of split `{}` (data.split); its files: {}",
            r.split,
            parquet
                .iter()
                .filter(|n| subset_of(n) == subset)
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    picked.sort();
    Ok(picked)
}

/// List the repo at `revision`, pick the split's files and download them
/// into the cache layout.
fn download(r: &DatasetRef<'_>, revision: &str, cache: &Path) -> Result<Vec<PathBuf>> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};
    use std::io::IsTerminal;
    let hub_err = |msg: String| Error::Hub {
        repo: r.id.to_string(),
        msg,
    };
    tracing::info!(dataset = r.id, revision, cache = %cache.display(), "downloading from the Hugging Face Hub");
    let api = ApiBuilder::from_env()
        .with_cache_dir(cache.to_path_buf())
        .with_progress(std::io::stderr().is_terminal())
        .build()
        .map_err(|e| hub_err(format!("cannot start the Hub client: {e}")))?;
    let repo = api.repo(Repo::with_revision(
        r.id.to_string(),
        RepoType::Dataset,
        revision.to_string(),
    ));
    let info = repo.info().map_err(|e| {
        hub_err(format!(
            "not a file, not in the Hugging Face cache ({}), and the dataset cannot be listed \
             at revision `{revision}` ({e}); is the id right, is the network reachable, does it \
             need HF_TOKEN?",
            dataset_folder(cache, r.id).display()
        ))
    })?;
    let names: Vec<String> = info.siblings.iter().map(|s| s.rfilename.clone()).collect();
    let picked = pick_files(&names, r).map_err(hub_err)?;
    picked
        .iter()
        .map(|f| {
            repo.get(f)
                .map_err(|e| hub_err(format!("downloading {f}: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r<'a>(subset: Option<&'a str>, split: &'a str) -> DatasetRef<'a> {
        DatasetRef {
            id: "o/d",
            subset,
            split,
            revision: None,
        }
    }

    #[test]
    fn picks_the_subset_and_split_of_the_hub_layouts() {
        let gsm8k: Vec<String> = [
            "README.md",
            "main/test-00000-of-00001.parquet",
            "main/train-00000-of-00001.parquet",
            "socratic/train-00000-of-00001.parquet",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            pick_files(&gsm8k, &r(Some("main"), "train")).unwrap(),
            ["main/train-00000-of-00001.parquet"]
        );
        let err = pick_files(&gsm8k, &r(None, "train")).unwrap_err();
        assert!(err.contains("main, socratic"), "{err}");
        let err = pick_files(&gsm8k, &r(Some("main"), "validation")).unwrap_err();
        assert!(
            err.contains("`validation`") && err.contains("main/test-"),
            "{err}"
        );

        let pushed: Vec<String> = [
            "data/train-00001-of-00002-abc.parquet",
            "data/train-00000-of-00002-abc.parquet",
            "data/test-00000-of-00001-def.parquet",
            "converted/train/0000.parquet",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            pick_files(&pushed, &r(None, "train")).unwrap(),
            [
                "data/train-00000-of-00002-abc.parquet",
                "data/train-00001-of-00002-abc.parquet"
            ]
        );
        assert_eq!(
            pick_files(&pushed, &r(Some("converted"), "train")).unwrap(),
            ["converted/train/0000.parquet"]
        );
        // `training` is not the split `train`.
        let flat: Vec<String> = ["train.parquet", "training-x.parquet"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            pick_files(&flat, &r(None, "train")).unwrap(),
            ["train.parquet"]
        );
        assert!(is_dataset_id(Path::new("openai/gsm8k")));
        assert!(!is_dataset_id(Path::new("data/train.parquet")));
        assert!(!is_dataset_id(Path::new("gsm8k")));
    }
}
