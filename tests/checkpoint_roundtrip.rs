//! Checkpoints: bit-identical round trip, atomicity under interrupted
//! writes, corruption errors that name the file, keep-last pruning.

use std::path::Path;

use anyhow::Result;
use rlsd::checkpoint::{
    latest_checkpoint, list_checkpoints, load_checkpoint, load_latest_valid, save_checkpoint,
    MANIFEST_FILE,
};
use serde_json::json;
use tch::{Kind, Tensor};

/// Writes a stand-in Hugging Face folder (config + weights + a nested file).
fn write_model(dir: &Path) -> rlsd::Result<()> {
    std::fs::write(
        dir.join("config.json"),
        br#"{"architectures":["Qwen2ForCausalLM"]}"#,
    )
    .map_err(|e| rlsd::Error::io(dir, e))?;
    let w = Tensor::arange(12, (Kind::Float, tch::Device::Cpu)).reshape([3, 4]);
    Tensor::write_safetensors(
        &[("model.embed_tokens.weight", &w)],
        dir.join("model.safetensors"),
    )?;
    std::fs::create_dir(dir.join("extra")).map_err(|e| rlsd::Error::io(dir, e))?;
    std::fs::write(dir.join("extra/notes.txt"), b"nested").map_err(|e| rlsd::Error::io(dir, e))
}

fn optimizer_state(seed: i64) -> Vec<(String, Tensor)> {
    tch::manual_seed(seed);
    vec![
        // Deliberately not in sorted order: the loader must keep this order.
        ("step".to_string(), Tensor::from(41i64 + seed)),
        (
            "exp_avg.layers.0.w".to_string(),
            Tensor::randn([5, 7], (Kind::Float, tch::Device::Cpu)),
        ),
        (
            "exp_avg_sq.layers.0.w".to_string(),
            Tensor::randn([5, 7], (Kind::Float, tch::Device::Cpu))
                .square()
                .to_kind(Kind::BFloat16),
        ),
        // A non-contiguous view must be saved as its values.
        (
            "exp_avg.head".to_string(),
            Tensor::randn([4, 3], (Kind::Double, tch::Device::Cpu)).tr(),
        ),
    ]
}

fn bytes_of(t: &Tensor) -> Vec<u8> {
    let t = t.contiguous();
    let n = t.numel() * t.kind().elt_size_in_bytes();
    let mut buf = vec![0u8; n];
    t.copy_data_u8(&mut buf, t.numel());
    buf
}

fn save(root: &Path, step: u64, keep_last: usize) -> rlsd::Result<std::path::PathBuf> {
    let opt = optimizer_state(step as i64);
    let state = json!({"step": step, "policy_version": step, "rng": [1, 2, 3], "cursor": {"epoch": 0, "index": step * 8}});
    save_checkpoint(
        root,
        step,
        &write_model,
        &opt,
        &state,
        "[algo]\nname = \"rlsd\"\n",
        keep_last,
    )
}

#[test]
fn round_trip_is_bit_identical() -> Result<()> {
    let root = tempfile::tempdir()?;
    let opt = optimizer_state(7);
    let state =
        json!({"step": 123, "seeds": {"sampler": 9_007_199_254_740_993u64}, "cursor": [0, 17]});
    let cfg = "[algo]\nname = \"rlsd\"\nlambda0 = 0.5\n";
    let dir = save_checkpoint(root.path(), 123, &write_model, &opt, &state, cfg, 3)?;
    assert_eq!(dir.file_name().unwrap(), "step-000123");
    assert_eq!(latest_checkpoint(root.path())?, Some(dir.clone()));

    let loaded = load_checkpoint(&dir)?;
    assert_eq!(loaded.step, 123);
    assert_eq!(loaded.state, state);
    assert_eq!(loaded.config_toml, cfg);
    assert_eq!(loaded.model_dir, dir.join("model"));
    assert!(loaded.model_dir.join("config.json").is_file());
    assert_eq!(
        std::fs::read(loaded.model_dir.join("extra/notes.txt"))?,
        b"nested"
    );
    let names: Vec<&str> = loaded.optimizer.iter().map(|(n, _)| n.as_str()).collect();
    let want: Vec<&str> = opt.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, want);
    for ((_, a), (name, b)) in opt.iter().zip(&loaded.optimizer) {
        assert_eq!(a.kind(), b.kind(), "{name}");
        assert_eq!(a.size(), b.size(), "{name}");
        assert_eq!(bytes_of(a), bytes_of(b), "{name} not bit-identical");
    }
    // The manifest covers every file, model files included.
    let files: Vec<&str> = loaded.manifest.files.keys().map(String::as_str).collect();
    assert_eq!(
        files,
        [
            "config.toml",
            "model/config.json",
            "model/extra/notes.txt",
            "model/model.safetensors",
            "optimizer.safetensors",
            "state.json"
        ]
    );
    assert_eq!(
        loaded.manifest.created_utc.len(),
        "2026-11-26T23:59:59Z".len()
    );
    Ok(())
}

