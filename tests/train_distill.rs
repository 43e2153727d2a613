//! The OPSD distillation forms end to end on the tiny transformer: the
//! teacher's top-k / full-vocabulary support, the student's log-probs on it
//! from the train step's own forward, the divergence the step reports, and
//! that a few steps move the student toward the teacher.

#[path = "common/distill.rs"]
mod distill;

use distill::{rollout, support_divergence_of, T};
use rlsd::model::{teacher_support, token_logprobs, Config, LoadedModel};
use rlsd::optim::OptimConfig;
use rlsd::policy::PromptResponse;
use rlsd::rlsd::{Algo, AlgoConfig, OpsdLoss, TokenSupport};
use rlsd::train::{train_step, TrainBatch, Trainer};
use tch::{Device, Kind};

fn model(seed: u64) -> LoadedModel {
    LoadedModel::random(Config::tiny(), Device::Cpu, seed).unwrap()
}

/// Two prompts x 3 responses from `student`; the teacher (another model, so
/// that the two distributions differ) scores them under the same prompts
/// with two extra privileged tokens.
fn batch(student: &LoadedModel, teacher: &LoadedModel, k: usize) -> TrainBatch {
    let prompts: Vec<Vec<i64>> = [vec![5, 9, 11], vec![20, 21]]
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.clone(), 3))
        .collect();
    let r = rollout(student, prompts, 6, 5);
    let (tp, responses) = (&r.teacher_prompts, &r.responses);
    TrainBatch {
        samples: r
            .prompts
            .iter()
            .zip(responses)
            .map(|(p, resp)| PromptResponse {
                image_key: 0,
                prompt: p.clone(),
                response: resp.clone(),
            })
            .collect(),
        sampling_logprobs: r.sampling_logprobs.clone(),
        teacher_logprobs: Some(token_logprobs(&teacher.lm, tp, responses, T).unwrap()),
        teacher_neg_logprobs: None,
        ref_logprobs: None,
        teacher_support: Some(teacher_support(&teacher.lm, tp, responses, T, k).unwrap()),
        advantages: vec![1.0, -0.5, -0.5, 0.0, 0.7, -0.7],
        correct: None,
        step: 1,
        lambda: 0.0,
        lr: 1e-2,
        temperature: T,
        response_mask: None,
    }
}

/// The batch's mean per-token divergence under `m`, computed directly.
fn divergence(m: &LoadedModel, b: &TrainBatch, form: OpsdLoss) -> f64 {
    let sup = b.teacher_support.as_ref().unwrap();
    let (d, mask) = tch::no_grad(|| support_divergence_of(m, &b.samples, sup, form));
    f64::try_from((d * &mask).sum(Kind::Double) / mask.sum(Kind::Double)).unwrap()
}

#[test]
fn teacher_support_holds_the_distribution() {
    let (s, t) = (model(1), model(2));
    let full = batch(&s, &t, 0);
    let top = batch(&s, &t, 8);
    let teacher = full.teacher_logprobs.as_ref().unwrap();
    for (i, (f, k)) in full
        .teacher_support
        .as_ref()
        .unwrap()
        .iter()
        .zip(top.teacher_support.as_ref().unwrap())
        .enumerate()
    {
        let resp = &full.samples[i].response;
        assert!(f.full_vocab && f.k == 64 && f.len() == resp.len());
        assert!(!k.full_vocab && k.k == 8 && k.len() == resp.len());
        for (j, tok) in resp.iter().enumerate() {
            let row = |s: &TokenSupport| -> (Vec<i64>, Vec<f32>) {
                (
                    s.ids[j * s.k..(j + 1) * s.k].to_vec(),
                    s.logprobs[j * s.k..(j + 1) * s.k].to_vec(),
                )
            };
            let (ids, lps) = row(f);
            // Full vocabulary: sums to one, and holds the sampled token's log-prob.
            let mass: f64 = lps.iter().map(|&x| f64::from(x).exp()).sum();
            assert!((mass - 1.0).abs() < 1e-4, "mass {mass}");
            let at = ids.iter().position(|x| x == tok).unwrap();
            assert!((lps[at] - teacher[i][j]).abs() < 1e-4);
            // Top-8: the 8 largest, in order.
            let (_, top_lps) = row(k);
            let mut sorted = lps.clone();
            sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
            for (a, b) in top_lps.iter().zip(&sorted) {
                assert!((a - b).abs() < 1e-5);
            }
        }
    }
}

