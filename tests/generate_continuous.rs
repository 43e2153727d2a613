//! Continuous batching, the KV-cache budget and stop strings: every prompt's
//! tokens and log-probs equal those of generating it alone with the same seed
//! stream, however many rows run at once and whenever it was admitted.

use rlsd::model::{
    generate_with, kv_bytes_per_position, prompt_seeds, token_logprobs, Config, GenerateOptions,
    Generation, LoadedModel,
};
use tch::Device;

const MAX_NEW: usize = 24;

fn model() -> LoadedModel {
    LoadedModel::random(Config::tiny(), Device::Cpu, 21).unwrap()
}

/// Uneven prompts, a group of repeats among them (shared prefill).
fn prompts() -> Vec<Vec<i64>> {
    vec![
        vec![7, 8, 9],
        vec![11],
        vec![20, 21, 22, 23, 24, 25, 26],
        vec![7, 8, 9],
        vec![30, 31],
        vec![40, 41, 42, 43, 44],
        vec![7, 8, 9],
        vec![50, 51, 52, 53],
        vec![60],
        vec![33, 34, 35, 36, 37, 38],
    ]
}

/// Sampling with enough stop tokens that rows finish at very different steps.
fn opts() -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: MAX_NEW,
        temperature: 0.9,
        top_k: 40,
        eos_ids: vec![1, 2, 3, 4],
        ..Default::default()
    }
}

/// A budget of exactly `rows` rows of `max_prompt + max_new_tokens` positions.
fn budget(m: &LoadedModel, rows: u64) -> u64 {
    let max_prompt = prompts().iter().map(Vec::len).max().unwrap();
    kv_bytes_per_position(&m.lm) * (max_prompt + MAX_NEW) as u64 * rows
}

fn alone(m: &LoadedModel, o: &GenerateOptions, seeds: &[u64]) -> Vec<Generation> {
    prompts()
        .iter()
        .zip(seeds)
        .map(|(p, &s)| {
            let mut g = generate_with(&m.lm, std::slice::from_ref(p), &[s], o, None).unwrap();
            g.remove(0)
        })
        .collect()
}

fn assert_same(a: &[Generation], b: &[Generation], what: &str) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.tokens, y.tokens, "{what}: prompt {i} tokens");
        assert_eq!(x.stopped_on_eos, y.stopped_on_eos, "{what}: prompt {i}");
        assert_eq!(x.stop_string, y.stop_string, "{what}: prompt {i}");
        for (p, q) in x.logprobs.iter().zip(&y.logprobs) {
            assert!((p - q).abs() < 1e-4, "{what}: prompt {i}: {p} vs {q}");
        }
    }
}

#[test]
fn continuous_batching_equals_one_prompt_at_a_time() {
    let m = model();
    let seeds = prompt_seeds(42, prompts().len());
    for greedy in [false, true] {
        let base = GenerateOptions { greedy, ..opts() };
        let want = alone(&m, &base, &seeds);
        if !greedy {
            // The workload is uneven: some rows stop early, some run to the limit.
            let lens: Vec<usize> = want.iter().map(|g| g.tokens.len()).collect();
            assert!(lens.iter().any(|&l| l < MAX_NEW / 2), "{lens:?}");
            assert!(lens.contains(&MAX_NEW), "{lens:?}");
            assert!(want.iter().any(|g| g.stopped_on_eos));
        }
        // All at once (no budget), then 1, 3 and 7 rows at a time.
        let counts: &[u64] = if greedy { &[0, 3] } else { &[0, 1, 3, 7] };
        for &rows in counts {
            let o = GenerateOptions {
                kv_cache_bytes: if rows == 0 { 0 } else { budget(&m, rows) },
                ..base.clone()
            };
            let got = generate_with(&m.lm, &prompts(), &seeds, &o, None).unwrap();
            assert_same(&got, &want, &format!("greedy={greedy} rows={rows}"));
        }
    }
}

#[test]
fn sampled_logprobs_equal_scored_logprobs_under_a_budget() {
    let m = model();
    let o = GenerateOptions {
        kv_cache_bytes: budget(&m, 3),
        ..opts()
    };
    let seeds = prompt_seeds(5, prompts().len());
    let gens = generate_with(&m.lm, &prompts(), &seeds, &o, None).unwrap();
    let responses: Vec<Vec<i64>> = gens.iter().map(|g| g.tokens.clone()).collect();
    let scored = token_logprobs(&m.lm, &prompts(), &responses, o.temperature).unwrap();
    for (g, s) in gens.iter().zip(&scored) {
        assert_eq!(g.logprobs.len(), s.len());
        for (a, b) in g.logprobs.iter().zip(s) {
            assert!((a - b).abs() < 1e-4, "sampled {a} vs scored {b}");
        }
    }
}

