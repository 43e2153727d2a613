//! RLSD training of a vision-language policy from the library: the tiny
//! random Qwen2.5-VL / Qwen3-VL fixtures (tests/fixtures/vl/, made by
//! scripts/make_vl_model_goldens.py) on prompts with small PNG images
//! written here, through [`train_vision_language`]: two steps write two
//! metrics lines, checkpoints and a loadable `final/` VL folder whose decoder
//! moved and whose frozen tower did not; a resume continues from step 2.

#[path = "common/old_checkpoint.rs"]
mod old_checkpoint;

use anyhow::Result;
use rlsd::config::RunConfig;
use rlsd::data::{Example, ImageSource};
use rlsd::model::vision::LoadedVlModel;
use rlsd::run::vision_train::{check_vision_language_run, train_vision_language};
use rlsd::run::PromptSource;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vl")
        .join(name)
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

/// Four prompts: one image, one image mid-text, two images, text only.
fn examples() -> Vec<Example> {
    let red = png(84, 56, [200, 30, 30]);
    let blue = png(56, 84, [30, 30, 200]);
    let with = |id: &str, prompt: &str, images: Vec<Vec<u8>>| Example {
        images: images.into_iter().map(ImageSource::Bytes).collect(),
        ..Example::new(id, prompt, "red", "The answer is red.")
    };
    vec![
        with("a", "<image>Which colour is the square?", vec![red.clone()]),
        with("b", "Look: <image> What is the colour?", vec![blue.clone()]),
        with("c", "<image><image>Are these the same?", vec![red, blue]),
        with("d", "Name a colour.", vec![]),
    ]
}

/// The examples in order, wrapping around; the cursor is the next index.
struct Images {
    examples: Vec<Example>,
    next: usize,
}

impl PromptSource for Images {
    fn next_batch(&mut self, n: usize) -> rlsd::Result<Vec<Example>> {
        let out = (0..n)
            .map(|k| self.examples[(self.next + k) % self.examples.len()].clone())
            .collect();
        self.next += n;
        Ok(out)
    }

    fn cursor(&self) -> serde_json::Value {
        serde_json::json!(self.next)
    }

    fn restore(&mut self, cursor: &serde_json::Value) -> rlsd::Result<()> {
        self.next = cursor.as_u64().unwrap_or(0) as usize;
        Ok(())
    }
}

fn source() -> Box<dyn PromptSource> {
    Box::new(Images {
        examples: examples(),
        next: 0,
    })
}

fn config(model: &Path, out: &Path, steps: u64, extra: &[&str]) -> RunConfig {
    let mut sets: Vec<String> = vec![
        format!("model.path='{}'", model.display()),
        "model.dtype=f32".into(),
        format!("runtime.out_dir='{}'", out.display()),
        format!("runtime.steps={steps}"),
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
        // No decay: the decoder moves only if the loss has a gradient.
        "optim.weight_decay=0.0".into(),
        "checkpoint.every_steps=1".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    RunConfig::load(None, &sets).unwrap()
}

fn weights(dir: &Path) -> HashMap<String, Tensor> {
    let m = LoadedVlModel::load(dir, Device::Cpu, Kind::Float).unwrap();
    m.vs.variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach().copy()))
        .collect()
}

fn metrics_lines(out: &Path) -> usize {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// The Qwen3-VL fixture has weights and config only: add the Qwen2.5-VL
/// fixture's tokenizer (same special-token ids) and a Qwen3-VL processor
/// config (patch 16, merge 2, mean and std 0.5) in a folder under `tmp`.
fn qwen3_folder(tmp: &Path) -> Result<PathBuf> {
    let dir = tmp.join("qwen3_vl_tiny");
    std::fs::create_dir_all(&dir)?;
    let from3 = fixture("qwen3_vl_tiny");
    for f in [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
    ] {
        std::fs::copy(from3.join(f), dir.join(f))?;
    }
    let from25 = fixture("qwen2_5_vl_tiny");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(from25.join(f), dir.join(f))?;
    }
    let processor = serde_json::json!({
        "do_convert_rgb": true, "do_normalize": true, "do_rescale": true, "do_resize": true,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "min_pixels": 4096, "max_pixels": 8192, "merge_size": 2, "patch_size": 16,
        "resample": 3, "rescale_factor": 0.00392156862745098, "temporal_patch_size": 2,
        "image_processor_type": "Qwen2VLImageProcessorFast",
        "processor_class": "Qwen3VLProcessor"
    });
    std::fs::write(dir.join("preprocessor_config.json"), processor.to_string())?;
    Ok(dir)
}

