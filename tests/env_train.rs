//! Token accounting of multi-turn episodes in the train step: the
//! environment's tokens inside a response (tool results, observations) are
//! in the context but get no loss, no advantage and no credit, under every
//! algorithm. Checked on the tiny transformer with two-turn episodes built
//! with `env::Episode`:
//!
//! - the update is bit-identical when the environment tokens' sampling,
//!   teacher, CEPO-negative, reference and teacher-support values are
//!   replaced by arbitrary ones (so they cannot matter);
//! - `Ahat_t`, `delta_t`, the per-token loss and the gradient of the loss
//!   with respect to the policy's log-probs are exactly 0 there;
//! - the loss normaliser counts the model's tokens only;
//! - a mask of all ones is bit-identical to no mask.

use rlsd::env::{Episode, GivenKind};
use rlsd::model::{teacher_support, token_logprobs, Config, LoadedModel};
use rlsd::optim::OptimConfig;
use rlsd::policy::{Policy, PromptResponse};
use rlsd::rlsd::{Algo, AlgoConfig, LossAgg, OpsdLoss};
use rlsd::train::{distill_loss, micro_batch_loss, train_step, TrainBatch, Trainer};
use tch::{Device, Kind, Tensor};

const T: f64 = 1.0;

/// An episode's model turns and the environment's segments between them.
type Shape<'a> = (&'a [&'a [i64]], &'a [&'a [i64]]);

fn model(seed: u64) -> LoadedModel {
    LoadedModel::random(Config::tiny(), Device::Cpu, seed).unwrap()
}

/// Four episodes of one prompt group: two-turn episodes (model turn, tool
/// result, model turn), one with an observation too, and a single-turn one.
/// Returns the episodes, their sampling log-probs taken from `m`.
fn episodes(m: &LoadedModel) -> Vec<Episode> {
    let prompt = vec![5i64, 9, 11];
    // (turns, given segments between them)
    let shapes: [Shape; 4] = [
        (&[&[12, 13, 14], &[15, 16]], &[&[40, 41, 42]]),
        (&[&[17, 18], &[19, 20, 21], &[22]], &[&[43, 44], &[45]]),
        (&[&[23, 24, 25, 26]], &[]),
        (&[&[27], &[28, 29]], &[&[46, 47, 48, 49]]),
    ];
    shapes
        .iter()
        .map(|(turns, given)| {
            let mut ep = Episode::new();
            ep.push_given(GivenKind::Prompt, prompt.clone());
            for (k, turn) in turns.iter().enumerate() {
                if k > 0 {
                    let kind = if k % 2 == 1 {
                        GivenKind::ToolResult
                    } else {
                        GivenKind::Observation
                    };
                    ep.push_given(kind, given[k - 1].to_vec());
                }
                // The sampler's log-probs of this turn given everything before it.
                let ctx = ep.token_ids();
                let lps = token_logprobs(&m.lm, &[ctx], &[turn.to_vec()], T).unwrap();
                ep.push_generated(turn.to_vec(), lps[0].clone(), 0).unwrap();
            }
            ep
        })
        .collect()
}

/// The train batch of `eps`, with a teacher (privileged tokens 60, 61 after
/// the prompt), a CEPO negative (token 62), reference log-probs and the
/// teacher's top-8 support, all scored on the same multi-turn trajectory.
fn batch(m: &LoadedModel, eps: &[Episode], masked: bool) -> TrainBatch {
    let prompts: Vec<Vec<i64>> = eps
        .iter()
        .map(|e| e.token_ids()[..e.prompt_len()].to_vec())
        .collect();
    let responses: Vec<Vec<i64>> = eps.iter().map(Episode::response_ids).collect();
    let with = |extra: &[i64]| -> Vec<Vec<i64>> {
        prompts
            .iter()
            .map(|p| [p.as_slice(), extra].concat())
            .collect()
    };
    let teacher_prompts = with(&[60, 61]);
    let teacher = token_logprobs(&m.lm, &teacher_prompts, &responses, T).unwrap();
    let neg = token_logprobs(&m.lm, &with(&[62]), &responses, T).unwrap();
    let reference = token_logprobs(&m.lm, &with(&[]), &responses, T).unwrap();
    let support = teacher_support(&m.lm, &teacher_prompts, &responses, T, 8).unwrap();
    TrainBatch {
        samples: prompts
            .into_iter()
            .zip(responses)
            .map(|(prompt, response)| PromptResponse {
                prompt,
                response,
                image_key: 0,
            })
            .collect(),
        sampling_logprobs: eps
            .iter()
            .map(Episode::response_sampling_logprobs)
            .collect(),
        teacher_logprobs: Some(teacher),
        teacher_neg_logprobs: Some(
            neg.into_iter()
                .enumerate()
                .map(|(i, r)| (i != 2).then_some(r))
                .collect(),
        ),
        ref_logprobs: Some(reference),
        teacher_support: Some(support),
        advantages: vec![1.2, -0.4, 0.6, -1.4],
        correct: None,
        step: 1,
        lambda: 0.5,
        lr: 1e-2,
        temperature: T,
        response_mask: masked.then(|| eps.iter().map(Episode::response_loss_mask).collect()),
    }
}

/// `b` with every environment token's per-token inputs replaced by
/// arbitrary values (including a NaN in the sampling log-probs).
fn scrambled(b: &TrainBatch) -> TrainBatch {
    let mask = b.response_mask.clone().unwrap();
    let mut out = b.clone();
    let mut k = 0u32;
    let mut junk = || {
        k += 1;
        -0.37 * k as f32 - 5.0 * (k % 3) as f32
    };
    let mut scramble = |rows: &mut Vec<Vec<f32>>| {
        for (row, m) in rows.iter_mut().zip(&mask) {
            for (x, &keep) in row.iter_mut().zip(m) {
                if keep == 0.0 {
                    *x = junk();
                }
            }
        }
    };
    scramble(&mut out.sampling_logprobs);
    scramble(out.teacher_logprobs.as_mut().unwrap());
    scramble(out.ref_logprobs.as_mut().unwrap());
    for (row, m) in out
        .teacher_neg_logprobs
        .as_mut()
        .unwrap()
        .iter_mut()
        .zip(&mask)
    {
        if let Some(row) = row {
            for (x, &keep) in row.iter_mut().zip(m) {
                if keep == 0.0 {
                    *x += 3.5;
                }
            }
        }
    }
    for (sup, m) in out.teacher_support.as_mut().unwrap().iter_mut().zip(&mask) {
        for (j, &keep) in m.iter().enumerate() {
            if keep == 0.0 {
                for x in &mut sup.logprobs[j * sup.k..(j + 1) * sup.k] {
                    *x -= 1.25;
                }
            }
        }
    }
    // An environment token's sampling log-prob is never read, even a NaN.
    let (i, j) = first_env_token(&mask);
    out.sampling_logprobs[i][j] = f32::NAN;
    out
}

fn first_env_token(mask: &[Vec<f32>]) -> (usize, usize) {
    mask.iter()
        .enumerate()
        .find_map(|(i, r)| r.iter().position(|&x| x == 0.0).map(|j| (i, j)))
        .unwrap()
}

/// The configurations covered: the six algorithms, plus the distribution
/// forms of OPSD (top-k support through the vocabulary hook), the k3 KL
/// term and seq-mean-token-mean.
fn configs() -> Vec<(String, AlgoConfig)> {
    let with = |algo: Algo, f: &dyn Fn(&mut AlgoConfig)| {
        let mut c = AlgoConfig::with_algo(algo);
        f(&mut c);
        c
    };
    vec![
        ("grpo".into(), with(Algo::Grpo, &|_| {})),
        ("rlsd".into(), with(Algo::Rlsd, &|_| {})),
        ("opsd".into(), with(Algo::Opsd, &|_| {})),
        ("sdpo".into(), with(Algo::Sdpo, &|_| {})),
        (
            "grpo+opsd token-kl".into(),
            with(Algo::GrpoOpsd, &|c| c.opsd_loss = OpsdLoss::TokenKl),
        ),
        ("cepo".into(), with(Algo::Cepo, &|_| {})),
        (
            "opsd kl top-8".into(),
            with(Algo::Opsd, &|c| c.opsd_loss = OpsdLoss::Kl),
        ),
        (
            "grpo+opsd jsd top-8".into(),
            with(Algo::GrpoOpsd, &|c| c.opsd_loss = OpsdLoss::Jsd),
        ),
        (
            "rlsd seq-mean-token-mean kl".into(),
            with(Algo::Rlsd, &|c| {
                c.loss_agg = LossAgg::SeqMeanTokenMean;
                c.kl_coef = 0.1;
            }),
        ),
    ]
}

/// The batch as `cfg` reads it: the teacher support only where the update
/// needs a distribution (otherwise the step would take the vocabulary path
/// for nothing).
fn for_cfg(b: &TrainBatch, cfg: &AlgoConfig) -> TrainBatch {
    let mut b = b.clone();
    if !(cfg.algo.distills() && cfg.opsd_loss.needs_distribution()) {
        b.teacher_support = None;
    }
    b
}

/// The weights after one train step of a fresh copy of model seed 7.
fn step_weights(cfg: &AlgoConfig, b: &TrainBatch) -> Vec<(String, Tensor)> {
    step_weights_with(cfg, b, OptimConfig::default())
}

/// [`step_weights`] under `optim` (micro-batching).
fn step_weights_with(
    cfg: &AlgoConfig,
    b: &TrainBatch,
    optim: OptimConfig,
) -> Vec<(String, Tensor)> {
    let mut tr = Trainer::new(model(7), cfg.clone(), optim).unwrap();
    let stats = train_step(&mut tr, &for_cfg(b, cfg)).unwrap();
    assert!(!stats.skipped, "{:?}", stats.skip_reason);
    let mut vars: Vec<(String, Tensor)> = tr.policy.var_store().variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

fn assert_same_weights(name: &str, a: &[(String, Tensor)], b: &[(String, Tensor)]) {
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{name}: {na} differs");
    }
}

#[test]
fn episode_response_view_is_the_hand_assembled_one() {
    let m = model(7);
    let eps = episodes(&m);
    let e = &eps[0];
    assert_eq!(e.prompt_len(), 3);
    assert_eq!(e.response_ids(), vec![12, 13, 14, 40, 41, 42, 15, 16]);
    assert_eq!(
        e.response_loss_mask(),
        vec![1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    );
    // The sampling log-probs of the second turn are those of the whole
    // trajectory (tool result in context), and 0 on the tool's tokens.
    let whole = token_logprobs(&m.lm, &[vec![5, 9, 11]], &[e.response_ids()], T).unwrap();
    let lps = e.response_sampling_logprobs();
    for (j, (&a, &b)) in lps.iter().zip(&whole[0]).enumerate() {
        if e.response_loss_mask()[j] == 1.0 {
            assert!((a - b).abs() < 1e-5, "token {j}: {a} vs {b}");
        } else {
            assert_eq!(a, 0.0);
        }
    }
}

#[test]
fn environment_tokens_cannot_change_the_update() {
    let m = model(7);
    let eps = episodes(&m);
    let b = batch(&m, &eps, true);
    let s = scrambled(&b);
    for (name, cfg) in configs() {
        let a = step_weights(&cfg, &b);
        let z = step_weights(&cfg, &s);
        assert_same_weights(&name, &a, &z);
        // And the step did move the weights.
        let before = step_weights(
            &cfg,
            &TrainBatch {
                lr: 0.0,
                ..b.clone()
            },
        );
        assert!(
            a.iter().zip(&before).any(|((_, x), (_, y))| !x.equal(y)),
            "{name}: the step changed nothing"
        );
    }
}

#[test]
fn an_all_ones_mask_is_bit_identical_to_no_mask() {
    let m = model(7);
    // Single-turn episodes: no environment tokens.
    let eps: Vec<Episode> = [
        vec![12i64, 13, 14],
        vec![15, 16],
        vec![17, 18, 19, 20],
        vec![21],
    ]
    .into_iter()
    .map(|r| {
        let lps = token_logprobs(&m.lm, &[vec![5, 9, 11]], std::slice::from_ref(&r), T).unwrap();
        Episode::single_turn(vec![5, 9, 11], r, lps[0].clone(), 0).unwrap()
    })
    .collect();
    let with = batch(&m, &eps, true);
    assert!(with
        .response_mask
        .as_ref()
        .unwrap()
        .iter()
        .flatten()
        .all(|&x| x == 1.0));
    let without = TrainBatch {
        response_mask: None,
        ..with.clone()
    };
    assert_eq!(with.loss_norm(), without.loss_norm());
    for (name, cfg) in configs() {
        assert_same_weights(
            &name,
            &step_weights(&cfg, &with),
            &step_weights(&cfg, &without),
        );
    }
}

#[test]
fn environment_tokens_get_no_credit_loss_or_gradient() {
    let m = model(7);
    let eps = episodes(&m);
    let b = scrambled(&batch(&m, &eps, true));
    let mask = b.response_mask.clone().unwrap();
    let generated: usize = eps.iter().map(Episode::generated_len).sum();
    let norm = b.loss_norm();
    assert_eq!(norm.total_tokens, generated as f64);
    assert_eq!(norm.total_seqs, 4.0);
    let len = b.samples.iter().map(|s| s.response.len()).max().unwrap();
    // The policy's current log-probs: the sampling ones with the
    // environment tokens' set to an arbitrary finite value.
    let mut flat = vec![0f64; 4 * len];
    for (i, row) in b.sampling_logprobs.iter().enumerate() {
        for (j, &x) in row.iter().enumerate() {
            flat[i * len + j] = if mask[i][j] == 1.0 {
                f64::from(x) - 0.05
            } else {
                -2.5
            };
        }
    }
    for (name, cfg) in configs() {
        if cfg.opsd_loss.needs_distribution() && cfg.algo.distills() {
            continue; // its divergence runs through the vocabulary hook
        }
        let b = for_cfg(&b, &cfg);
        let logp = Tensor::from_slice(&flat)
            .view([4, len as i64])
            .set_requires_grad(true);
        let entropy = Tensor::zeros([4, len as i64], (Kind::Double, Device::Cpu));
        let algo = rlsd::train::effective_algo(&cfg, &b).unwrap();
        let mb = micro_batch_loss(&cfg, algo, &b, 0..4, &logp, &entropy, norm).unwrap();
        let distill = distill_loss(&cfg, algo, &b, 0..4, &logp, None, &mb.mask, norm).unwrap();
        let total = match &distill {
            Some(d) => &mb.loss.loss + d * cfg.distill_coef,
            None => mb.loss.loss.shallow_clone(),
        };
        assert!(f64::try_from(&total).unwrap().is_finite(), "{name}");
        total.backward();
        let grad = logp.grad();
        let at = |t: &Tensor, i: usize, j: usize| t.double_value(&[i as i64, j as i64]);
        let mut model_grads = 0;
        for (i, row) in mask.iter().enumerate() {
            for (j, &keep) in row.iter().enumerate() {
                if keep == 0.0 {
                    assert_eq!(at(&mb.mask, i, j), 0.0, "{name}: mask");
                    assert_eq!(at(&mb.credit.ahat, i, j), 0.0, "{name}: Ahat");
                    assert_eq!(at(&mb.loss.tokens.pg, i, j), 0.0, "{name}: pg_t");
                    if let Some(d) = &mb.delta {
                        assert_eq!(at(d, i, j), 0.0, "{name}: delta");
                    }
                    assert_eq!(at(&grad, i, j), 0.0, "{name}: gradient");
                } else if at(&grad, i, j) != 0.0 {
                    model_grads += 1;
                }
            }
        }
        assert!(model_grads > 0, "{name}: no gradient on the model's tokens");
    }
}

/// Micro-batches under a token budget reorder the samples (longest first);
/// the mask travels with its sample, so the update equals one batch's.
#[test]
fn micro_batches_carry_the_mask() {
    let m = model(7);
    let eps = episodes(&m);
    let b = batch(&m, &eps, true);
    let split = OptimConfig {
        micro_batch_size: 2,
        max_tokens_per_micro_batch: 24,
        ..OptimConfig::default()
    };
    for (name, cfg) in configs() {
        let whole = step_weights(&cfg, &b);
        let parts = step_weights_with(&cfg, &b, split.clone());
        // Control: the same split with the mask dropped is far off.
        let unmasked = TrainBatch {
            response_mask: None,
            ..b.clone()
        };
        let off = step_weights_with(&cfg, &unmasked, split.clone());
        let far = whole
            .iter()
            .zip(&off)
            .map(|((_, x), (_, y))| f64::try_from((x - y).abs().max()).unwrap())
            .fold(0.0, f64::max);
        assert!(far > 1e-3, "{name}: the mask made no difference ({far})");
        for ((n, x), (_, y)) in whole.iter().zip(&parts) {
            let d = f64::try_from((x - y).abs().max()).unwrap();
            // AdamW's first step moves each weight by about `lr` (1e-2)
            // times the sign of its gradient; summation-order noise on
            // near-zero gradients moves a few by 1e-5. A mask that stayed
            // behind its sample would train environment tokens: O(lr).
            assert!(d < 1e-4, "{name}: {n} differs by {d}");
        }
    }
}

#[test]
fn a_bad_mask_is_a_clear_error() {
    let m = model(7);
    let eps = episodes(&m);
    let mut b = batch(&m, &eps, true);
    b.teacher_support = None;
    let mut tr = Trainer::new(
        model(7),
        AlgoConfig::with_algo(Algo::Grpo),
        OptimConfig::default(),
    )
    .unwrap();
    let mut short = b.clone();
    short.response_mask.as_mut().unwrap()[1].pop();
    let e = train_step(&mut tr, &short).unwrap_err().to_string();
    assert!(e.contains("response_mask[1]"), "{e}");
    let mut half = b.clone();
    half.response_mask.as_mut().unwrap()[2][1] = 0.5;
    let e = train_step(&mut tr, &half).unwrap_err().to_string();
    assert!(e.contains("response_mask[2][1]"), "{e}");
}
