//! Image preprocessing for Qwen2-VL / Qwen2.5-VL / Qwen3-VL against transformers.
//!
//! Goldens: tests/fixtures/vl, made by scripts/make_vl_processor_goldens.py with
//! transformers' `Qwen2VLImageProcessorPil` (see tests/fixtures/vl/VERSIONS).
//! Decoded bytes, Pillow's resized bytes, `pixel_values` and the grid must all
//! be equal, not close.

use anyhow::{anyhow, Context, Result};
use rlsd::model::vision::{
    expand_image_pads, image_token_count, load_rgb, resize_bicubic, ImageProcessor, RgbImage,
};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vl")
}

/// A golden tensor's raw bytes and shape.
fn tensor<'a>(st: &'a SafeTensors<'a>, name: &str) -> Result<(&'a [u8], Vec<usize>)> {
    let view = st
        .tensor(name)
        .with_context(|| format!("golden tensor {name}"))?;
    Ok((view.data(), view.shape().to_vec()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn i64s(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Names of the images with goldens in one safetensors file (`<name>.grid_thw`).
fn golden_images(st: &SafeTensors<'_>) -> Vec<String> {
    let mut names: Vec<String> = st
        .names()
        .into_iter()
        .filter_map(|n| n.strip_suffix(".grid_thw").map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Largest absolute difference between two byte slices, and how many differ.
fn byte_diff(a: &[u8], b: &[u8]) -> (u8, usize) {
    a.iter().zip(b).fold((0, 0), |(max, n), (x, y)| {
        let d = x.abs_diff(*y);
        (max.max(d), n + usize::from(d != 0))
    })
}

/// The most a JPEG byte decoded by zune-jpeg (the `image` crate) may differ from
/// libjpeg-turbo's (Pillow): the two use different integer IDCTs and chroma
/// upsampling, so JPEG is the one place this pipeline is not bit-exact.
/// Measured on the fixtures: see docs/VISION.md.
const JPEG_MAX_BYTE_DIFF: u8 = 4;

fn is_jpeg(name: &str) -> bool {
    name.ends_with(".jpg")
}

/// Pillow's decoding of a fixture image (after transformers' RGB conversion).
fn pillow_decoded(st: &SafeTensors<'_>, name: &str) -> Result<RgbImage> {
    let (bytes, shape) = tensor(st, name)?;
    Ok(RgbImage::new(shape[1], shape[0], bytes.to_vec())?)
}

#[test]
fn decoding_equals_pillow_for_png_webp_grey_alpha_and_jpeg_within_4() -> Result<()> {
    let bytes = std::fs::read(fixtures().join("decoded.safetensors"))?;
    let st = SafeTensors::deserialize(&bytes)?;
    let mut names = st.names();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    let mut failures = Vec::new();
    for name in names {
        let want = pillow_decoded(&st, name)?;
        let got = load_rgb(&fixtures().join("images").join(name))?;
        assert_eq!((got.width, got.height), (want.width, want.height), "{name}");
        let (max, count) = byte_diff(&got.pixels, &want.pixels);
        eprintln!(
            "{name}: {count} of {} bytes differ from Pillow, max {max}",
            want.pixels.len()
        );
        let allowed = if is_jpeg(name) { JPEG_MAX_BYTE_DIFF } else { 0 };
        if max > allowed {
            failures.push(format!(
                "{name}: {count} bytes differ, max {max} > {allowed}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    Ok(())
}

#[test]
fn pixel_values_and_grids_equal_transformers() -> Result<()> {
    let decoded_bytes = std::fs::read(fixtures().join("decoded.safetensors"))?;
    let decoded = SafeTensors::deserialize(&decoded_bytes)?;
    let mut checked = 0;
    for config in ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"] {
        let dir = fixtures().join(config);
        let proc = ImageProcessor::load(&dir)?;
        let bytes = std::fs::read(dir.join("golden.safetensors"))?;
        let st = SafeTensors::deserialize(&bytes)?;
        for name in golden_images(&st) {
            let at = format!("{config}/{name}");
            let path = fixtures().join("images").join(&name);
            let pillow = pillow_decoded(&decoded, &name)?;

            // Pillow's bicubic on Pillow's decoded pixels: the resize alone.
            let (resized, rshape) = tensor(&st, &format!("{name}.resized"))?;
            let ours = resize_bicubic(
                &pillow.pixels,
                pillow.width,
                pillow.height,
                3,
                rshape[1],
                rshape[0],
            )?;
            let (max, count) = byte_diff(&ours, resized);
            assert_eq!(
                count, 0,
                "{at}: {count} resized bytes differ from Pillow (max {max})"
            );

            let (grid, _) = tensor(&st, &format!("{name}.grid_thw"))?;
            let grid: Vec<usize> = i64s(grid).into_iter().map(|v| v as usize).collect();
            let (pv, shape) = tensor(&st, &format!("{name}.pixel_values"))?;
            let want = f32s(pv);

            // From Pillow's decoded pixels: every value bit-equal.
            let got = proc.preprocess(&pillow)?;
            assert_eq!(got.grid_thw.to_vec(), grid, "{at}: grid");
            assert_eq!(shape, vec![got.num_patches(), got.patch_dim], "{at}: shape");
            let mismatched = got
                .pixel_values
                .iter()
                .zip(&want)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(mismatched, 0, "{at}: {mismatched} pixel values differ");

            // From the file through our decoder: bit-equal except JPEG.
            let from_file = proc.preprocess_file(&path)?;
            assert_eq!(from_file.grid_thw.to_vec(), grid, "{at}: grid from file");
            let max = from_file
                .pixel_values
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            eprintln!("{at}: from the file, max |pixel value difference| {max}");
            if is_jpeg(&name) {
                // A byte off by k moves a value by k / 255 / std.
                let bound = f64::from(JPEG_MAX_BYTE_DIFF)
                    / 255.0
                    / proc
                        .config
                        .image_std
                        .iter()
                        .cloned()
                        .fold(f64::INFINITY, f64::min);
                assert!(f64::from(max) <= bound + 1e-6, "{at}: {max} > {bound}");
            } else {
                assert_eq!(from_file.pixel_values, want, "{at}: from the file");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 18, "every golden image was compared");
    Ok(())
}

#[test]
fn placeholder_expansion_equals_the_processor_text() -> Result<()> {
    let text = std::fs::read_to_string(fixtures().join("placeholders.json"))?;
    let golden: serde_json::Value = serde_json::from_str(&text)?;
    let proc = ImageProcessor::load(&fixtures().join(golden["config"].as_str().unwrap()))?;
    let cases = golden["cases"]
        .as_array()
        .ok_or_else(|| anyhow!("no cases"))?;
    assert_eq!(cases.len(), 3);
    for case in cases {
        let counts: Vec<usize> = case["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let img =
                    proc.preprocess_file(&fixtures().join("images").join(n.as_str().unwrap()))?;
                Ok(image_token_count(img.grid_thw, proc.config.merge_size))
            })
            .collect::<Result<_>>()?;
        let got = expand_image_pads(case["text"].as_str().unwrap(), &counts)?;
        assert_eq!(got, case["expanded"].as_str().unwrap());
    }
    Ok(())
}

#[test]
fn missing_or_undecodable_image_is_an_error_naming_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let proc = ImageProcessor::load(&fixtures().join("qwen2_vl"))?;

    let missing = dir.path().join("nowhere.png");
    let err = proc.preprocess_file(&missing).unwrap_err().to_string();
    assert!(
        err.contains("nowhere.png") && err.contains("cannot read"),
        "{err}"
    );

    let garbage = dir.path().join("garbage.jpg");
    std::fs::write(&garbage, b"\xff\xd8\xff\xe0 truncated jpeg")?;
    let err = proc.preprocess_file(&garbage).unwrap_err().to_string();
    assert!(
        err.contains("garbage.jpg") && err.contains("decode"),
        "{err}"
    );

    let text = dir.path().join("notes.webp");
    std::fs::write(&text, b"plain text")?;
    let err = load_rgb(&text).unwrap_err().to_string();
    assert!(err.contains("notes.webp"), "{err}");

    // A bad preprocessor config names the file and the key.
    let cfg = dir.path().join("preprocessor_config.json");
    std::fs::write(&cfg, br#"{"patch_size": 14, "max_frames": 768}"#)?;
    let err = ImageProcessor::load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("preprocessor_config.json") && err.contains("`max_frames`"),
        "{err}"
    );
    Ok(())
}

#[test]
fn tiny_image_grows_to_min_pixels_and_large_shrinks_to_max() -> Result<()> {
    let proc = ImageProcessor::load(&fixtures().join("qwen2_vl"))?;
    let (min, max) = (proc.config.min_pixels, proc.config.max_pixels);
    let tiny = RgbImage::new(5, 7, vec![128; 5 * 7 * 3])?;
    let out = proc.preprocess(&tiny)?;
    let pixels = out.grid_thw[1] * out.grid_thw[2] * proc.config.patch_size.pow(2);
    assert!(pixels >= min, "{pixels} < {min}");
    let large = RgbImage::new(400, 300, vec![7; 400 * 300 * 3])?;
    let out = proc.preprocess(&large)?;
    let pixels = out.grid_thw[1] * out.grid_thw[2] * proc.config.patch_size.pow(2);
    assert!(pixels <= max, "{pixels} > {max}");
    Ok(())
}