fn train_two_steps_then_resume(name: &str) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let model = if name == "qwen3_vl_tiny" {
        qwen3_folder(tmp.path())?
    } else {
        fixture(name)
    };
    let out = tmp.path().join("run");
    let cfg = config(&model, &out, 2, &[]);
    let mut seen = Vec::new();
    let report = train_vision_language(&cfg, source(), None, false, &mut |s| seen.push(s.step))?;
    assert_eq!(seen, vec![1, 2], "{name}");
    assert_eq!(metrics_lines(&out), 2, "{name}");
    for s in &report.steps {
        assert!(!s.skipped, "{name}: step {} skipped", s.step);
        assert!(s.loss.is_finite());
    }
    let ck = report.last_checkpoint.clone().unwrap();
    assert!(ck.ends_with("step-000002"), "{}", ck.display());
    assert!(
        ck.join("teacher.safetensors").is_file(),
        "{name}: no teacher"
    );
    for file in [
        "config.json",
        "preprocessor_config.json",
        "tokenizer.json",
        "model.safetensors",
    ] {
        assert!(
            ck.join("model").join(file).is_file(),
            "{name}: {file} missing"
        );
    }
    let final_dir = report.final_model.clone().unwrap();
    let (before, after) = (weights(&model), weights(&final_dir));
    let moved: Vec<&String> = before
        .iter()
        .filter(|(k, v)| !v.equal(&after[*k]))
        .map(|(k, _)| k)
        .collect();
    assert!(
        moved.iter().any(|k| k.starts_with("model.layers.")),
        "{name}: the decoder did not move"
    );
    assert!(
        moved.iter().all(|k| !k.starts_with("visual.")),
        "{name}: the frozen tower moved: {moved:?}"
    );

    // Resume from the latest checkpoint for a third step.
    let cfg3 = config(&model, &out, 3, &[]);
    let resumed = train_vision_language(
        &cfg3,
        source(),
        Some(Path::new("latest")),
        false,
        &mut |_| {},
    )?;
    assert_eq!(resumed.steps.len(), 1, "{name}");
    assert_eq!(resumed.steps[0].step, 3);
    assert_eq!(metrics_lines(&out), 3, "{name}");
    assert!(resumed.last_checkpoint.unwrap().ends_with("step-000003"));
    Ok(())
}

#[test]
fn qwen2_5_vl_trains_checkpoints_and_resumes() -> Result<()> {
    train_two_steps_then_resume("qwen2_5_vl_tiny")
}

#[test]
fn qwen3_vl_trains_checkpoints_and_resumes() -> Result<()> {
    train_two_steps_then_resume("qwen3_vl_tiny")
}

#[test]
fn a_fresh_run_refuses_an_existing_run_folder() -> Result<()> {
    let model = fixture("qwen2_5_vl_tiny");
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("run");
    let cfg = config(&model, &out, 1, &[]);
    train_vision_language(&cfg, source(), None, false, &mut |_| {})?;
    let err = train_vision_language(&cfg, source(), None, false, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("already holds a run"), "{err}");
    Ok(())
}

#[test]
fn what_the_vl_loop_does_not_run_is_refused_by_name() {
    let model = fixture("qwen2_5_vl_tiny");
    let out = Path::new("/tmp/unused");
    for (set, key) in [
        ("algo.algo=cepo", "algo.algo"),
        ("algo.algo=sdpo", "algo.algo"),
        ("algo.kl_coef=0.1", "algo.kl_coef"),
    ] {
        let cfg = config(&model, out, 1, &[set]);
        let err = check_vision_language_run(&cfg).unwrap_err().to_string();
        assert!(err.contains(key), "{set}: {err}");
    }
    check_vision_language_run(&config(&model, out, 1, &[])).unwrap();
}

