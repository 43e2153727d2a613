//! `rlsd generate --image FILE` through the built binary on the tiny random
//! Qwen2.5-VL of tests/fixtures/vl/qwen2_5_vl_tiny (scripts/make_vl_model_goldens.py).

#[path = "common/timed.rs"]
mod timed;

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
        .to_string_lossy()
        .into_owned()
}

fn rlsd(args: &[&str]) -> Output {
    let bin = std::env::var_os("RLSD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rlsd")));
    timed::output_within(
        Command::new(bin).args(args).env("NO_COLOR", "1"),
        std::time::Duration::from_secs(300),
    )
}

fn run_ok(args: &[&str]) -> String {
    let o = rlsd(args);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "rlsd {args:?} failed:\n{out}\n{err}");
    out
}

#[test]
fn generate_with_images_is_deterministic_when_greedy_and_depends_on_the_image() {
    let model = fixture("vl/qwen2_5_vl_tiny");
    let (odd, large) = (fixture("vl/images/odd.png"), fixture("vl/images/large.png"));
    let args = |image: &str| -> Vec<String> {
        [
            "generate",
            "--model",
            &model,
            "--prompt",
            "What is shown?",
            "--image",
            image,
            "--temperature",
            "0",
            "--max-new-tokens",
            "6",
            "--n",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |image: &str| {
        let a = args(image);
        run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let a = run(&odd);
    let blocks: Vec<&str> = a.split("--- response").skip(1).collect();
    assert_eq!(blocks.len(), 2, "{a}");
    assert_eq!(
        blocks[0],
        blocks[1].replace(" 2 (", " 1 ("),
        "greedy responses differ:\n{a}"
    );
    assert!(
        blocks[0].contains("6 tokens") || blocks[0].contains("eos"),
        "{a}"
    );
    assert_eq!(a, run(&odd), "a second greedy run differs");
    // The image reaches the model: another image changes the log-prob line.
    assert_ne!(a, run(&large), "a different image gave the same output");
    // Two images in one prompt run too.
    let two = run_ok(&[
        "generate",
        "--model",
        &model,
        "--prompt",
        "Compare",
        "--image",
        &odd,
        "--image",
        &large,
        "--temperature",
        "0",
        "--max-new-tokens",
        "3",
    ]);
    assert_eq!(two.matches("--- response").count(), 1, "{two}");
}

#[test]
fn image_with_a_text_model_or_a_missing_file_fails_naming_it() {
    let text_model = fixture("models/qwen2");
    let o = rlsd(&[
        "generate",
        "--model",
        &text_model,
        "--prompt",
        "x",
        "--image",
        &fixture("vl/images/odd.png"),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("vision-language"),
        "{err}"
    );
    let o = rlsd(&[
        "generate",
        "--model",
        &fixture("vl/qwen2_5_vl_tiny"),
        "--prompt",
        "x",
        "--image",
        "no/such/image.png",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("no/such/image.png"),
        "{err}"
    );
}

/// `--json` with images: the prompt ids hold the image's pad tokens expanded
/// (one per merged patch), each response has one log-prob per generated id,
/// greedy is repeatable, and `--raw` drops the chat template's tokens.
#[test]
fn generate_json_and_raw_with_an_image() {
    let model = fixture("vl/qwen2_5_vl_tiny");
    let image = fixture("vl/images/odd.png");
    let run = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "generate",
            "--model",
            &model,
            "--prompt",
            "What is shown?",
            "--image",
            &image,
            "--temperature",
            "0",
            "--max-new-tokens",
            "5",
            "--json",
        ];
        args.extend_from_slice(extra);
        serde_json::from_str(&run_ok(&args)).expect("one JSON object")
    };
    let templated = run(&[]);
    let ids = |v: &serde_json::Value, key: &str| -> Vec<i64> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    let prompt = ids(&templated, "prompt_ids");
    // The fixture's tokenizer puts <|image_pad|> at id 250 (tokenizer.json).
    let pads = prompt.iter().filter(|&&t| t == 250).count();
    assert!(pads > 1, "image pads not expanded: {prompt:?}");
    let response = &templated["responses"][0];
    let generated = ids(response, "ids");
    assert!(!generated.is_empty());
    assert_eq!(
        response["logprobs"].as_array().unwrap().len(),
        generated.len()
    );
    assert_eq!(templated, run(&[]), "greedy JSON differs between runs");
    let raw = run(&["--raw"]);
    let raw_prompt = ids(&raw, "prompt_ids");
    assert_eq!(raw_prompt.iter().filter(|&&t| t == 250).count(), pads);
    assert!(
        raw_prompt.len() < prompt.len(),
        "--raw kept the template: {} vs {} ids",
        raw_prompt.len(),
        prompt.len()
    );
}
