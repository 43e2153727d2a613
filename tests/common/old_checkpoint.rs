//! A checkpoint as an older build wrote it (before pinned versions, or
//! before the adaptive lambda state) (`#[path =
//! "common/old_checkpoint.rs"] mod old_checkpoint;`).
#![allow(dead_code)]

use std::path::Path;

/// Remove a checkpoint's pinned versions and re-write its manifest: the
/// checkpoint an older build wrote.
pub fn strip_pinned(ck: &Path) {
    std::fs::remove_dir_all(ck.join("pinned")).unwrap();
    strip_state_key(ck, "pinned_versions");
}

/// Remove `key` from a checkpoint's `state.json` and re-write its manifest
/// (which then lists no `pinned/` files either): the checkpoint a build
/// before that key wrote.
pub fn strip_state_key(ck: &Path, key: &str) {
    let state_path = ck.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state.as_object_mut().unwrap().remove(key);
    std::fs::write(&state_path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    let man_path = ck.join("manifest.json");
    let mut man: rlsd::checkpoint::Manifest =
        serde_json::from_slice(&std::fs::read(&man_path).unwrap()).unwrap();
    if !ck.join("pinned").exists() {
        man.files.retain(|f, _| !f.starts_with("pinned/"));
    }
    let text = std::fs::read(&state_path).unwrap();
    let entry = man.files.get_mut("state.json").unwrap();
    entry.bytes = text.len() as u64;
    entry.sha256 = sha256_hex(&text);
    std::fs::write(&man_path, serde_json::to_vec_pretty(&man).unwrap()).unwrap();
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}