/// An adaptive lambda schedule continues across a resume: its state is in
/// the checkpoint. lambda halves after every step with a teacher pass (the
/// weight-clip rate is always below 1.0, patience 1), so a resume that
/// restarted it would run step 3 at lambda0.
#[test]
fn an_adaptive_schedule_resumes_where_it_stopped() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let model = fixture("qwen2_5_vl_tiny");
    let adaptive = [
        "algo.lambda_schedule=adaptive",
        "algo.adaptive_signal=weight-clip",
        "algo.adaptive_threshold=1.0",
        "algo.adaptive_patience=1",
        "algo.adaptive_min_lambda=0.0",
    ];
    let lambdas = |out: &Path, steps: u64, resume: Option<&Path>| -> Result<Vec<f64>> {
        let cfg = config(&model, out, steps, &adaptive);
        let r = train_vision_language(&cfg, source(), resume, false, &mut |_| {})?;
        Ok(r.steps.iter().map(|s| s.lambda).collect())
    };
    let full = lambdas(&tmp.path().join("full"), 3, None)?;
    assert!(full[2] < full[0] && full[2] > 0.0, "{full:?}");
    let cut = tmp.path().join("cut");
    lambdas(&cut, 2, None)?;
    let resumed = lambdas(&cut, 3, Some(Path::new("latest")))?;
    assert_eq!(resumed, vec![full[2]], "{full:?}");
    Ok(())
}

/// A checkpoint without the adaptive lambda state (as a build before it
/// wrote one): resuming it with `algo.lambda_schedule = "adaptive"` is
/// refused, naming the key and the checkpoint's state file.
#[test]
fn an_adaptive_resume_without_its_state_is_refused() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let model = fixture("qwen2_5_vl_tiny");
    let out = tmp.path().join("run");
    let fixed = config(&model, &out, 2, &[]);
    train_vision_language(&fixed, source(), None, false, &mut |_| {})?;
    old_checkpoint::strip_state_key(
        &out.join("checkpoints").join("step-000002"),
        "adaptive_lambda",
    );
    let adaptive = config(&model, &out, 3, &["algo.lambda_schedule=adaptive"]);
    let err = train_vision_language(
        &adaptive,
        source(),
        Some(Path::new("latest")),
        false,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    for part in ["algo.lambda_schedule", "state.json", "adaptive_lambda"] {
        assert!(err.contains(part), "{part} missing: {err}");
    }
    Ok(())
}

/// The held-out leakage probe of VL validation (`run::vision_validate`)
/// builds its privileged spans with the VL tokenizer around the `<image>`
/// marks: a response that writes the teacher's privileged text is caught, one
/// that writes only its own prompt and the answer line is not.
#[test]
fn vl_leakage_spans_catch_the_privileged_text_only() -> Result<()> {
    use rlsd::data::TeacherPrompt;
    use rlsd::pipeline::leakage_probe::leakage_rates;
    use rlsd::run::evaluate::privileged_spans;
    let m = LoadedVlModel::load(&fixture("qwen2_5_vl_tiny"), Device::Cpu, Kind::Float)?;
    let tok = m.tokenizer.as_ref().expect("the fixture has a tokenizer");
    let ex = Example {
        id: "p".into(),
        prompt: "<image>What is the colour of the square?".into(),
        answer: "red".into(),
        privileged: "the square is drawn in bright red paint".into(),
        context: Vec::new(),
        extra: Default::default(),
        images: vec![ImageSource::Path(PathBuf::from("unused.png"))],
    };
    let teacher = TeacherPrompt::new("{question} Reference solution: {answer}")?;
    let spans = privileged_spans(tok, &ex, &teacher, 8)?;
    let copied = "I see that the square is drawn in bright red paint. Answer: red";
    // (A response that repeats the question's end followed by a space would
    // match the teacher message's `square? ` + `Reference` boundary n-grams:
    // a known false positive of the probe with short tokens.)
    let honest = "The colour of the square is red. Answer: red";
    let ids = |t: &str| tok.encode(t, false);
    let (a, b) = (ids(copied)?, ids(honest)?);
    let rates = leakage_rates(
        [
            (&spans, a.as_slice(), copied),
            (&spans, b.as_slice(), honest),
        ]
        .into_iter(),
    );
    assert_eq!(rates.span, 0.5, "{rates:?}");
    Ok(())
}
