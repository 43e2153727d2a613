//! `train_step` on a toy policy (a bigram logit table in a VarStore): learning
//! direction, micro-batching equals one big batch, NaN guards, optimizer state
//! round trip, input checks.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rlsd::optim::OptimConfig;
use rlsd::policy::{Policy, PromptResponse, ResponseScores};
use rlsd::rlsd::{group_advantages, Algo, AlgoConfig, LossAgg};
use rlsd::train::{train_step, TrainBatch, Trainer};
use tch::{nn, Device, Kind, Tensor};

const VOCAB: i64 = 8;

/// `P(y_t | y_<t) = softmax(table[y_{t-1}] / temperature)`, the previous token
/// of the first response token being the prompt's last token.
#[derive(Debug)]
struct Bigram {
    vs: nn::VarStore,
    table: Tensor,
    /// Multiply logits by NaN, to exercise the non-finite-loss guard.
    poison: bool,
}

impl Bigram {
    fn new(seed: u64) -> Self {
        // A private RNG: tch's global one is shared by the test threads.
        let mut rng = StdRng::seed_from_u64(seed);
        let init: Vec<f32> = (0..VOCAB * VOCAB)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        Self::from_table(&init)
    }

    fn from_table(init: &[f32]) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let table = vs
            .root()
            .var_copy("table", &Tensor::from_slice(init).view([VOCAB, VOCAB]));
        Bigram {
            vs,
            table,
            poison: false,
        }
    }

    fn weights(&self) -> Vec<f32> {
        Vec::<f32>::try_from(self.table.detach().flatten(0, -1)).unwrap()
    }

    /// Detached per-token log-probs of each response.
    fn logprobs(&self, batch: &[PromptResponse]) -> Vec<Vec<f32>> {
        let s = tch::no_grad(|| self.response_scores(batch, 1.0)).unwrap();
        batch
            .iter()
            .enumerate()
            .map(|(i, pr)| {
                let row = Vec::<f32>::try_from(s.logprobs.get(i as i64)).unwrap();
                row[..pr.response.len()].to_vec()
            })
            .collect()
    }
}

impl Policy for Bigram {
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    fn response_scores(
        &self,
        batch: &[PromptResponse],
        temperature: f64,
    ) -> rlsd::Result<ResponseScores> {
        let len = batch.iter().map(|s| s.response.len()).max().unwrap_or(0) as i64;
        let (mut lps, mut ents, mut masks) = (Vec::new(), Vec::new(), Vec::new());
        for s in batch {
            let n = s.response.len() as i64;
            let mut prev = vec![*s.prompt.last().unwrap()];
            prev.extend_from_slice(&s.response[..s.response.len().saturating_sub(1)]);
            prev.truncate(s.response.len());
            let mut logits = self.table.index_select(0, &Tensor::from_slice(&prev)) / temperature;
            if self.poison {
                logits *= f64::NAN;
            }
            let logp = logits.log_softmax(-1, Kind::Float);
            let tok = Tensor::from_slice(&s.response).unsqueeze(-1);
            let lp = logp.gather(-1, &tok, false).squeeze_dim(-1);
            let ent = -(logp.exp() * &logp).sum_dim_intlist(-1, false, Kind::Float);
            let pad = Tensor::zeros([len - n], (Kind::Float, Device::Cpu));
            lps.push(Tensor::cat(&[lp, pad.shallow_clone()], 0));
            ents.push(Tensor::cat(&[ent, pad.shallow_clone()], 0));
            masks.push(Tensor::cat(
                &[Tensor::ones([n], (Kind::Float, Device::Cpu)), pad],
                0,
            ));
        }
        Ok(ResponseScores {
            logprobs: Tensor::stack(&lps, 0),
            entropy: Tensor::stack(&ents, 0),
            mask: Tensor::stack(&masks, 0),
        })
    }
}

fn sample(prompt: &[i64], response: &[i64]) -> PromptResponse {
    PromptResponse {
        image_key: 0,
        prompt: prompt.to_vec(),
        response: response.to_vec(),
    }
}

