//! The Rust decoders against transformers' goldens (scripts/make_model_goldens.py):
//! tokenizer, chat template, logits within 1e-4, greedy continuations, and the
//! consistency properties of batching, caching and generation log-probs.

use anyhow::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rlsd::model::{
    generate, generate_with, token_logprobs, ChatMessage, GenerateOptions, LoadedModel,
};
use serde_json::Value;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const MODELS: [&str; 3] = ["llama", "qwen2", "qwen3"];

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

fn golden(name: &str) -> Value {
    let text = std::fs::read_to_string(dir(name).join("golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// One id-list field (`ids`, `greedy`) of every golden prompt.
fn prompt_field(g: &Value, key: &str) -> Vec<Vec<i64>> {
    g["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| ids(&p[key]))
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn greedy(max: usize, eos: Vec<i64>) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: max,
        greedy: true,
        eos_ids: eos,
        ..Default::default()
    }
}

#[test]
fn logits_tokenizer_and_template_match_transformers() -> Result<()> {
    for name in MODELS {
        let g = golden(name);
        let m = LoadedModel::load(&dir(name), Device::Cpu, Kind::Float)?;
        let tok = m.tokenizer.as_ref().expect("fixture has a tokenizer");
        assert_eq!(m.eos_ids(), ids(&g["eos_ids"]), "{name}: eos ids");
        assert_eq!(m.pad_id(), g["pad_id"].as_i64().unwrap(), "{name}: pad id");
        for t in g["texts"].as_array().unwrap() {
            let enc = tok.encode(t["text"].as_str().unwrap(), true)?;
            assert_eq!(enc, ids(&t["ids"]), "{name}: encode {}", t["text"]);
            assert_eq!(tok.decode(&enc, false)?, t["decoded"].as_str().unwrap());
        }
        match g.get("chat") {
            Some(chat) => {
                let msgs: Vec<ChatMessage> = serde_json::from_value(chat["messages"].clone())?;
                let out = tok.apply_chat_template(&msgs, true)?;
                assert_eq!(
                    out,
                    chat["rendered"].as_str().unwrap(),
                    "{name}: chat template"
                );
            }
            None => assert!(!tok.has_chat_template()),
        }
        for p in g["prompts"].as_array().unwrap() {
            let ids = ids(&p["ids"]);
            let want: Vec<Vec<f32>> = serde_json::from_value(p["logits"].clone())?;
            let want = Tensor::from_slice2(&want);
            let x = Tensor::from_slice(&ids).view([1, -1]);
            let got = m.lm.forward_all(&x, None)?.squeeze_dim(0);
            let d = max_abs_diff(&got, &want);
            assert!(d < 1e-4, "{name}: logits differ by {d}");
        }
    }
    Ok(())
}

#[test]
fn greedy_continuations_match_transformers_one_by_one_and_batched() -> Result<()> {
    for name in MODELS {
        let g = golden(name);
        let m = LoadedModel::load(&dir(name), Device::Cpu, Kind::Float)?;
        let prompts: Vec<Vec<i64>> = prompt_field(&g, "ids");
        let want: Vec<Vec<i64>> = prompt_field(&g, "greedy");
        let opts = greedy(12, m.eos_ids());
        let mut rng = StdRng::seed_from_u64(0);
        for (p, w) in prompts.iter().zip(&want) {
            let got = generate(&m.lm, std::slice::from_ref(p), &opts, &mut rng)?;
            assert_eq!(&got[0].tokens, w, "{name}: greedy one-by-one");
        }
        // Prompts of different lengths: left padding must not change anything.
        let batched = generate(&m.lm, &prompts, &opts, &mut rng)?;
        for (b, w) in batched.iter().zip(&want) {
            assert_eq!(&b.tokens, w, "{name}: greedy batched");
            assert_eq!(b.stopped_on_eos, m.eos_ids().contains(w.last().unwrap()));
        }
    }
    Ok(())
}

#[test]
fn rows_stopping_early_do_not_disturb_the_others() -> Result<()> {
    for name in MODELS {
        let g = golden(name);
        let m = LoadedModel::load(&dir(name), Device::Cpu, Kind::Float)?;
        let prompts: Vec<Vec<i64>> = prompt_field(&g, "ids");
        let full: Vec<Vec<i64>> = prompt_field(&g, "greedy");
        // Make the 4th greedy token of prompt 0 a stop token: row 0 stops there,
        // every row stops at its first occurrence, the rest run on unchanged.
        let stop = full[0][3];
        let want: Vec<Vec<i64>> = full
            .iter()
            .map(|f| match f.iter().position(|&t| t == stop) {
                Some(i) => f[..=i].to_vec(),
                None => f.clone(),
            })
            .collect();
        let got = generate(
            &m.lm,
            &prompts,
            &greedy(12, vec![stop]),
            &mut StdRng::seed_from_u64(0),
        )?;
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(&g.tokens, w, "{name}: early stop");
            assert_eq!(g.stopped_on_eos, w.last() == Some(&stop));
            assert_eq!(g.logprobs.len(), g.tokens.len());
        }
        // Row 0 stopped early while another row ran to the limit.
        assert!(got[0].tokens.len() <= 4 && got.iter().any(|g| g.tokens.len() == 12));
    }
    Ok(())
}

#[test]
fn left_padded_forward_equals_unpadded() -> Result<()> {
    let m = LoadedModel::load(&dir("qwen3"), Device::Cpu, Kind::Float)?;
    let seqs: [&[i64]; 3] = [&[5, 9, 17, 3, 44, 8, 2], &[12, 7], &[60, 61, 62, 63]];
    let width = 7;
    let mut ids = vec![];
    let mut mask = vec![];
    for s in seqs {
        ids.extend(std::iter::repeat_n(0, width - s.len()).chain(s.iter().copied()));
        mask.extend(
            std::iter::repeat_n(0i64, width - s.len()).chain(std::iter::repeat_n(1, s.len())),
        );
    }
    let ids = Tensor::from_slice(&ids).view([3, width as i64]);
    let mask = Tensor::from_slice(&mask).view([3, width as i64]);
    let batched = m.lm.forward_all(&ids, Some(&mask))?;
    assert!(
        !bool::try_from(batched.isnan().any())?,
        "padding rows must not produce NaN"
    );
    for (i, s) in seqs.iter().enumerate() {
        let alone =
            m.lm.forward_all(&Tensor::from_slice(s).view([1, -1]), None)?
                .squeeze_dim(0);
        let n = s.len() as i64;
        let rows = batched.get(i as i64).narrow(0, width as i64 - n, n);
        let d = max_abs_diff(&rows, &alone);
        assert!(d < 1e-4, "row {i}: padded vs alone differ by {d}");
    }
    Ok(())
}

#[test]
fn cached_decoding_equals_full_forward() -> Result<()> {
    for name in MODELS {
        let m = LoadedModel::load(&dir(name), Device::Cpu, Kind::Float)?;
        let seq: Vec<i64> = vec![4, 8, 15, 16, 23, 42, 7, 1, 99, 31];
        let full =
            m.lm.forward_all(&Tensor::from_slice(&seq).view([1, -1]), None)?
                .squeeze_dim(0);
        // Prefill 4 tokens, then chunks of 1, 2, 1, 2 (a small cache forces growth).
        let mut cache = m.lm.new_cache(2);
        let mut at = 0usize;
        for chunk in [4usize, 1, 2, 1, 2] {
            let x = Tensor::from_slice(&seq[at..at + chunk]).view([1, -1]);
            let pos =
                Tensor::arange_start(at as i64, (at + chunk) as i64, (Kind::Int64, Device::Cpu))
                    .view([1, -1]);
            let last = m.lm.forward(&x, &pos, None, &mut cache)?.squeeze_dim(0);
            at += chunk;
            let d = max_abs_diff(&last, &full.get(at as i64 - 1));
            assert!(d < 1e-4, "{name}: cached logits at {at} differ by {d}");
        }
        assert_eq!(cache.len(), seq.len() as i64);
    }
    Ok(())
}

#[test]
fn sampled_logprobs_equal_token_logprobs() -> Result<()> {
    for name in MODELS {
        let m = LoadedModel::load(&dir(name), Device::Cpu, Kind::Float)?;
        let prompts: Vec<Vec<i64>> =
            vec![vec![5, 9, 17, 3], vec![12], vec![60, 61, 62, 63, 64, 65]];
        let opts = GenerateOptions {
            max_new_tokens: 10,
            temperature: 0.7,
            top_k: 20,
            top_p: 0.95,
            // Extra stop tokens so that rows finish at different steps.
            eos_ids: [m.eos_ids(), (3..13).collect()].concat(),
            ..Default::default()
        };
        let mut rng = StdRng::seed_from_u64(11);
        let gens = generate(&m.lm, &prompts, &opts, &mut rng)?;
        let responses: Vec<Vec<i64>> = gens.iter().map(|g| g.tokens.clone()).collect();
        let lps = token_logprobs(&m.lm, &prompts, &responses, 0.7)?;
        for (g, lp) in gens.iter().zip(&lps) {
            assert_eq!(g.logprobs.len(), lp.len());
            for (a, b) in g.logprobs.iter().zip(lp) {
                assert!((a - b).abs() < 1e-4, "{name}: sampled {a} vs scored {b}");
            }
        }
        // Same seed, same rollouts.
        let again = generate(&m.lm, &prompts, &opts, &mut StdRng::seed_from_u64(11))?;
        assert_eq!(again, gens);
    }
    Ok(())
}

#[test]
fn half_precision_loads_close_to_float() -> Result<()> {
    let g = golden("qwen2");
    let p = &g["prompts"][0];
    let want: Vec<Vec<f32>> = serde_json::from_value(p["logits"].clone())?;
    let want = Tensor::from_slice2(&want);
    for kind in [Kind::BFloat16, Kind::Half] {
        let m = LoadedModel::load(&dir("qwen2"), Device::Cpu, kind)?;
        assert_eq!(m.lm.kind(), kind);
        let x = Tensor::from_slice(&ids(&p["ids"])).view([1, -1]);
        let got =
            m.lm.forward_all(&x, None)?
                .squeeze_dim(0)
                .to_kind(Kind::Float);
        let d = max_abs_diff(&got, &want);
        let scale = want.abs().max().double_value(&[]);
        assert!(
            d < 0.1 * scale,
            "{kind:?}: logits differ by {d} (scale {scale})"
        );
    }
    Ok(())
}

#[test]
fn shared_prompt_logprobs_equal_token_logprobs() -> Result<()> {
    use rlsd::model::shared_prompt_logprobs;
    for name in MODELS {
        let g = golden(name);
        let m = LoadedModel::load(&dir(name), Device::Cpu, Kind::Float)?;
        let prompts: Vec<Vec<i64>> = prompt_field(&g, "ids");
        let vocab = m.config.vocab_size;
        // Responses of lengths 0, 1 and several, from the prompts' own tokens.
        let responses: Vec<Vec<i64>> = vec![
            vec![],
            vec![prompts[0][0]],
            prompts[1].iter().rev().copied().collect(),
            (0..9).map(|i| (i * 7 + 3) % vocab).collect(),
        ];
        for prompt in &prompts {
            let same: Vec<Vec<i64>> = responses.iter().map(|_| prompt.clone()).collect();
            for t in [1.0, 0.7] {
                let want = token_logprobs(&m.lm, &same, &responses, t)?;
                let got = shared_prompt_logprobs(&m.lm, prompt, &responses, t)?;
                assert_eq!(got.len(), want.len());
                for (a, b) in got.iter().zip(&want) {
                    assert_eq!(a.len(), b.len(), "{name}: lengths");
                    for (x, y) in a.iter().zip(b) {
                        assert!((x - y).abs() < 1e-5, "{name} T={t}: {x} vs {y}");
                    }
                }
            }
        }
        // Mixed prompts, interleaved: each response keeps its own prompt's scores.
        let mixed_p: Vec<Vec<i64>> = (0..6).map(|i| prompts[i % prompts.len()].clone()).collect();
        let mixed_r: Vec<Vec<i64>> = (0..6)
            .map(|i| responses[i % responses.len()].clone())
            .collect();
        let want = token_logprobs(&m.lm, &mixed_p, &mixed_r, 1.0)?;
        let got = rlsd::model::token_logprobs_by_prompt(&m.lm, &mixed_p, &mixed_r, 1.0)?;
        for (a, b) in got.iter().zip(&want) {
            assert_eq!(a.len(), b.len(), "{name}: lengths");
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-5, "{name} mixed: {x} vs {y}");
            }
        }
        assert!(shared_prompt_logprobs(&m.lm, &[], &responses, 1.0).is_err());
        assert!(shared_prompt_logprobs(&m.lm, &prompts[0], &[vec![vocab]], 1.0).is_err());
    }
    Ok(())
}