#[test]
fn interrupted_write_leaves_previous_checkpoint_latest() -> Result<()> {
    let root = tempfile::tempdir()?;
    let first = save(root.path(), 1, 0)?;

    // The model writer fails half-way: error returned, nothing left behind.
    let opt = optimizer_state(2);
    let state = json!({"step": 2});
    let failing = |dir: &Path| -> rlsd::Result<()> {
        std::fs::write(dir.join("config.json"), b"{").unwrap();
        Err(rlsd::Error::Runtime("disk full (simulated)".into()))
    };
    let err = save_checkpoint(root.path(), 2, &failing, &opt, &state, "", 0).unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(latest_checkpoint(root.path())?, Some(first.clone()));
    assert_eq!(
        std::fs::read_dir(root.path())?.count(),
        1,
        "temporary dir not cleaned"
    );

    // A crash (here a panic) mid-write leaves a temporary dir that must be ignored.
    let panicking = |dir: &Path| -> rlsd::Result<()> {
        std::fs::write(dir.join("config.json"), b"{").unwrap();
        panic!("killed mid-write (simulated)");
    };
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        save_checkpoint(root.path(), 2, &panicking, &opt, &state, "", 0)
    }));
    assert!(crashed.is_err());
    let leftovers: Vec<String> = std::fs::read_dir(root.path())?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-step-000002"))
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "the simulated crash should leave its temp dir"
    );
    // A hand-made directory with a checkpoint name but no manifest (e.g. a
    // copy interrupted by the user) is not a checkpoint either.
    std::fs::create_dir_all(root.path().join("step-000009/model"))?;
    std::fs::write(root.path().join("step-000009/state.json"), b"{}")?;
    assert_eq!(latest_checkpoint(root.path())?, Some(first.clone()));
    assert_eq!(list_checkpoints(root.path())?.len(), 1);
    assert_eq!(load_latest_valid(root.path())?.unwrap().step, 1);

    // The next save clears the crashed writer's leftovers.
    let third = save(root.path(), 3, 0)?;
    assert_eq!(latest_checkpoint(root.path())?, Some(third));
    let names: Vec<String> = std::fs::read_dir(root.path())?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with('.')), "{names:?}");
    Ok(())
}

fn load_err(dir: &Path) -> String {
    load_checkpoint(dir).unwrap_err().to_string()
}

/// Recompute one file's entry in the manifest (so the file's own parser is reached).
fn rehash(dir: &Path, rel: &str) -> Result<()> {
    let man_path = dir.join(MANIFEST_FILE);
    let mut man: serde_json::Value = serde_json::from_slice(&std::fs::read(&man_path)?)?;
    let bytes = std::fs::read(dir.join(rel))?;
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    man["files"][rel] = json!({"sha256": sha, "bytes": bytes.len()});
    std::fs::write(&man_path, serde_json::to_vec(&man)?)?;
    Ok(())
}

