//! The Rust Qwen2.5-VL and Qwen3-VL against transformers' goldens
//! (scripts/make_vl_model_goldens.py, tests/fixtures/vl/qwen{2_5,3}_vl_tiny/):
//! the vision tower on one and two images (and Qwen3-VL's deepstack
//! features), logits of a text+image, a
//! two-image and a text-only prompt, greedy ids through the KV cache, and
//! teacher-forced response log-probs; both config layouts and both tensor
//! naming schemes load the same model.

use anyhow::Result;
use rlsd::model::vision::{LoadedVlModel, VisionInput};
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const CASES: [&str; 3] = ["text_image", "two_images", "text_only"];
const MODELS: [&str; 2] = ["qwen2_5_vl_tiny", "qwen3_vl_tiny"];

fn model_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vl")
        .join(name)
}

fn dir() -> PathBuf {
    model_dir(MODELS[0])
}

fn golden_of(name: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(model_dir(name).join("golden.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn golden() -> HashMap<String, Tensor> {
    golden_of(MODELS[0])
}

fn load(dir: &std::path::Path) -> LoadedVlModel {
    LoadedVlModel::load(dir, Device::Cpu, Kind::Float).unwrap()
}

/// `max |a - b| / max |b|`: the error relative to the golden's scale.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.abs().max().double_value(&[]).max(1e-12);
    (a - b).abs().max().double_value(&[]) / scale
}

fn grid(t: &Tensor) -> [usize; 3] {
    let v: Vec<i64> = Vec::try_from(t).unwrap();
    [v[0] as usize, v[1] as usize, v[2] as usize]
}

/// The images `which` (0 and/or 1) of the golden as one input.
fn images(g: &HashMap<String, Tensor>, which: &[usize]) -> VisionInput {
    let pv: Vec<&Tensor> = which
        .iter()
        .map(|i| &g[&format!("image{i}.pixel_values")])
        .collect();
    VisionInput {
        pixel_values: Tensor::cat(&pv, 0),
        grids: which
            .iter()
            .map(|i| grid(&g[&format!("image{i}.grid_thw")]))
            .collect(),
    }
}

fn case_images(g: &HashMap<String, Tensor>, case: &str) -> Option<VisionInput> {
    match case {
        "text_image" => Some(images(g, &[0])),
        "two_images" => Some(images(g, &[0, 1])),
        _ => None,
    }
}

#[test]
fn vision_tower_matches_transformers_on_one_and_two_images() -> Result<()> {
    for name in MODELS {
        let g = golden_of(name);
        let m = load(&model_dir(name));
        tch::no_grad(|| -> Result<()> {
            for (key, which) in [("vision.one", vec![0]), ("vision.two", vec![0, 1])] {
                let (out, deepstack) = m.model.encode(&images(&g, &which))?;
                assert_eq!(out.size(), g[key].size(), "{name} {key}");
                let err = rel_err(&out, &g[key]);
                assert!(err < 1e-4, "{name} {key}: relative error {err:e}");
                if key == "vision.two" {
                    let want = (0..).map_while(|k| g.get(&format!("{key}.deepstack{k}")));
                    let want: Vec<&Tensor> = want.collect();
                    assert_eq!(deepstack.len(), want.len(), "{name}: deepstack levels");
                    for (k, (got, want)) in deepstack.iter().zip(want).enumerate() {
                        let err = rel_err(got, want);
                        assert!(err < 1e-4, "{name} deepstack {k}: relative error {err:e}");
                    }
                }
            }
            Ok(())
        })?;
    }
    Ok(())
}

#[test]
fn logits_greedy_and_logprobs_match_transformers() -> Result<()> {
    for name in MODELS {
        logits_greedy_and_logprobs_of(name)?;
    }
    Ok(())
}

fn logits_greedy_and_logprobs_of(name: &str) -> Result<()> {
    let g = golden_of(name);
    let m = load(&model_dir(name));
    tch::no_grad(|| -> Result<()> {
        for case in CASES {
            let ids = &g[&format!("{case}.ids")];
            let imgs = case_images(&g, case);
            let logits = m.model.forward_all(ids, None, imgs.as_ref())?.get(0);
            let err = rel_err(&logits, &g[&format!("{case}.logits")]);
            assert!(err < 1e-4, "{name} {case}: logits relative error {err:e}");

            let prompt: Vec<i64> = Vec::try_from(ids.view([-1]))?;
            let greedy = m.model.generate_greedy(&prompt, imgs.as_ref(), 6, &[])?;
            let want: Vec<i64> = Vec::try_from(&g[&format!("{case}.greedy")])?;
            assert_eq!(greedy, want, "{name} {case}: greedy ids");

            let response: Vec<i64> = Vec::try_from(&g[&format!("{case}.response")])?;
            let full: Vec<i64> = prompt.iter().chain(&response).copied().collect();
            let full = Tensor::from_slice(&full).view([1, -1]);
            let lp = m
                .model
                .forward_all(&full, None, imgs.as_ref())?
                .get(0)
                .to_kind(Kind::Double)
                .log_softmax(-1, Kind::Double);
            let t = prompt.len() as i64;
            let idx = Tensor::from_slice(&response).view([-1, 1]);
            let got = lp
                .narrow(0, t - 1, response.len() as i64)
                .gather(1, &idx, false)
                .view([-1]);
            let want = g[&format!("{case}.response_logprobs")].to_kind(Kind::Double);
            let diff = (&got - &want).abs().max().double_value(&[]);
            assert!(
                diff < 1e-4,
                "{name} {case}: response log-prob diff {diff:e}"
            );
        }
        Ok(())
    })
}

#[test]
fn cached_decoding_equals_the_full_forward() -> Result<()> {
    for name in MODELS {
        cached_decoding_of(name)?;
    }
    Ok(())
}

fn cached_decoding_of(name: &str) -> Result<()> {
    // Prefill the two-image prompt, then feed the response one token at a
    // time at positions index + delta: the logits equal the full forward's.
    let g = golden_of(name);
    let m = load(&model_dir(name));
    tch::no_grad(|| -> Result<()> {
        let imgs = images(&g, &[0, 1]);
        let prompt: Vec<i64> = Vec::try_from(g["two_images.ids"].view([-1]))?;
        let response: Vec<i64> = Vec::try_from(&g["two_images.response"])?;
        let full: Vec<i64> = prompt.iter().chain(&response).copied().collect();
        let all = m
            .model
            .forward_all(&Tensor::from_slice(&full).view([1, -1]), None, Some(&imgs))?
            .get(0);
        let mut cache = m.model.lm.new_cache(full.len() as i64);
        let ids = Tensor::from_slice(&prompt).view([1, -1]);
        let (mut last, deltas) = m.model.prefill(&ids, None, Some(&imgs), &mut cache)?;
        for (k, &tok) in response.iter().enumerate() {
            let at = prompt.len() - 1 + k;
            let err = rel_err(&last.get(0), &all.get(at as i64));
            assert!(err < 1e-5, "{name} position {at}: relative error {err:e}");
            let pos = Tensor::from_slice(&[cache.len() + deltas[0]]).view([1, 1]);
            last = m.model.decode(
                &Tensor::from_slice(&[tok]).view([1, 1]),
                &pos,
                None,
                &mut cache,
            )?;
        }
        Ok(())
    })
}

#[test]
fn left_padded_batch_equals_single_rows() -> Result<()> {
    for name in MODELS {
        left_padded_batch_of(name)?;
    }
    Ok(())
}

fn left_padded_batch_of(name: &str) -> Result<()> {
    // The text+image prompt and the text-only prompt, left-padded into one
    // batch: each row's logits equal its own forward's on its real tokens.
    let g = golden_of(name);
    let m = load(&model_dir(name));
    tch::no_grad(|| -> Result<()> {
        let a: Vec<i64> = Vec::try_from(g["text_image.ids"].view([-1]))?;
        let b: Vec<i64> = Vec::try_from(g["text_only.ids"].view([-1]))?;
        let n = a.len().max(b.len());
        let pad = |r: &[i64]| -> (Vec<i64>, Vec<i64>) {
            let p = n - r.len();
            let ids = std::iter::repeat_n(0, p).chain(r.iter().copied()).collect();
            let mask = std::iter::repeat_n(0, p)
                .chain(std::iter::repeat_n(1, r.len()))
                .collect();
            (ids, mask)
        };
        let ((ia, ma), (ib, mb)) = (pad(&a), pad(&b));
        let ids = Tensor::from_slice(&[ia, ib].concat()).view([2, -1]);
        let mask = Tensor::from_slice(&[ma, mb].concat()).view([2, -1]);
        let logits = m
            .model
            .forward_all(&ids, Some(&mask), Some(&images(&g, &[0])))?;
        for (row, case, len) in [(0, "text_image", a.len()), (1, "text_only", b.len())] {
            let got = logits.get(row).narrow(0, (n - len) as i64, len as i64);
            let err = rel_err(&got, &g[&format!("{case}.logits")]);
            assert!(
                err < 1e-4,
                "{name} row {row} ({case}): relative error {err:e}"
            );
        }
        Ok(())
    })
}

#[test]
fn flat_config_and_transformers5_names_load_the_same_model() -> Result<()> {
    let g = golden();
    let tmp = tempfile::tempdir()?;
    // The Hub's flat config.json, and one unsharded file under transformers 5's names.
    std::fs::copy(
        dir().join("config_flat.json"),
        tmp.path().join("config.json"),
    )?;
    let m = load(&dir());
    let renamed: Vec<(String, Tensor)> =
        m.vs.variables()
            .into_iter()
            .map(|(n, t)| {
                let n = match n.strip_prefix("visual.") {
                    Some(rest) => format!("model.visual.{rest}"),
                    None => match n.strip_prefix("model.") {
                        Some(rest) => format!("model.language_model.{rest}"),
                        None => n,
                    },
                };
                (n, t)
            })
            .collect();
    Tensor::write_safetensors(&renamed, tmp.path().join("model.safetensors"))?;
    let flat = load(tmp.path());
    assert_eq!(flat.model.config, m.model.config);
    tch::no_grad(|| -> Result<()> {
        let ids = &g["two_images.ids"];
        let logits = flat
            .model
            .forward_all(ids, None, Some(&images(&g, &[0, 1])))?
            .get(0);
        let err = rel_err(&logits, &g["two_images.logits"]);
        assert!(err < 1e-4, "relative error {err:e}");
        Ok(())
    })
}

#[test]
fn video_tokens_and_mismatched_images_are_refused() {
    let g = golden();
    let m = load(&dir());
    let video = m.model.config.video_token_id;
    let ids = Tensor::from_slice(&[1, video, 3]).view([1, -1]);
    let err = m
        .model
        .forward_all(&ids, None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("video"), "{err}");
    // The text+image prompt given two images: counts disagree.
    let err = m
        .model
        .forward_all(&g["text_image.ids"], None, Some(&images(&g, &[0, 1])))
        .unwrap_err()
        .to_string();
    assert!(err.contains("image"), "{err}");
}

#[test]
fn bf16_error_is_within_transformers_own_bf16_error() -> Result<()> {
    // Both sides cast weights and pixels to bf16; the Rust model's error
    // against the f32 golden must stay near transformers' own bf16 error
    // (a factor 2, since the two round in different places).
    for name in MODELS {
        let g = golden_of(name);
        let m = LoadedVlModel::load(&model_dir(name), Device::Cpu, Kind::BFloat16)?;
        let hf: f64 = g["text_image.bf16_rel_err"].double_value(&[0]);
        tch::no_grad(|| -> Result<()> {
            let imgs = images(&g, &[0]);
            let logits = m
                .model
                .forward_all(&g["text_image.ids"], None, Some(&imgs))?
                .get(0)
                .to_kind(Kind::Float);
            let err = rel_err(&logits, &g["text_image.logits"]);
            assert!(
                err <= 2.0 * hf,
                "{name}: bf16 relative error {err:e}, transformers' {hf:e}"
            );
            eprintln!("{name}: bf16 relative error {err:.4}, transformers' {hf:.4}");
            Ok(())
        })?;
    }
    Ok(())
}
