//! The vision-language [`VlPolicy`] (the train step's `Policy` for
//! Qwen2.5-VL / Qwen3-VL) against transformers' teacher-forced response
//! log-probs (the goldens of tests/vl_model_golden.rs, made by
//! scripts/make_vl_model_goldens.py), and a real train step: the frozen
//! tower stays put while the language weights move; `train_vision` moves it.

use anyhow::Result;
use rlsd::model::vision::{LoadedVlModel, ProcessedImage, VlPolicy};
use rlsd::optim::{trainable_by_name, OptimConfig};
use rlsd::policy::{Policy, PromptResponse};
use rlsd::rlsd::{Algo, AlgoConfig};
use rlsd::train::{train_step, TrainBatch, Trainer};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

const CASES: [&str; 3] = ["text_image", "two_images", "text_only"];
const MODELS: [&str; 2] = ["qwen2_5_vl_tiny", "qwen3_vl_tiny"];

fn model_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vl")
        .join(name)
}

fn golden(name: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(model_dir(name).join("golden.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn policy(name: &str, train_vision: bool) -> VlPolicy {
    let m = LoadedVlModel::load(&model_dir(name), Device::Cpu, Kind::Float).unwrap();
    VlPolicy::new(m, train_vision)
}

/// Golden image `i` as the processor's output.
fn image(g: &HashMap<String, Tensor>, i: usize) -> ProcessedImage {
    let pv = &g[&format!("image{i}.pixel_values")];
    let grid: Vec<i64> = Vec::try_from(&g[&format!("image{i}.grid_thw")]).unwrap();
    ProcessedImage {
        pixel_values: Vec::try_from(pv.to_kind(Kind::Float).view([-1])).unwrap(),
        grid_thw: [grid[0] as usize, grid[1] as usize, grid[2] as usize],
        patch_dim: pv.size()[1] as usize,
    }
}

fn case_images(g: &HashMap<String, Tensor>, case: &str) -> Vec<ProcessedImage> {
    match case {
        "text_image" => vec![image(g, 0)],
        "two_images" => vec![image(g, 0), image(g, 1)],
        _ => vec![],
    }
}

fn ids(t: &Tensor) -> Vec<i64> {
    Vec::try_from(t.view([-1])).unwrap()
}

/// The golden cases as samples, with their images bound to `p`.
fn golden_samples(p: &VlPolicy, g: &HashMap<String, Tensor>) -> Vec<PromptResponse> {
    CASES
        .iter()
        .map(|case| {
            let prompt = ids(&g[&format!("{case}.ids")]);
            let images = case_images(g, case);
            if !images.is_empty() {
                p.bind_images(0, &prompt, Arc::from(images)).unwrap();
            }
            PromptResponse {
                image_key: 0,
                prompt,
                response: ids(&g[&format!("{case}.response")]),
            }
        })
        .collect()
}

fn row(t: &Tensor, r: i64, n: usize) -> Vec<f32> {
    Vec::try_from(t.get(r).narrow(0, 0, n as i64)).unwrap()
}

#[test]
fn teacher_forced_logprobs_equal_transformers() -> Result<()> {
    for name in MODELS {
        let g = golden(name);
        let p = policy(name, false);
        let mut batch = golden_samples(&p, &g);
        // A second row of the text+image prompt (a group's sibling) with a
        // shorter response: its images are encoded once for both rows.
        let mut sibling = batch[0].clone();
        sibling.response.truncate(2);
        batch.push(sibling);
        let scores = tch::no_grad(|| p.response_scores(&batch, 1.0))?;
        for (r, pr) in batch.iter().enumerate() {
            let case = if r < 3 { CASES[r] } else { CASES[0] };
            let want: Vec<f32> = Vec::try_from(&g[&format!("{case}.response_logprobs")])?;
            let got = row(&scores.logprobs, r as i64, pr.response.len());
            for (j, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-4,
                    "{name} row {r} ({case}) token {j}: {a} vs transformers {b}"
                );
            }
            let mask = row(&scores.mask, r as i64, pr.response.len());
            assert!(mask.iter().all(|&m| m == 1.0));
            let ent = row(&scores.entropy, r as i64, pr.response.len());
            assert!(ent.iter().all(|&e| e.is_finite() && e >= 0.0));
        }
        // The frozen tower's features of the two image prompts are kept, and
        // scoring again from them gives the same log-probs.
        assert_eq!(p.cached_features(), 2, "{name}");
        let again = tch::no_grad(|| p.response_scores(&batch, 1.0))?;
        assert!(
            again.logprobs.equal(&scores.logprobs),
            "{name}: cached features differ"
        );
        // Padding after the sibling's 2 tokens scores 0.
        let tail: Vec<f32> = Vec::try_from(scores.logprobs.get(3).narrow(0, 2, 1))?;
        assert_eq!(tail, vec![0.0]);
    }
    Ok(())
}

#[test]
fn unbound_or_conflicting_images_are_errors() {
    let name = MODELS[0];
    let g = golden(name);
    let p = policy(name, false);
    let prompt = ids(&g["text_image.ids"]);
    let batch = vec![PromptResponse {
        image_key: 0,
        prompt: prompt.clone(),
        response: ids(&g["text_image.response"]),
    }];
    let err = p.response_scores(&batch, 1.0).unwrap_err().to_string();
    assert!(err.contains("no images were bound"), "{err}");
    p.bind_images(0, &prompt, Arc::from(vec![image(&g, 0)]))
        .unwrap();
    p.bind_images(0, &prompt, Arc::from(vec![image(&g, 0)]))
        .unwrap();
    let err = p
        .bind_images(0, &prompt, Arc::from(vec![image(&g, 1)]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("different images"), "{err}");
    p.clear_images();
    assert_eq!(p.bound_prompts(), 0);
}

/// Two rows with equal prompt ids but different pictures (two rendered
/// problems of the same size): each row's `image_key` picks its own images,
/// and each row scores as it does alone.
#[test]
fn image_keys_tell_equal_prompts_apart() {
    let name = MODELS[0];
    let g = golden(name);
    let p = policy(name, false);
    let prompt = ids(&g["text_image.ids"]);
    let response = ids(&g["text_image.response"]);
    let row = |key: u64| PromptResponse {
        image_key: key,
        prompt: prompt.clone(),
        response: response.clone(),
    };
    // The same size as image 0 (so the same prompt ids), other pixels.
    let mut other = image(&g, 0);
    other.pixel_values.iter_mut().for_each(|v| *v = -*v);
    let pictures = [image(&g, 0), other];
    let alone = |key: u64, picture: usize| -> Tensor {
        p.clear_images();
        p.bind_images(key, &prompt, Arc::from(vec![pictures[picture].clone()]))
            .unwrap();
        tch::no_grad(|| p.response_scores(&[row(key)], 1.0))
            .unwrap()
            .logprobs
    };
    let first = alone(1, 0);
    let second = alone(2, 1);
    p.clear_images();
    p.bind_images(1, &prompt, Arc::from(vec![pictures[0].clone()]))
        .unwrap();
    p.bind_images(2, &prompt, Arc::from(vec![pictures[1].clone()]))
        .unwrap();
    assert_eq!(p.bound_prompts(), 2);
    let both = tch::no_grad(|| p.response_scores(&[row(1), row(2), row(1)], 1.0))
        .unwrap()
        .logprobs;
    let close = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]) < 1e-5;
    assert!(close(&both.get(0), &first.get(0)));
    assert!(close(&both.get(1), &second.get(0)));
    assert!(close(&both.get(2), &first.get(0)));
    // Different pictures give different scores (else the test could not fail).
    assert!(!close(&first.get(0), &second.get(0)));
    let err = tch::no_grad(|| p.response_scores(&[row(3)], 1.0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("image key 3"), "{err}");
}

fn weights(p: &VlPolicy) -> HashMap<String, Tensor> {
    p.var_store()
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach().copy()))
        .collect()
}