#[test]
fn corruption_is_reported_with_the_file_name() -> Result<()> {
    let root = tempfile::tempdir()?;
    let good = save(root.path(), 1, 0)?;
    let dir = save(root.path(), 2, 0)?;

    // One flipped byte in the optimizer state.
    let opt = dir.join("optimizer.safetensors");
    let mut bytes = std::fs::read(&opt)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&opt, &bytes)?;
    let msg = load_err(&dir);
    assert!(
        msg.contains("optimizer.safetensors") && msg.contains("sha256 mismatch"),
        "{msg}"
    );
    bytes[last] ^= 0x01;
    std::fs::write(&opt, &bytes)?;
    load_checkpoint(&dir)?;

    // A truncated model file: size mismatch naming it.
    let weights = dir.join("model/model.safetensors");
    let orig = std::fs::read(&weights)?;
    std::fs::write(&weights, &orig[..orig.len() / 2])?;
    let msg = load_err(&dir);
    assert!(
        msg.contains("model/model.safetensors") && msg.contains("size mismatch"),
        "{msg}"
    );
    // ...and a deleted one.
    std::fs::remove_file(&weights)?;
    let msg = load_err(&dir);
    assert!(
        msg.contains("model/model.safetensors") && msg.contains("missing"),
        "{msg}"
    );
    std::fs::write(&weights, &orig)?;
    load_checkpoint(&dir)?;

    // state.json that is not JSON (with a matching checksum).
    let state = dir.join("state.json");
    let orig_state = std::fs::read(&state)?;
    std::fs::write(&state, b"{\"step\": 2,")?;
    rehash(&dir, "state.json")?;
    let msg = load_err(&dir);
    assert!(
        msg.contains("state.json") && msg.contains("bad JSON"),
        "{msg}"
    );
    std::fs::write(&state, &orig_state)?;
    rehash(&dir, "state.json")?;
    load_checkpoint(&dir)?;

    // A torn manifest.
    let man = dir.join(MANIFEST_FILE);
    let text = std::fs::read(&man)?;
    std::fs::write(&man, &text[..text.len() / 2])?;
    let msg = load_err(&dir);
    assert!(
        msg.contains("manifest.json") && msg.contains("bad JSON"),
        "{msg}"
    );

    // The newest checkpoint is broken: loading the latest valid one falls back.
    let fallback = load_latest_valid(root.path())?.expect("an older checkpoint is valid");
    assert_eq!(fallback.dir, good);
    Ok(())
}

#[test]
fn keep_last_prunes_oldest_and_replacing_a_step_works() -> Result<()> {
    let root = tempfile::tempdir()?;
    for step in 1..=5 {
        save(root.path(), step * 10, 2)?;
    }
    let steps: Vec<u64> = list_checkpoints(root.path())?
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(steps, [40, 50]);
    // keep_last = 1 still keeps the newest.
    save(root.path(), 60, 1)?;
    let steps: Vec<u64> = list_checkpoints(root.path())?
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(steps, [60]);
    // keep_last = 0 keeps everything.
    save(root.path(), 70, 0)?;
    save(root.path(), 80, 0)?;
    assert_eq!(list_checkpoints(root.path())?.len(), 3);
    // Saving the same step again replaces it (e.g. a final checkpoint on shutdown).
    let again = save(root.path(), 80, 0)?;
    assert_eq!(load_checkpoint(&again)?.step, 80);
    assert_eq!(list_checkpoints(root.path())?.len(), 3);
    let names: Vec<String> = std::fs::read_dir(root.path())?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with('.')), "{names:?}");
    // Saving an earlier step (a run resumed from an older checkpoint) never
    // prunes the checkpoint just written.
    let older = save(root.path(), 75, 1)?;
    let steps: Vec<u64> = list_checkpoints(root.path())?
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(steps, [75, 80]);
    assert!(older.is_dir());
    Ok(())
}