/// Two groups of four responses of varied lengths; one correct in group 0,
/// three in group 1.
fn samples() -> (Vec<PromptResponse>, Vec<f32>) {
    let s = vec![
        sample(&[1, 2], &[3, 4, 5]),
        sample(&[1, 2], &[6, 6]),
        sample(&[1, 2], &[7, 1, 2, 3, 4]),
        sample(&[1, 2], &[0]),
        sample(&[5], &[2, 2, 2, 2]),
        sample(&[5], &[1, 3]),
        sample(&[5], &[4, 4, 0, 1, 7, 7]),
        sample(&[5], &[6, 5, 4]),
    ];
    let rewards = vec![1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0];
    (s, rewards)
}

/// A batch scored by `policy`, with a teacher that sees a privileged prompt
/// token (a different last prompt token, hence different log-probs), and
/// sampling log-probs made slightly stale so the PPO clip has work to do.
fn batch_for(policy: &Bigram, lambda: f64, stale: f32) -> TrainBatch {
    let (samples, rewards) = samples();
    let teacher_view: Vec<PromptResponse> = samples
        .iter()
        .map(|s| sample(&[*s.prompt.last().unwrap() + 1], &s.response))
        .collect();
    let neg_view: Vec<PromptResponse> = samples.iter().map(|s| sample(&[0], &s.response)).collect();
    let mut sampling = policy.logprobs(&samples);
    for (i, row) in sampling.iter_mut().enumerate() {
        for (j, x) in row.iter_mut().enumerate() {
            *x += stale * (((i * 7 + j * 3) % 5) as f32 - 2.0);
        }
    }
    let neg = policy.logprobs(&neg_view);
    TrainBatch {
        teacher_logprobs: Some(policy.logprobs(&teacher_view)),
        // CEPO: group 0 has wrong responses, group 1 has one (index 6); give
        // every sample of group 0 a negative and leave one of group 1 without.
        teacher_neg_logprobs: Some(
            neg.into_iter()
                .enumerate()
                .map(|(i, r)| (i != 5).then_some(r))
                .collect(),
        ),
        sampling_logprobs: sampling,
        ref_logprobs: None,
        teacher_support: None,
        correct: None,
        advantages: group_advantages(&rewards, 4, true).unwrap(),
        samples,
        step: 1,
        lambda,
        lr: 0.05,
        temperature: 1.0,
        response_mask: None,
    }
}

fn trainer(algo: AlgoConfig, optim: OptimConfig, seed: u64) -> Trainer<Bigram> {
    Trainer::new(Bigram::new(seed), algo, optim).unwrap()
}