/// Names whose tensors changed between `a` and `b`.
fn moved(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> Vec<String> {
    let mut out: Vec<String> = a
        .iter()
        .filter(|(k, v)| !v.equal(&b[*k]))
        .map(|(k, _)| k.clone())
        .collect();
    out.sort();
    out
}

/// One RLSD train step over the golden samples; the parameter names that moved.
fn one_step(name: &str, train_vision: bool) -> Result<(Vec<String>, Vec<String>)> {
    let g = golden(name);
    let p = policy(name, train_vision);
    let samples = golden_samples(&p, &g);
    let scores = tch::no_grad(|| p.response_scores(&samples, 1.0))?;
    let sampling: Vec<Vec<f32>> = samples
        .iter()
        .enumerate()
        .map(|(r, s)| row(&scores.logprobs, r as i64, s.response.len()))
        .collect();
    // A teacher that likes every second token more.
    let teacher: Vec<Vec<f32>> = sampling
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(j, x)| x + if j % 2 == 0 { 0.5 } else { -0.5 })
                .collect()
        })
        .collect();
    let batch = TrainBatch {
        samples,
        sampling_logprobs: sampling,
        teacher_logprobs: Some(teacher),
        teacher_neg_logprobs: None,
        ref_logprobs: None,
        teacher_support: None,
        advantages: vec![1.0, -1.0, 0.5],
        correct: None,
        step: 1,
        lambda: 0.5,
        lr: 1e-2,
        temperature: 1.0,
        response_mask: None,
    };
    let optim = OptimConfig {
        lr: 1e-2,
        micro_batch_size: 2,
        ..OptimConfig::default()
    };
    let mut trainer = Trainer::new(p, AlgoConfig::with_algo(Algo::Rlsd), optim)?;
    let in_optimizer: Vec<String> = trainable_by_name(trainer.policy.var_store())
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let before = weights(&trainer.policy);
    let stats = train_step(&mut trainer, &batch)?;
    assert!(!stats.skipped, "{name}: step skipped: {stats:?}");
    assert!(stats.loss.is_finite());
    Ok((moved(&before, &weights(&trainer.policy)), in_optimizer))
}