#[test]
fn duplicate_optimizer_names_are_rejected() {
    let root = tempfile::tempdir().unwrap();
    let t = Tensor::from(1.0f32);
    let opt = vec![("m".to_string(), t.shallow_clone()), ("m".to_string(), t)];
    let state = json!({});
    let err = save_checkpoint(root.path(), 1, &|_: &Path| Ok(()), &opt, &state, "", 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`m` appears twice"), "{err}");
    assert_eq!(latest_checkpoint(root.path()).unwrap(), None);
}

/// Env var that turns the test binary into the writer the next test kills.
const CHILD_ENV: &str = "RLSD_CKPT_KILL_CHILD_ROOT";

#[test]
fn writer_killed_mid_write_leaves_previous_checkpoint_latest() -> Result<()> {
    if let Some(root) = std::env::var_os(CHILD_ENV) {
        // Child: start step 2 and hang inside the model writer until killed.
        let opt = optimizer_state(2);
        let state = json!({"step": 2});
        let hang = |dir: &Path| -> rlsd::Result<()> {
            std::fs::write(dir.join("config.json"), b"{\"half\":").unwrap();
            std::thread::sleep(std::time::Duration::from_secs(60));
            Ok(())
        };
        save_checkpoint(Path::new(&root), 2, &hang, &opt, &state, "", 0)?;
        return Ok(());
    }
    let root = tempfile::tempdir()?;
    let first = save(root.path(), 1, 0)?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "writer_killed_mid_write_leaves_previous_checkpoint_latest",
            "--nocapture",
        ])
        .env(CHILD_ENV, root.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // Wait until the child is inside the write, then kill it (SIGKILL).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let tmp = loop {
        let found = std::fs::read_dir(root.path())?
            .map(|e| e.unwrap().path())
            .find(|p| p.join("model/config.json").exists() && p != &first);
        if let Some(p) = found {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "child never started writing"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    child.kill()?;
    child.wait()?;
    assert!(tmp
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(".tmp-step-000002"));
    assert_eq!(latest_checkpoint(root.path())?, Some(first.clone()));
    assert_eq!(load_latest_valid(root.path())?.unwrap().step, 1);
    // The next writer cleans up and carries on.
    save(root.path(), 2, 0)?;
    assert!(!tmp.exists());
    assert_eq!(load_latest_valid(root.path())?.unwrap().step, 2);
    Ok(())
}

#[test]
fn empty_optimizer_state_round_trips() -> Result<()> {
    // E.g. a checkpoint taken before the first optimizer step.
    let root = tempfile::tempdir()?;
    let dir = save_checkpoint(
        root.path(),
        0,
        &write_model,
        &[],
        &json!({"step": 0}),
        "",
        1,
    )?;
    let loaded = load_checkpoint(&dir)?;
    assert!(loaded.optimizer.is_empty());
    assert_eq!(loaded.step, 0);
    Ok(())
}

#[test]
fn extra_tensor_files_round_trip_checksummed() -> Result<()> {
    let root = tempfile::tempdir()?;
    let pinned = vec![(
        "pinned/policy-000002.safetensors".to_string(),
        optimizer_state(2),
    )];
    let dir = rlsd::checkpoint::save_checkpoint_with_extras(
        root.path(),
        3,
        &write_model,
        &optimizer_state(3),
        None,
        &pinned,
        &json!({"step": 3}),
        "",
        0,
    )?;
    let loaded = load_checkpoint(&dir)?;
    let back = loaded.read_tensors("pinned/policy-000002.safetensors")?;
    let mut want = optimizer_state(2);
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(back.len(), want.len());
    for ((n, a), (m, b)) in back.iter().zip(&want) {
        assert_eq!(n, m);
        assert_eq!(bytes_of(a), bytes_of(b), "{n}");
    }
    // Only files the manifest lists (so checksummed on load) are read.
    let err = loaded.read_tensors("optimizer2.safetensors").unwrap_err();
    assert!(err.to_string().contains("not listed"), "{err}");
    // A damaged extra file fails the load, naming it.
    std::fs::write(dir.join("pinned/policy-000002.safetensors"), b"x")?;
    assert!(
        load_err(&dir).contains("policy-000002"),
        "{}",
        load_err(&dir)
    );
    // Extra files go in a subfolder, never over a fixed file or `model/`.
    for bad in [
        "optimizer.safetensors",
        "model/x.safetensors",
        "../x",
        "a//b",
    ] {
        let files = vec![(bad.to_string(), Vec::new())];
        let err = rlsd::checkpoint::save_checkpoint_with_extras(
            root.path(),
            4,
            &write_model,
            &[],
            None,
            &files,
            &json!({"step": 4}),
            "",
            0,
        )
        .unwrap_err();
        assert!(err.to_string().contains(bad), "{bad}: {err}");
    }
    Ok(())
}