fn trainer(m: LoadedModel, algo: Algo, form: OpsdLoss, micro: usize) -> Trainer<LoadedModel> {
    let cfg = AlgoConfig {
        opsd_loss: form,
        ..AlgoConfig::with_algo(algo)
    };
    let optim = OptimConfig {
        lr: 1e-2,
        micro_batch_size: micro,
        ..OptimConfig::default()
    };
    Trainer::new(m, cfg, optim).unwrap()
}

#[test]
fn opsd_steps_report_the_divergence_and_reduce_it() {
    for (form, k) in [(OpsdLoss::Jsd, 0), (OpsdLoss::Kl, 8), (OpsdLoss::Jsd, 8)] {
        let (s, t) = (model(1), model(2));
        let b = batch(&s, &t, k);
        let before = divergence(&s, &b, form);
        let mut tr = trainer(s, Algo::Opsd, form, 0);
        let first = train_step(&mut tr, &b).unwrap();
        assert!(!first.skipped, "{:?}", first.skip_reason);
        // The step reports the divergence of the weights it started from.
        assert!(
            (first.distill_loss - before).abs() < 1e-5,
            "{form:?} k {k}: {} vs {before}",
            first.distill_loss
        );
        for _ in 0..5 {
            train_step(&mut tr, &b).unwrap();
        }
        let after = divergence(&tr.policy, &b, form);
        assert!(after < before, "{form:?} k {k}: {before} -> {after}");
    }
}

#[test]
fn micro_batches_equal_one_batch_and_grpo_opsd_runs() {
    let (s, t) = (model(3), model(4));
    let b = batch(&s, &t, 8);
    let mut one = trainer(model(3), Algo::GrpoOpsd, OpsdLoss::Kl, 0);
    let mut two = trainer(model(3), Algo::GrpoOpsd, OpsdLoss::Kl, 2);
    let (grads_one, grads_two) = (GradTap::install(&mut one), GradTap::install(&mut two));
    let a = train_step(&mut one, &b).unwrap();
    let c = train_step(&mut two, &b).unwrap();
    assert!((a.loss - c.loss).abs() < 1e-6, "{} vs {}", a.loss, c.loss);
    assert!((a.distill_loss - c.distill_loss).abs() < 1e-6);
    assert!(a.distill_loss > 0.0 && a.pg_loss != 0.0);
    // The accumulated gradients (before clipping and AdamW, which would turn
    // f32 summation-order noise in near-zero entries into full-size updates).
    let (g1, g2) = (grads_one.take(), grads_two.take());
    assert_eq!(g1.len(), g2.len());
    let largest = |g: &[tch::Tensor]| -> f64 {
        g.iter()
            .map(|x| f64::try_from(x.abs().max()).unwrap())
            .fold(0.0, f64::max)
    };
    assert!(largest(&g1) > 0.0, "the step must have a gradient");
    for (i, (x, y)) in g1.iter().zip(&g2).enumerate() {
        let scale = f64::try_from(x.abs().max()).unwrap().max(1e-12);
        let d = f64::try_from((x - y).abs().max()).unwrap();
        assert!(
            d <= 1e-5 * scale,
            "parameter {i}: {d} (largest entry {scale})"
        );
    }
    // A batch without the teacher support is refused with a clear error.
    let mut bare = b.clone();
    bare.teacher_support = None;
    let err = train_step(&mut one, &bare).unwrap_err().to_string();
    assert!(err.contains("teacher_support"), "{err}");
}

/// Captures the accumulated gradients a train step hands its data-parallel
/// seam (one rank: the sums are the rank's own).
#[derive(Debug, Clone, Default)]
struct GradTap(std::sync::Arc<std::sync::Mutex<Vec<tch::Tensor>>>);

impl GradTap {
    fn install(tr: &mut Trainer<LoadedModel>) -> GradTap {
        let tap = GradTap::default();
        tr.grad_sync = Some(Box::new(tap.clone()));
        tap
    }

    fn take(&self) -> Vec<tch::Tensor> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl rlsd::distributed::GradSync for GradTap {
    fn world(&self) -> usize {
        1
    }

    fn sum_values(&mut self, _values: &mut [f64]) -> rlsd::Result<()> {
        Ok(())
    }

    fn sum_grads(&mut self, params: &[tch::Tensor]) -> rlsd::Result<()> {
        let mut g = self.0.lock().unwrap();
        g.clear();
        g.extend(params.iter().map(|p| p.grad().copy()));
        Ok(())
    }
}