fn optim(micro: usize) -> OptimConfig {
    OptimConfig {
        lr: 0.05,
        micro_batch_size: micro,
        ..OptimConfig::default()
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn seq_logprob(policy: &Bigram, s: &PromptResponse) -> f32 {
    policy.logprobs(std::slice::from_ref(s))[0].iter().sum()
}

#[test]
fn training_raises_the_rewarded_response() {
    for algo in [Algo::Grpo, Algo::Rlsd, Algo::Cepo] {
        let mut tr = trainer(AlgoConfig::with_algo(algo), optim(0), 3);
        let (samples, _) = samples();
        let before: Vec<f32> = samples.iter().map(|s| seq_logprob(&tr.policy, s)).collect();
        for step in 1..=15 {
            let mut batch = batch_for(&tr.policy, 0.5, 0.0);
            batch.step = step;
            let stats = train_step(&mut tr, &batch).unwrap();
            assert!(
                !stats.skipped,
                "{algo:?} step {step}: {:?}",
                stats.skip_reason
            );
        }
        let after: Vec<f32> = samples.iter().map(|s| seq_logprob(&tr.policy, s)).collect();
        // Response 0 is the only correct one of group 0; response 6 the only wrong one of group 1.
        assert!(
            after[0] > before[0] + 0.5,
            "{algo:?}: {} -> {}",
            before[0],
            after[0]
        );
        assert!(
            after[6] < before[6] - 0.5,
            "{algo:?}: {} -> {}",
            before[6],
            after[6]
        );
        for i in [1, 3] {
            assert!(after[i] < before[i], "{algo:?} wrong response {i} rose");
        }
    }
}

#[test]
fn micro_batches_equal_one_big_batch() {
    for agg in [LossAgg::TokenMean, LossAgg::SeqMeanTokenMean] {
        for algo in [Algo::Grpo, Algo::Rlsd, Algo::Opsd, Algo::Cepo] {
            let cfg = AlgoConfig {
                loss_agg: agg,
                ..AlgoConfig::with_algo(algo)
            };
            let mut whole = trainer(cfg.clone(), optim(0), 11);
            let batch = batch_for(&whole.policy, 0.7, 0.3);
            let s_whole = train_step(&mut whole, &batch).unwrap();
            for micro in [1, 3, 5] {
                let mut parts = trainer(cfg.clone(), optim(micro), 11);
                let s_parts = train_step(&mut parts, &batch).unwrap();
                let what = format!("{agg:?} {algo:?} micro {micro}");
                assert!((s_whole.loss - s_parts.loss).abs() < 1e-9, "{what}: loss");
                assert!(
                    (s_whole.grad_norm - s_parts.grad_norm).abs() < 1e-6 * s_whole.grad_norm,
                    "{what}: grad norm {} vs {}",
                    s_whole.grad_norm,
                    s_parts.grad_norm
                );
                assert_eq!(s_whole.ratio_clip_frac, s_parts.ratio_clip_frac, "{what}");
                assert_eq!(s_whole.weight_clip_frac, s_parts.weight_clip_frac, "{what}");
                let d = max_abs_diff(&whole.policy.weights(), &parts.policy.weights());
                assert!(d < 1e-6, "{what}: weights differ by {d}");
            }
            // The batch was stale, so the PPO clip fired somewhere.
            assert!(s_whole.ratio_clip_frac > 0.0, "{agg:?} {algo:?}");
        }
    }
}

#[test]
fn non_finite_inputs_skip_the_step() {
    type Poison = fn(&mut TrainBatch);
    let cases: [(&str, Poison); 4] = [
        ("sampling", |b| b.sampling_logprobs[2][1] = f32::NAN),
        ("teacher", |b| {
            b.teacher_logprobs.as_mut().unwrap()[0][0] = f32::NEG_INFINITY
        }),
        ("advantage", |b| b.advantages[4] = f32::INFINITY),
        ("reward", |b| {
            let mut r = vec![1.0; 8];
            r[1] = f32::NAN;
            b.advantages = group_advantages(&r, 4, true).unwrap();
        }),
    ];
    for (name, poison) in cases {
        let mut tr = trainer(AlgoConfig::default(), optim(2), 5);
        let before = tr.policy.weights();
        let mut batch = batch_for(&tr.policy, 0.5, 0.0);
        poison(&mut batch);
        let stats = train_step(&mut tr, &batch).unwrap();
        assert!(stats.skipped, "{name}");
        assert_eq!(stats.skipped_steps, 1, "{name}");
        assert_eq!(tr.skipped_steps, 1, "{name}");
        assert_eq!(tr.optimizer.step_count(), 0, "{name}");
        assert_eq!(tr.policy.weights(), before, "{name}: weights moved");
        // The next clean step trains as usual and the count stays.
        let clean = batch_for(&tr.policy, 0.5, 0.0);
        let stats = train_step(&mut tr, &clean).unwrap();
        assert!(!stats.skipped && stats.skipped_steps == 1, "{name}");
        assert_ne!(tr.policy.weights(), before, "{name}");
    }
}

#[test]
fn non_finite_loss_skips_the_step() {
    let mut tr = trainer(AlgoConfig::default(), optim(3), 6);
    let batch = batch_for(&tr.policy, 0.5, 0.0);
    let before = tr.policy.weights();
    tr.policy.poison = true;
    let stats = train_step(&mut tr, &batch).unwrap();
    assert!(stats.skipped);
    assert!(stats.skip_reason.unwrap().contains("loss"));
    assert_eq!(tr.policy.weights(), before);
    assert_eq!(tr.optimizer.step_count(), 0);
    // Gradients left over from a half-done accumulation are cleared.
    tr.policy.poison = false;
    let mut fresh = trainer(AlgoConfig::default(), optim(3), 6);
    train_step(&mut tr, &batch).unwrap();
    train_step(&mut fresh, &batch).unwrap();
    assert_eq!(tr.policy.weights(), fresh.policy.weights());
}

#[test]
fn optimizer_state_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optim.safetensors");
    let mut a = trainer(AlgoConfig::default(), optim(0), 8);
    for _ in 0..2 {
        let batch = batch_for(&a.policy, 0.5, 0.0);
        train_step(&mut a, &batch).unwrap();
    }
    a.optimizer.save(&path).unwrap();
    let mut b = trainer(AlgoConfig::default(), optim(0), 99);
    b.policy.vs.copy(&a.policy.vs).unwrap();
    b.optimizer.load(&path).unwrap();
    assert_eq!(b.optimizer.step_count(), 2);
    let batch = batch_for(&a.policy, 0.5, 0.0);
    train_step(&mut a, &batch).unwrap();
    train_step(&mut b, &batch).unwrap();
    assert_eq!(a.policy.weights(), b.policy.weights());
    // A state for another model is refused with the tensor's name.
    let mut bad = a.optimizer.state_tensors();
    bad.push((
        "exp_avg.nope".into(),
        Tensor::zeros([1], (Kind::Float, Device::Cpu)),
    ));
    let err = b
        .optimizer
        .load_state_tensors(&bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("exp_avg.nope"), "{err}");
}

#[test]
fn stats_report_the_step() {
    let mut tr = trainer(AlgoConfig::default(), optim(0), 4);
    let batch = batch_for(&tr.policy, 0.5, 0.3);
    let s = train_step(&mut tr, &batch).unwrap();
    assert_eq!(s.algo, "rlsd");
    assert_eq!(s.num_responses, 8);
    assert_eq!(s.num_tokens, 26);
    assert_eq!(s.response_len_max, 6);
    assert!((s.response_len_mean - 26.0 / 8.0).abs() < 1e-12);
    assert!(s.grad_norm > 0.0 && s.entropy > 0.0 && s.delta_abs_mean > 0.0);
    assert!((0.0..=1.0).contains(&s.weight_clip_frac));
    assert!((0.0..=1.0).contains(&s.ratio_clip_frac) && s.ratio_clip_frac > 0.0);
    assert!(s.timings.train_s > 0.0);
    assert_eq!(s.lambda, 0.5);
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains("\"weight_clip_frac\"") && json.contains("\"idle_s\""));
}

