//! The rollout both distillation tests start from (`#[path]`-included by
//! tests/distill_vocab.rs and tests/train_distill.rs): responses sampled
//! from a student, and the teacher's prompts, which add two privileged
//! tokens to each prompt.

use rand::rngs::StdRng;
use rand::SeedableRng;
use rlsd::model::{generate, score_responses_on_support, GenerateOptions, LoadedModel};
use rlsd::policy::PromptResponse;
use rlsd::rlsd::{support_divergence, OpsdLoss, TokenSupport};
use rlsd::train::support_tensors;
use tch::{Device, Kind, Tensor};

/// Sampling temperature of the rollout and of every score taken on it.
pub const T: f64 = 1.0;

/// Sampled responses to `prompts`, with what the teacher is shown.
pub struct Rollout {
    /// The student's prompts.
    pub prompts: Vec<Vec<i64>>,
    /// One response per prompt (EOS ids 1-3 end it).
    pub responses: Vec<Vec<i64>>,
    /// The sampling log-prob of every response token.
    #[allow(dead_code)] // read by train_distill only
    pub sampling_logprobs: Vec<Vec<f32>>,
    /// Each prompt followed by the privileged tokens 60, 61.
    pub teacher_prompts: Vec<Vec<i64>>,
}

/// Sample up to `max_new_tokens` tokens per prompt from `student` at [`T`]
/// with the generator seeded by `seed`.
pub fn rollout(
    student: &LoadedModel,
    prompts: Vec<Vec<i64>>,
    max_new_tokens: usize,
    seed: u64,
) -> Rollout {
    let opts = GenerateOptions {
        max_new_tokens,
        temperature: T,
        eos_ids: vec![1, 2, 3],
        ..GenerateOptions::default()
    };
    let gens = generate(
        &student.lm,
        &prompts,
        &opts,
        &mut StdRng::seed_from_u64(seed),
    )
    .unwrap();
    let teacher_prompts = prompts
        .iter()
        .map(|p| [p.as_slice(), &[60, 61]].concat())
        .collect();
    Rollout {
        responses: gens.iter().map(|g| g.tokens.clone()).collect(),
        sampling_logprobs: gens.iter().map(|g| g.logprobs.clone()).collect(),
        prompts,
        teacher_prompts,
    }
}

/// The student's per-token divergence from the teacher on the teacher's
/// support, computed directly from one `[B, L, K]` scoring of `batch` under
/// `m` (with gradients unless the caller disables them): `(D [B, L], mask
/// [B, L])`, both float64, D zero-free only where the mask is 1.
pub fn support_divergence_of(
    m: &LoadedModel,
    batch: &[PromptResponse],
    sup: &[TokenSupport],
    form: OpsdLoss,
) -> (Tensor, Tensor) {
    let len = batch.iter().map(|s| s.response.len()).max().unwrap();
    let (ids, teacher) = support_tensors(sup, len, Device::Cpu).unwrap();
    let (scores, student) = score_responses_on_support(&m.lm, batch, T, &ids).unwrap();
    let k = ids.size()[2];
    let d = support_divergence(
        form,
        &teacher.view([-1, k]),
        &student.to_kind(Kind::Double).view([-1, k]),
        !sup[0].full_vocab,
    )
    .unwrap()
    .view([batch.len() as i64, len as i64]);
    (d, scores.mask.to_kind(Kind::Double))
}
