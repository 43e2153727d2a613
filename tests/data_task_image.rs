//! The built-in vision-language task: arithmetic problems rendered as
//! pictures (`data.task.image = "question" | "half"`). Rendering is
//! deterministic, the pictures decode through `model::vision::decode`, and
//! (without OCR) the pixels depend on the text: ink extent grows with the
//! text, equal glyphs in another order move the ink but keep its amount,
//! and different problems give different pictures.

use rlsd::data::task::{ArithmeticTask, Problem, TaskConfig};
use rlsd::data::task_image::{render_png, render_rgb, IMAGE_HEIGHT, IMAGE_STRIDE};
use rlsd::data::{DataConfig, Dataset, Example, ImageSource, TaskImage, IMAGE_PLACEHOLDER};
use rlsd::model::vision::decode::{decode_rgb, RgbImage};
use std::collections::HashSet;

fn task(image: TaskImage) -> ArithmeticTask {
    ArithmeticTask::new(TaskConfig {
        max_operands: 4,
        operators: "+-*".into(),
        image,
        ..TaskConfig::default()
    })
    .unwrap()
}

fn picture(example: &Example) -> RgbImage {
    assert_eq!(example.images.len(), 1);
    let ImageSource::Bytes(png) = &example.images[0] else {
        panic!("expected PNG bytes");
    };
    decode_rgb(png).unwrap()
}

/// Darkness (255 - grey) of every pixel, row-major.
fn ink(img: &RgbImage) -> Vec<u32> {
    img.pixels
        .chunks_exact(3)
        .map(|p| 255 - u32::from(p[0]))
        .collect()
}

/// The first and last columns with any ink.
fn ink_columns(img: &RgbImage) -> (usize, usize) {
    let ink = ink(img);
    let cols: Vec<usize> = (0..img.width)
        .filter(|&x| (0..img.height).any(|y| ink[y * img.width + x] > 0))
        .collect();
    (cols[0], cols[cols.len() - 1])
}

fn decoded(text: &str) -> RgbImage {
    decode_rgb(&render_png(text).unwrap()).unwrap()
}

#[test]
fn rendering_is_deterministic_and_decodes() {
    let a = render_png("12+7*3-5").unwrap();
    if let Ok(dir) = std::env::var("RLSD_TASK_IMAGE_OUT") {
        std::fs::write(std::path::Path::new(&dir).join("12+7*3-5.png"), &a).unwrap();
    }
    assert_eq!(a, render_png("12+7*3-5").unwrap());
    let img = decode_rgb(&a).unwrap();
    // The PNG holds exactly the rendered pixels, grey on white.
    let (width, rgb) = render_rgb("12+7*3-5").unwrap();
    assert_eq!(
        (img.width, img.height),
        (width as usize, IMAGE_HEIGHT as usize)
    );
    assert_eq!(img.pixels, rgb);
    assert_eq!(img.width % IMAGE_STRIDE as usize, 0);
    assert!(img
        .pixels
        .chunks_exact(3)
        .all(|p| p[0] == p[1] && p[1] == p[2]));
    // White border: the first and last rows and columns carry no ink.
    let ink = ink(&img);
    let (w, h) = (img.width, img.height);
    assert!((0..w).all(|x| ink[x] == 0 && ink[(h - 1) * w + x] == 0));
    assert!((0..h).all(|y| ink[y * w] == 0 && ink[y * w + w - 1] == 0));
    // Some pixels are fully black (the strokes), most are white.
    assert!(ink.contains(&255));
    let inked = ink.iter().filter(|&&v| v > 0).count();
    assert!(inked > 20 && inked < w * h / 2, "{inked} of {}", w * h);
    // The PNG is small next to the raw pixels.
    assert!(a.len() < rgb.len() / 2, "{} vs {}", a.len(), rgb.len());
}

#[test]
fn pictures_depend_on_the_text() {
    // Ink extends further right the longer the text.
    let ends: Vec<usize> = ["1", "1+1", "11+11", "111+111*1"]
        .iter()
        .map(|t| ink_columns(&decoded(t)).1)
        .collect();
    assert!(ends.windows(2).all(|w| w[0] < w[1]), "{ends:?}");
    // Texts start at the same left margin: equal first glyphs, equal first ink.
    assert_eq!(
        ink_columns(&decoded("7")).0,
        ink_columns(&decoded("72+3")).0
    );
    assert!(ink_columns(&decoded("7")).0 <= 6);
    // The same glyphs in another order: other pixels, nearly the same ink.
    let (a, b) = (decoded("12+34"), decoded("34+12"));
    assert_ne!(a.pixels, b.pixels);
    let sum = |img: &RgbImage| ink(img).iter().sum::<u32>() as f64;
    let (sa, sb) = (sum(&a), sum(&b));
    assert!((sa - sb).abs() / sa < 0.05, "{sa} vs {sb}");
    // A `1` is drawn with less ink than an `8`.
    assert!(sum(&decoded("1")) < sum(&decoded("8")));
}