#[test]
fn a_train_step_moves_the_language_weights_and_a_frozen_tower_stays() -> Result<()> {
    for name in MODELS {
        let (moved, in_optimizer) = one_step(name, false)?;
        assert!(
            in_optimizer.iter().all(|k| !k.starts_with("visual.")),
            "{name}: a frozen tower's parameter is in the optimizer"
        );
        assert!(
            moved.iter().all(|k| !k.starts_with("visual.")),
            "{name}: frozen tower moved: {moved:?}"
        );
        assert!(
            moved.iter().any(|k| k.starts_with("model.layers.")),
            "{name}: no decoder layer moved: {moved:?}"
        );
    }
    Ok(())
}

#[test]
fn train_vision_moves_the_tower_too() -> Result<()> {
    for name in MODELS {
        let (moved, in_optimizer) = one_step(name, true)?;
        let trainable = policy(name, true);
        let g = golden(name);
        let batch = golden_samples(&trainable, &g);
        tch::no_grad(|| trainable.response_scores(&batch, 1.0))?;
        assert_eq!(
            trainable.cached_features(),
            0,
            "a trainable tower keeps no features"
        );
        assert!(in_optimizer.iter().any(|k| k.starts_with("visual.")));
        assert!(
            moved.iter().any(|k| k.starts_with("visual.blocks.")),
            "{name}: trainable tower did not move: {moved:?}"
        );
        assert!(moved.iter().any(|k| k.starts_with("model.layers.")));
    }
    Ok(())
}

#[test]
fn a_groups_responses_equal_one_prompt_at_a_time_sampling() -> Result<()> {
    use rand::SeedableRng;
    use rlsd::model::sampling::SamplingParams;
    use rlsd::model::vision::VisionInput;
    for name in MODELS {
        let g = golden(name);
        let p = policy(name, false);
        let model = &p.model.model;
        let prompt = ids(&g["two_images.ids"]);
        let images = VisionInput::from_processed(&case_images(&g, "two_images"), Device::Cpu)?;
        let params = SamplingParams {
            greedy: false,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            presence_penalty: 0.0,
        };
        let seeds = [3u64, 11, 12];
        let group = model.generate_group(&prompt, Some(&images), 5, &[2], &params, &seeds)?;
        for (r, &seed) in seeds.iter().enumerate() {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let (tokens, lps) = tch::no_grad(|| {
                model.generate(&prompt, Some(&images), 5, &[2], &params, &mut rng)
            })?;
            assert_eq!(group[r].tokens, tokens, "{name} row {r}");
            for (a, b) in group[r].logprobs.iter().zip(&lps) {
                assert!((a - b).abs() < 1e-4, "{name} row {r}: {a} vs {b}");
            }
            assert_eq!(group[r].stopped_on_eos, tokens.last() == Some(&2));
        }
        assert_ne!(
            group[0].tokens, group[1].tokens,
            "{name}: seeds give one response"
        );
    }
    Ok(())
}

/// A response that sampled `<|image_pad|>` and `<|video_pad|>` (text tokens
/// once generated) scores as cached decoding fed them: the same log-probs.
#[test]
fn sampled_image_and_video_pads_score_as_decoding_fed_them() -> Result<()> {
    use rlsd::model::vision::VisionInput;
    for name in MODELS {
        let g = golden(name);
        let p = policy(name, false);
        let model = &p.model.model;
        let cfg = &model.config;
        let prompt = ids(&g["text_image.ids"]);
        let response = vec![69, cfg.image_token_id, cfg.video_token_id, 98, 135];
        p.bind_images(0, &prompt, Arc::from(case_images(&g, "text_image")))?;
        let batch = vec![PromptResponse {
            image_key: 0,
            prompt: prompt.clone(),
            response: response.clone(),
        }];
        let scores = tch::no_grad(|| p.response_scores(&batch, 1.0))?;
        let got = row(&scores.logprobs, 0, response.len());
        let images = VisionInput::from_processed(&case_images(&g, "text_image"), Device::Cpu)?;
        let want: Vec<f32> = tch::no_grad(|| -> Result<Vec<f32>> {
            let mut cache = model.lm.new_cache(64);
            let ids_t = Tensor::from_slice(&prompt).view([1, -1]);
            let (mut logits, deltas) = model.prefill(&ids_t, None, Some(&images), &mut cache)?;
            let mut out = Vec::new();
            for &tok in &response {
                let lp = logits.log_softmax(-1, Kind::Float).double_value(&[0, tok]);
                out.push(lp as f32);
                let pos = Tensor::from_slice(&[cache.len() + deltas[0]]).view([1, 1]);
                let step = Tensor::from_slice(&[tok]).view([1, 1]);
                logits = model.decode(&step, &pos, None, &mut cache)?;
            }
            Ok(out)
        })?;
        for (j, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() < 1e-4,
                "{name} token {j}: {a} vs decoding {b}"
            );
        }
    }
    Ok(())
}
