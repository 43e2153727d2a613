//! Hugging Face Hub model ids (`Qwen/Qwen2.5-1.5B-Instruct`) as model paths.
//!
//! A `model.path` (or `--model`) that is not an existing folder but looks
//! like a repository id is looked up in the local Hugging Face cache, laid
//! out as `huggingface_hub` writes it:
//!
//! ```text
//! $HF_HUB_CACHE (else $HF_HOME/hub, else ~/.cache/huggingface/hub)
//! └── models--Qwen--Qwen2.5-1.5B-Instruct/
//!     ├── refs/main              # the commit hash `main` points at
//!     └── snapshots/<commit>/    # config.json, tokenizer.json, *.safetensors
//! ```
//!
//! A revision is a branch or tag (read from `refs/<revision>`) or a commit
//! hash (a `snapshots/` folder name). When the snapshot is not there, the
//! model's files are downloaded into the same layout with the `hf-hub`
//! crate (blocking, through `ureq` and rustls), unless `HF_HUB_OFFLINE` is
//! set, in which case the error names the folder it looked in.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Where to look for models and whether the network may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubEnv {
    /// The hub cache folder (`models--Org--Name` folders live here).
    pub cache: PathBuf,
    /// Never download (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
}

impl HubEnv {
    /// From the environment, as `huggingface_hub` reads it: `HF_HUB_CACHE`,
    /// else `HF_HOME/hub`, else `~/.cache/huggingface/hub`; `HF_HUB_OFFLINE`
    /// set to anything but `0`, `false`, `no`, `off` or nothing means offline.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let cache = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| var("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub")))
            .unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"));
        let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
            !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "" | "0" | "false" | "no" | "off"
            )
        });
        HubEnv { cache, offline }
    }
}

/// Whether `s` can be a Hub repository id: `name` or `org/name`, each part
/// made of ASCII letters, digits, `-`, `_` and `.`, not starting with `.`
/// or `-`.
pub fn is_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 96
                && !p.starts_with(['.', '-'])
                && !p.contains("..")
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// The cache folder of a model repository: `models--Org--Name`.
pub fn repo_folder(cache: &Path, repo_id: &str) -> PathBuf {
    cache.join(format!("models--{}", repo_id.replace('/', "--")))
}

/// The cached snapshot folder of `repo_id` at `revision` (default `main`),
/// if it is there and holds a `config.json`.
pub fn cached_snapshot(cache: &Path, repo_id: &str, revision: Option<&str>) -> Option<PathBuf> {
    let revision = revision.unwrap_or("main");
    let repo = repo_folder(cache, repo_id);
    let commit = match std::fs::read_to_string(repo.join("refs").join(revision)) {
        Ok(hash) => hash.trim().to_string(),
        // Not a branch or tag name: a commit hash names the snapshot itself.
        Err(_) => revision.to_string(),
    };
    if commit.is_empty() || commit.contains(['/', '\\']) || commit.starts_with('.') {
        return None;
    }
    let dir = repo.join("snapshots").join(commit);
    dir.join("config.json").is_file().then_some(dir)
}

/// The folder of the model `path` names: an existing folder as it is;
/// otherwise a Hub id through the cache, then (online) a download.
pub fn resolve_model(path: &str, revision: Option<&str>, env: &HubEnv) -> Result<PathBuf> {
    let as_dir = PathBuf::from(path);
    if as_dir.is_dir() {
        return Ok(as_dir);
    }
    if !is_repo_id(path) {
        return Err(Error::InvalidInput(format!(
            "model folder {path} does not exist (and it is not a Hugging Face model id)"
        )));
    }
    if let Some(dir) = cached_snapshot(&env.cache, path, revision) {
        return Ok(dir);
    }
    let rev = revision.unwrap_or("main");
    if env.offline {
        return Err(Error::Hub {
            repo: path.to_string(),
            msg: format!(
                "not a folder, and revision `{rev}` is not in the Hugging Face cache ({} looked for); \
                 HF_HUB_OFFLINE is set, so it was not downloaded",
                repo_folder(&env.cache, path).join("snapshots").display()
            ),
        });
    }
    download(path, rev, &env.cache)
}

/// Files of a model repository that loading needs.
fn wanted(name: &str) -> bool {
    !name.contains('/')
        && (name.ends_with(".safetensors")
            || matches!(
                name,
                "config.json"
                    | "generation_config.json"
                    | "tokenizer.json"
                    | "tokenizer_config.json"
                    | "special_tokens_map.json"
                    | "chat_template.jinja"
                    | "chat_template.json"
                    | "model.safetensors.index.json"
            ))
}

/// Download the files a model needs into the cache layout; returns the
/// snapshot folder.
fn download(repo_id: &str, revision: &str, cache: &Path) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};
    use std::io::IsTerminal;
    let hub_err = |msg: String| Error::Hub {
        repo: repo_id.to_string(),
        msg,
    };
    tracing::info!(
        repo = repo_id,
        revision,
        cache = %cache.display(),
        "downloading from the Hugging Face Hub"
    );
    let api = ApiBuilder::from_env()
        .with_cache_dir(cache.to_path_buf())
        .with_progress(std::io::stderr().is_terminal())
        .build()
        .map_err(|e| hub_err(format!("cannot start the Hub client: {e}")))?;
    let repo = api.repo(Repo::with_revision(
        repo_id.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let info = repo.info().map_err(|e| {
        hub_err(format!(
            "cannot list the repository at revision `{revision}` ({e}); \
             is the id right, is the network reachable, does it need HF_TOKEN? \
             Set HF_HUB_OFFLINE=1 to use only {}",
            cache.display()
        ))
    })?;
    let files: Vec<String> = info
        .siblings
        .iter()
        .map(|s| s.rfilename.clone())
        .filter(|f| wanted(f))
        .collect();
    if !files.iter().any(|f| f == "config.json") {
        return Err(hub_err(
            "the repository has no config.json; is it a transformers model?".into(),
        ));
    }
    let mut dir = None;
    for f in &files {
        let local = repo
            .get(f)
            .map_err(|e| hub_err(format!("downloading {f}: {e}")))?;
        dir = local.parent().map(Path::to_path_buf);
    }
    dir.ok_or_else(|| hub_err("nothing was downloaded".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_folders() {
        for ok in ["Qwen/Qwen2.5-1.5B-Instruct", "gpt2", "org_x/m.v1"] {
            assert!(is_repo_id(ok), "{ok}");
        }
        for bad in [
            "",
            "/abs/path",
            "a/b/c",
            "./x",
            "../up",
            "org/",
            "a b/c",
            "x/..y",
        ] {
            assert!(!is_repo_id(bad), "{bad}");
        }
        assert_eq!(
            repo_folder(Path::new("/c"), "Qwen/Qwen2.5-1.5B"),
            PathBuf::from("/c/models--Qwen--Qwen2.5-1.5B")
        );
    }
}