#[test]
fn bad_batches_are_errors() {
    let mut tr = trainer(AlgoConfig::default(), optim(0), 2);
    let good = batch_for(&tr.policy, 0.5, 0.0);
    let mut b = good.clone();
    b.sampling_logprobs[3].push(0.0);
    assert!(train_step(&mut tr, &b).is_err());
    let mut b = good.clone();
    b.advantages.pop();
    assert!(train_step(&mut tr, &b).is_err());
    // RLSD needs the teacher unless lambda is 0, where it is exactly GRPO.
    let mut b = good.clone();
    b.teacher_logprobs = None;
    assert!(train_step(&mut tr, &b).is_err());
    b.lambda = 0.0;
    let mut grpo = trainer(AlgoConfig::with_algo(Algo::Grpo), optim(0), 2);
    let s = train_step(&mut tr, &b).unwrap();
    let g = train_step(&mut grpo, &b).unwrap();
    assert_eq!(s.loss, g.loss);
    assert_eq!(tr.policy.weights(), grpo.policy.weights());
    // KL on without reference log-probs.
    let mut kl = trainer(
        AlgoConfig {
            kl_coef: 0.1,
            ..AlgoConfig::default()
        },
        optim(0),
        2,
    );
    assert!(train_step(&mut kl, &good).is_err());
    // Out-of-range config values name the key.
    let err = Trainer::new(
        Bigram::new(1),
        AlgoConfig {
            eps_w: 1.5,
            ..AlgoConfig::default()
        },
        optim(0),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("algo.eps_w"), "{err}");
}