#[test]
fn a_budget_below_one_row_is_refused_with_the_numbers() {
    let m = model();
    let o = GenerateOptions {
        kv_cache_bytes: budget(&m, 1) - 1,
        ..opts()
    };
    let err = generate_with(&m.lm, &prompts(), &prompt_seeds(1, 10), &o, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("kv_cache_bytes"), "{err}");
    // tiny: 2 layers x 2 KV heads x 16 dims x 2 (k, v) x 4 bytes = 512 per position.
    assert!(err.contains("512 bytes per position"), "{err}");
    assert!(err.contains("7 prompt + 24 new"), "{err}");
}

#[test]
fn stop_strings_end_responses_where_the_text_first_contains_them() {
    let m = model();
    // Token t decodes to one letter; "gh" needs tokens 6 then 7, "z" token 25.
    let decode = |ids: &[i64]| -> String {
        ids.iter()
            .map(|&t| char::from(b'a' + (t % 26) as u8))
            .collect()
    };
    let stop = vec!["gh".to_string(), "z".to_string()];
    let seeds = prompt_seeds(9, prompts().len());
    let free = generate_with(&m.lm, &prompts(), &seeds, &opts(), None).unwrap();
    let o = GenerateOptions {
        stop: stop.clone(),
        kv_cache_bytes: budget(&m, 2),
        ..opts()
    };
    let got = generate_with(&m.lm, &prompts(), &seeds, &o, Some(&decode)).unwrap();
    let mut stopped = 0;
    for (f, g) in free.iter().zip(&got) {
        // Same stream: the stopped response is a prefix of the free one.
        assert_eq!(g.tokens[..], f.tokens[..g.tokens.len()]);
        let text = decode(&g.tokens);
        let before = decode(&g.tokens[..g.tokens.len() - 1]);
        match g.stop_string {
            Some(i) => {
                stopped += 1;
                assert!(text.ends_with(&stop[i]), "{text}");
                assert!(
                    !stop.iter().any(|s| before.contains(s.as_str())),
                    "{before}"
                );
                assert!(!g.stopped_on_eos);
            }
            None => {
                assert!(!stop.iter().any(|s| text.contains(s.as_str())), "{text}");
                assert_eq!(g.tokens, f.tokens);
            }
        }
    }
    assert!(
        stopped > 0,
        "no response met a stop string: the test checks nothing"
    );
    // The stopped run equals the same prompts one at a time.
    let want: Vec<Generation> = prompts()
        .iter()
        .zip(&seeds)
        .map(|(p, &s)| {
            generate_with(&m.lm, std::slice::from_ref(p), &[s], &o, Some(&decode))
                .unwrap()
                .remove(0)
        })
        .collect();
    assert_same(&got, &want, "stop strings");
    // Without a tokenizer, stop strings are refused.
    let err = generate_with(&m.lm, &prompts(), &seeds, &o, None).unwrap_err();
    assert!(err.to_string().contains("tokenizer"), "{err}");
}

#[test]
fn bf16_models_budget_half_the_bytes_and_sample_consistent_logprobs() {
    let mut m = model();
    m.vs.bfloat16();
    assert_eq!(m.lm.kind(), tch::Kind::BFloat16);
    // Half of float32's 512 bytes per position: the same budget holds twice the rows.
    assert_eq!(kv_bytes_per_position(&m.lm), 256);
    let o = GenerateOptions {
        kv_cache_bytes: budget(&m, 3),
        ..opts()
    };
    let seeds = prompt_seeds(3, prompts().len());
    let gens = generate_with(&m.lm, &prompts(), &seeds, &o, None).unwrap();
    let responses: Vec<Vec<i64>> = gens.iter().map(|g| g.tokens.clone()).collect();
    let scored = token_logprobs(&m.lm, &prompts(), &responses, o.temperature).unwrap();
    for (g, s) in gens.iter().zip(&scored) {
        assert!(!g.tokens.is_empty() && g.tokens.len() <= MAX_NEW);
        for (a, b) in g.logprobs.iter().zip(s) {
            // bf16 activations: agreement to bf16 rounding, not 1e-4.
            assert!(
                a.is_finite() && (a - b).abs() < 0.1,
                "sampled {a} vs scored {b}"
            );
        }
    }
}