#[test]
fn question_mode_puts_the_whole_expression_in_the_picture() {
    let text = task(TaskImage::Off).examples(40, 3);
    let vl = task(TaskImage::Question).dataset_examples(40, 3).unwrap();
    assert_eq!(
        vl,
        task(TaskImage::Question).dataset_examples(40, 3).unwrap()
    );
    let mut distinct = HashSet::new();
    for (t, v) in text.iter().zip(&vl) {
        assert_eq!(v.prompt, format!("What is {IMAGE_PLACEHOLDER}?"));
        assert_eq!(
            (&v.id, &v.answer, &v.privileged),
            (&t.id, &t.answer, &t.privileged)
        );
        let img = picture(v);
        let expression = t
            .prompt
            .trim_start_matches("What is ")
            .trim_end_matches('?');
        assert_eq!(img.pixels, decoded(expression).pixels);
        distinct.insert((t.prompt.clone(), img.pixels));
    }
    // Different problems, different pictures (and equal ones, equal).
    let problems: HashSet<&String> = text.iter().map(|t| &t.prompt).collect();
    let pictures: HashSet<&Vec<u8>> = distinct.iter().map(|(_, p)| p).collect();
    assert_eq!(pictures.len(), problems.len());
    // Off leaves the text task as it was.
    assert_eq!(task(TaskImage::Off).dataset_examples(40, 3).unwrap(), text);
}

#[test]
fn half_mode_splits_the_expression_between_picture_and_text() {
    let p = Problem {
        operands: vec![12, 7, 3, 5],
        operators: vec!['+', '*', '-'],
        answer: 28,
    };
    assert_eq!(p.split_half(), ("12+7".to_string(), "*3-5".to_string()));
    let odd = Problem {
        operands: vec![4, 9, 2],
        operators: vec!['-', '+'],
        answer: -3,
    };
    assert_eq!(odd.split_half(), ("4-9".to_string(), "+2".to_string()));
    let two = Problem {
        operands: vec![4, 9],
        operators: vec!['*'],
        answer: 36,
    };
    assert_eq!(two.split_half(), ("4".to_string(), "*9".to_string()));

    let text = task(TaskImage::Off).examples(30, 8);
    let vl = task(TaskImage::Half).dataset_examples(30, 8).unwrap();
    for (t, v) in text.iter().zip(&vl) {
        let rest = v
            .prompt
            .strip_prefix("What is <image>")
            .and_then(|r| r.strip_suffix('?'))
            .unwrap();
        let expression = t
            .prompt
            .trim_start_matches("What is ")
            .trim_end_matches('?');
        let pictured = expression.strip_suffix(rest).unwrap();
        assert!(!pictured.is_empty() && !rest.is_empty(), "{expression}");
        assert_eq!(picture(v).pixels, decoded(pictured).pixels);
    }
}

#[test]
fn the_config_key_builds_the_dataset_and_held_out_prompts() {
    let cfg: DataConfig = toml::from_str("[task]\nimage = \"half\"\nnum_examples = 12\n").unwrap();
    assert_eq!(cfg.task.image, TaskImage::Half);
    let ds = Dataset::from_config(&cfg).unwrap();
    assert_eq!(ds.len(), 12);
    assert!(ds.examples().iter().all(|e| e.images.len() == 1));
    assert!(toml::from_str::<DataConfig>("[task]\nimage = \"both\"\n").is_err());

    // Validation draws problems outside the training set by their text, so
    // the identical `What is <image>?` prompts of question mode do not hide them.
    let mut run = rlsd::config::RunConfig::default();
    run.data.task.image = TaskImage::Question;
    run.data.task.num_examples = 50;
    let held = rlsd::run::evaluate::held_out_examples(&run).unwrap();
    assert_eq!(held.len(), run.validation.num_prompts);
    assert!(held
        .iter()
        .all(|e| e.images.len() == 1 && e.prompt == "What is <image>?"));
}