#[test]
fn kl_and_entropy_terms_run_through_the_step() {
    let cfg = AlgoConfig {
        kl_coef: 0.1,
        entropy_coef: 0.01,
        ..AlgoConfig::default()
    };
    let mut tr = trainer(cfg, optim(3), 12);
    let mut plain = trainer(AlgoConfig::default(), optim(3), 12);
    let mut batch = batch_for(&tr.policy, 0.5, 0.0);
    // Reference = the initial policy: KL starts at exactly 0 and grows.
    batch.ref_logprobs = Some(tr.policy.logprobs(&batch.samples));
    let s1 = train_step(&mut tr, &batch).unwrap();
    assert!(s1.kl.abs() < 1e-6, "{}", s1.kl);
    assert!((s1.loss - (s1.pg_loss - 0.01 * s1.entropy)).abs() < 1e-6);
    let p1 = train_step(&mut plain, &batch).unwrap();
    assert_eq!(p1.kl, 0.0);
    // The entropy bonus changes the gradient.
    assert_ne!(tr.policy.weights(), plain.policy.weights());
    let s2 = train_step(&mut tr, &batch).unwrap();
    assert!(s2.kl > 0.0);
    assert!((s2.loss - (s2.pg_loss + 0.1 * s2.kl - 0.01 * s2.entropy)).abs() < 1e-9);
}

/// Two whole train steps (forward, RLSD loss, backward, clip, AdamW) against
/// the PyTorch reference in scripts/rlsd_reference.py, here in micro-batches of 3.
#[test]
fn train_step_matches_pytorch() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rlsd_golden.json"
    );
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let case = &g["train"];
    let f32s = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let rows = |v: &serde_json::Value| -> Vec<Vec<f32>> {
        v.as_array().unwrap().iter().map(f32s).collect()
    };
    let ids = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    assert_eq!(case["vocab"].as_i64().unwrap(), VOCAB);
    let samples: Vec<PromptResponse> = case["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pr| sample(&ids(&pr[0]), &ids(&pr[1])))
        .collect();
    let rewards = f32s(&case["rewards"]);
    let lr = case["lr"].as_f64().unwrap();
    let optim = OptimConfig {
        lr,
        max_grad_norm: case["max_grad_norm"].as_f64().unwrap(),
        micro_batch_size: 3,
        ..OptimConfig::default()
    };
    let mut tr = Trainer::new(
        Bigram::from_table(&f32s(&case["init"])),
        AlgoConfig::default(),
        optim,
    )
    .unwrap();
    let batch = TrainBatch {
        samples,
        sampling_logprobs: rows(&case["sampling"]),
        teacher_logprobs: Some(rows(&case["teacher"])),
        teacher_neg_logprobs: None,
        ref_logprobs: None,
        teacher_support: None,
        correct: None,
        advantages: group_advantages(&rewards, 4, true).unwrap(),
        step: 1,
        lambda: case["lambda"].as_f64().unwrap(),
        lr,
        temperature: case["temperature"].as_f64().unwrap(),
        response_mask: None,
    };
    for (k, want) in case["steps"].as_array().unwrap().iter().enumerate() {
        let s = train_step(&mut tr, &batch).unwrap();
        assert!(!s.skipped);
        let wl = want["loss"].as_f64().unwrap();
        let wn = want["grad_norm"].as_f64().unwrap();
        assert!(
            (s.loss - wl).abs() < 1e-6,
            "step {k}: loss {} vs {wl}",
            s.loss
        );
        assert!(
            (s.grad_norm - wn).abs() < 1e-6,
            "step {k}: grad norm {} vs {wn}",
            s.grad_norm
        );
        assert!(s.grad_norm > tr.optim.max_grad_norm, "clipping exercised");
        let d = max_abs_diff(&tr.policy.weights(), &f32s(&want["table"]));
        eprintln!(
            "step {k}: max |w - w_torch| = {d:e}, loss diff {:e}",
            (s.loss - wl).abs()
        );
        assert!(d < 1e-6, "step {k}: weights differ from PyTorch by {d}");
    }
}
