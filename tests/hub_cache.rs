//! Hugging Face model ids through a Hub cache folder the test lays out
//! itself (offline): `models--Org--Name/refs/<branch>` and
//! `snapshots/<commit>/`, branch, tag and commit revisions, `HF_HUB_CACHE`
//! and `HF_HUB_OFFLINE` for the binary, and the error naming the folder.

mod common;
#[path = "common/timed.rs"]
mod timed;

use rlsd::hub::{resolve_model, HubEnv};
use rlsd::model::LoadedModel;
use std::path::{Path, PathBuf};
use std::process::Command;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const OLD_COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";

/// A cache holding the Qwen2 test fixture as `Org/Tiny-Qwen2` at two
/// commits: `main` points at `COMMIT`, the tag `v0` at `OLD_COMMIT`.
fn make_cache(root: &Path) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/qwen2");
    let repo = root.join("models--Org--Tiny-Qwen2");
    for commit in [COMMIT, OLD_COMMIT] {
        let snap = repo.join("snapshots").join(commit);
        std::fs::create_dir_all(&snap).unwrap();
        for f in std::fs::read_dir(&fixture).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, snap.join(f.file_name().unwrap())).unwrap();
        }
    }
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), format!("{COMMIT}\n")).unwrap();
    std::fs::write(repo.join("refs/v0"), OLD_COMMIT).unwrap();
    repo
}

fn offline(cache: &Path) -> HubEnv {
    HubEnv {
        cache: cache.to_path_buf(),
        offline: true,
    }
}

#[test]
fn a_model_id_resolves_to_its_cached_snapshot_and_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = make_cache(tmp.path());
    let env = offline(tmp.path());
    let dir = resolve_model("Org/Tiny-Qwen2", None, &env).unwrap();
    assert_eq!(dir, repo.join("snapshots").join(COMMIT));
    let model = LoadedModel::load(&dir, tch::Device::Cpu, tch::Kind::Float).unwrap();
    assert!(model.tokenizer.is_some());

    // A tag through refs/, a commit by its hash.
    assert_eq!(
        resolve_model("Org/Tiny-Qwen2", Some("v0"), &env).unwrap(),
        repo.join("snapshots").join(OLD_COMMIT)
    );
    assert_eq!(
        resolve_model("Org/Tiny-Qwen2", Some(OLD_COMMIT), &env).unwrap(),
        repo.join("snapshots").join(OLD_COMMIT)
    );
    // An existing folder is used as it is, even when it looks like an id.
    assert_eq!(
        resolve_model(tmp.path().to_str().unwrap(), None, &env).unwrap(),
        tmp.path()
    );
}

#[test]
fn offline_misses_name_the_cache_folder() {
    let tmp = tempfile::tempdir().unwrap();
    make_cache(tmp.path());
    let env = offline(tmp.path());
    let err = resolve_model("Org/Other", None, &env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Org/Other"), "{err}");
    assert!(err.contains("models--Org--Other"), "{err}");
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    let err = resolve_model("Org/Tiny-Qwen2", Some("v9"), &env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("v9"), "{err}");
    // A path that is neither a folder nor an id.
    let err = resolve_model("/no/such/folder", None, &env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/no/such/folder") && err.contains("does not exist"),
        "{err}"
    );
}

/// The binary, given an id, finds it through `HF_HUB_CACHE` (and then
/// `HF_HOME/hub`) without the network.
#[test]
fn the_binary_generates_from_a_cached_model_id() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp
        .path()
        .join("hub/models--Org--Tiny-Arith/snapshots")
        .join(COMMIT);
    common::pretrain_tiny(&snap);
    std::fs::create_dir_all(tmp.path().join("hub/models--Org--Tiny-Arith/refs")).unwrap();
    std::fs::write(
        tmp.path().join("hub/models--Org--Tiny-Arith/refs/main"),
        COMMIT,
    )
    .unwrap();
    let run = |var: &str, value: PathBuf| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlsd"));
        cmd.args([
            "generate",
            "--model",
            "Org/Tiny-Arith",
            "--prompt",
            "What is 1+1?",
        ])
        .args(["--max-new-tokens", "4", "--temperature", "0"])
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HOME")
        .env(var, value)
        .env("HF_HUB_OFFLINE", "1");
        timed::output_within(&mut cmd, std::time::Duration::from_secs(120))
    };
    for (var, value) in [
        ("HF_HUB_CACHE", tmp.path().join("hub")),
        ("HF_HOME", tmp.path().to_path_buf()),
    ] {
        let out = run(var, value);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{var}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("--- response 1"), "{stdout}");
    }
    let out = run("HF_HUB_CACHE", tmp.path().join("empty"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("models--Org--Tiny-Arith") && stderr.contains("empty"),
        "{stderr}"
    );
}