#[test]
fn repeated_prompts_share_a_prefill_without_changing_generation() -> Result<()> {
    for name in MODELS {
        let g = golden(name);
        let m = LoadedModel::load(&dir(name), Device::Cpu, Kind::Float)?;
        let p: Vec<Vec<i64>> = prompt_field(&g, "ids");
        // Groups as the sampler builds them, plus an interleaved repeat.
        let rows = vec![
            p[0].clone(),
            p[0].clone(),
            p[1].clone(),
            p[0].clone(),
            p[1].clone(),
        ];
        let opts = greedy(10, m.eos_ids());
        let mut rng = StdRng::seed_from_u64(0);
        let batched = generate(&m.lm, &rows, &opts, &mut rng)?;
        for (row, got) in rows.iter().zip(&batched) {
            let alone = generate(&m.lm, std::slice::from_ref(row), &opts, &mut rng)?;
            assert_eq!(got.tokens, alone[0].tokens, "{name}: tokens");
            for (a, b) in got.logprobs.iter().zip(&alone[0].logprobs) {
                assert!((a - b).abs() < 1e-4, "{name}: {a} vs {b}");
            }
        }
        // Sampling: each row draws from its own seeded stream, so a row
        // sampled in the batch (sharing a prefill with its repeats) draws the
        // same tokens as the row sampled alone with its seed.
        let sample = GenerateOptions {
            max_new_tokens: 10,
            eos_ids: m.eos_ids(),
            ..Default::default()
        };
        let seeds: Vec<u64> = (0..rows.len() as u64).map(|i| 1000 + 7 * i).collect();
        let together = generate_with(&m.lm, &rows, &seeds, &sample, None)?;
        for (i, (row, got)) in rows.iter().zip(&together).enumerate() {
            let alone = generate_with(
                &m.lm,
                std::slice::from_ref(row),
                &seeds[i..=i],
                &sample,
                None,
            )?;
            assert_eq!(
                got.tokens, alone[0].tokens,
                "{name} row {i}: sampled tokens"
            );
            for (a, b) in got.logprobs.iter().zip(&alone[0].logprobs) {
                assert!((a - b).abs() < 1e-4, "{name} row {i}: {a} vs {b}");
            }
        }
        // The two rows of p[0] at different seeds are different draws: the
        // seeds, not the batch position, decide.
        assert_ne!(
            together[0].tokens, together[1].tokens,
            "{name}: seeds ignored"
        );
    }
    Ok(())
}
