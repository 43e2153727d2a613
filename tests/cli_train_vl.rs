//! `rlsd train` with a vision-language model through the built binary: the
//! tiny random Qwen2.5-VL of tests/fixtures/vl/qwen2_5_vl_tiny
//! (scripts/make_vl_model_goldens.py) on a 4-row JSONL dataset with small
//! PNG images written here, two RLSD steps: exit 0, two metrics lines, a
//! checkpoint, a `final/` VL folder whose decoder moved and whose frozen
//! tower did not; a missing image fails naming it.

#[path = "common/timed.rs"]
mod timed;

use rlsd::model::vision::LoadedVlModel;
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{Device, Kind};

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vl/qwen2_5_vl_tiny")
}

fn rlsd(args: &[String]) -> (bool, String) {
    let bin = std::env::var_os("RLSD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rlsd")));
    let o = timed::output_within(
        Command::new(bin).args(args).env("NO_COLOR", "1"),
        std::time::Duration::from_secs(300),
    );
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn train_args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut sets = vec![
        format!("model.path='{}'", model_dir().display()),
        "model.dtype=f32".into(),
        format!("data.path='{}'", data.display()),
        format!("runtime.out_dir='{}'", out.display()),
        "runtime.steps=2".into(),
        "runtime.sampler_device=cpu".into(),
        "runtime.teacher_device=cpu".into(),
        "runtime.optimizer_device=cpu".into(),
        "rollout.batch_prompts=2".into(),
        "rollout.group_size=4".into(),
        "rollout.max_new_tokens=6".into(),
        "verifier.kind=regex".into(),
        "verifier.regex.pattern='[aeiou]'".into(),
        "algo.algo=rlsd".into(),
        "optim.lr=0.001".into(),
        "optim.weight_decay=0.0".into(),
        "checkpoint.every_steps=1".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    let mut args = vec!["train".to_string()];
    for s in sets {
        args.push("--set".into());
        args.push(s);
    }
    args
}

/// A `w x h` PNG of one colour with a darker square in a corner.
fn png(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        if x < w / 3 && y < h / 3 {
            image::Rgb([rgb[0] / 2, rgb[1] / 2, rgb[2] / 2])
        } else {
            image::Rgb(rgb)
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Four rows with image paths relative to the file: one image, one image
/// mid-text, two images, text only.
fn write_data(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("img")).unwrap();
    std::fs::write(dir.join("img/red.png"), png(84, 56, [200, 30, 30])).unwrap();
    std::fs::write(dir.join("img/blue.png"), png(56, 84, [30, 30, 200])).unwrap();
    let path = dir.join("data.jsonl");
    let rows = [
        r#"{"prompt": "<image>Which colour is the square?", "answer": "red", "images": ["img/red.png"]}"#,
        r#"{"prompt": "Look: <image> What is the colour?", "answer": "blue", "images": ["img/blue.png"]}"#,
        r#"{"prompt": "<image><image>Are these the same?", "answer": "no", "images": ["img/red.png", "img/blue.png"]}"#,
        r#"{"prompt": "Name a colour.", "answer": "red"}"#,
    ];
    std::fs::write(&path, rows.join("\n") + "\n").unwrap();
    path
}

#[test]
fn train_runs_two_steps_and_writes_a_loadable_vl_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let out = tmp.path().join("run");
    // Held-out validation on the same file before step 1 and after each step.
    let held_out = format!("validation.path='{}'", data.display());
    let sets = [
        "validation.every=1",
        held_out.as_str(),
        "validation.num_prompts=3",
        "validation.samples=2",
    ];
    let (ok, text) = rlsd(&train_args(&data, &out, &sets));
    assert!(ok, "rlsd train failed:\n{text}");
    assert!(text.contains("vision-language"), "{text}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let after = |line: &serde_json::Value| -> Vec<u64> {
        line["validation"]
            .as_array()
            .unwrap_or_else(|| panic!("no validation in {line}"))
            .iter()
            .map(|v| {
                assert_eq!(v["n"], 3);
                assert_eq!(v["samples"], 2);
                let p = v["pass1_sampled"].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&p));
                v["after_step"].as_u64().unwrap()
            })
            .collect()
    };
    assert_eq!(after(&lines[0]), vec![0, 1]);
    assert_eq!(after(&lines[1]), vec![2]);
    assert!(out
        .join("checkpoints/step-000002/model/preprocessor_config.json")
        .is_file());
    let load = |d: &Path| LoadedVlModel::load(d, Device::Cpu, Kind::Float).unwrap();
    let (before, after) = (load(&model_dir()), load(&out.join("final")));
    let (a, b) = (before.vs.variables(), after.vs.variables());
    let moved = |prefix: &str| {
        a.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .any(|(k, v)| !v.equal(&b[k]))
    };
    assert!(moved("model.layers."), "the decoder did not move");
    assert!(!moved("visual."), "the frozen tower moved");
}

#[test]
fn what_the_vl_loop_does_not_run_is_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let out = tmp.path().join("run");
    let (ok, text) = rlsd(&train_args(&data, &out, &["algo.algo=cepo"]));
    assert!(!ok, "cepo with a VL model should be refused:\n{text}");
    assert!(
        text.contains("algo.algo") && text.contains("vision-language"),
        "{text}"
    );
    assert!(!out.join("metrics.jsonl").exists());
}

#[test]
fn a_missing_image_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    std::fs::remove_file(tmp.path().join("img/blue.png")).unwrap();
    let out = tmp.path().join("run");
    let (ok, text) = rlsd(&train_args(&data, &out, &[]));
    assert!(!ok, "a missing image should fail:\n{text}");
    assert!(text.contains("blue.png"), "{text}");
}

/// `configs/builtin-vl.toml` as shipped (the committed `assets/tiny-arith-vl`
/// base, the built-in task's pictured problems, 16 prompts a step, among
/// them prompts with equal ids and different pictures), one step with a
/// small group and no validation: exit 0, one metrics line, a loadable
/// `final/`.
#[test]
fn builtin_vl_config_trains_one_step_through_the_binary() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut args = vec!["train".to_string(), "--config".into()];
    args.push(root.join("configs/builtin-vl.toml").display().to_string());
    for s in [
        "runtime.steps=1".to_string(),
        "rollout.group_size=4".into(),
        "validation.every=0".into(),
        format!("runtime.out_dir='{}'", out.display()),
    ] {
        args.push("--set".into());
        args.push(s);
    }
    let bin = std::env::var_os("RLSD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rlsd")));
    let o = timed::output_within(
        Command::new(bin)
            .args(&args)
            .current_dir(&root)
            .env("NO_COLOR", "1"),
        std::time::Duration::from_secs(120),
    );
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "rlsd train failed:\n{text}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().filter(|l| !l.trim().is_empty()).count(), 1);
    LoadedVlModel::load(&out.join("final"), Device::Cpu, Kind::Float).unwrap();
}
