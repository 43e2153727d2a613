//! The completions log: each step, a few prompts with their responses,
//! rewards, advantages and per-token credit, one JSON line per step in
//! `completions.jsonl` of the run folder.
//!
//! [`sample_completions`] builds the sample from the batch the train step
//! receives. The per-token credit is computed by the train step's own code
//! ([`crate::train::micro_batch_loss`]) with the *sampling* log-probs
//! standing in for the policy's current ones, so `Ahat_t` and
//! `delta_t = logp_T - logp_S` are exactly the train step's when the batch is
//! on-policy or `algo.student_logprobs = "sampling"`, and the
//! sampling-time view of them otherwise (a stale batch).
//! [`read_completions`] reads the log back and [`StepCompletions::to_inspection`]
//! turns a step into what `rlsd inspect` renders.

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tch::{Kind, Tensor};

use crate::commands::inspect::{InspectedResponse, Inspection};
use crate::data::Example;
use crate::metrics::read_metrics_counted;
use crate::model::Tokenizer;
use crate::pipeline::CreditBatch;
use crate::rlsd::{AlgoConfig, LossNorm};
use crate::train::{effective_algo, micro_batch_loss, TrainBatch};
use crate::{Error, Result};

/// The log's file name inside a run folder.
pub const COMPLETIONS_FILE: &str = "completions.jsonl";

/// One logged response with its prompt, verdict and token credit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionSample {
    /// Index of the prompt within the step.
    pub group: usize,
    /// The prompt's example id.
    pub example_id: String,
    /// The user prompt (before the chat template).
    pub prompt: String,
    /// The reference answer.
    pub answer: String,
    /// The response text.
    pub response: String,
    /// The response's token ids.
    pub response_ids: Vec<i64>,
    /// Each response token decoded on its own.
    pub tokens: Vec<String>,
    /// Verifier reward.
    #[serde(with = "nan_f32")]
    pub reward: f32,
    /// Verifier verdict.
    pub correct: bool,
    /// The verifier's short reason.
    pub reason: String,
    /// Group-relative advantage `A_i`.
    #[serde(with = "nan_f32")]
    pub advantage: f32,
    /// `Ahat_t` per token.
    #[serde(with = "nan_vec")]
    pub ahat: Vec<f32>,
    /// Raw token weight `w_t` per token, where the algorithm has one.
    #[serde(default, with = "nan_opt_vec")]
    pub weights: Option<Vec<f32>>,
    /// `delta_t` (teacher minus student log-prob) per token, where a teacher scored.
    #[serde(default, with = "nan_opt_vec")]
    pub delta: Option<Vec<f32>>,
}

/// One line of `completions.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepCompletions {
    /// The training step.
    pub step: u64,
    /// The algorithm the step trained with.
    pub algo: String,
    /// `lambda` at that step.
    pub lambda: f64,
    /// `eps_w`, the weight clip.
    pub eps_w: f64,
    /// The sampled responses.
    pub samples: Vec<CompletionSample>,
}

impl StepCompletions {
    /// The step as an [`Inspection`], for the `rlsd inspect` renderers:
    /// prompts numbered in order of first appearance, missing weights as 1
    /// and missing deltas as 0 (an algorithm without a teacher).
    pub fn to_inspection(&self) -> Inspection {
        let mut examples: Vec<Example> = Vec::new();
        let mut groups: Vec<usize> = Vec::new();
        let mut responses = Vec::with_capacity(self.samples.len());
        for s in &self.samples {
            let g = match groups.iter().position(|&g| g == s.group) {
                Some(g) => g,
                None => {
                    groups.push(s.group);
                    examples.push(Example {
                        id: s.example_id.clone(),
                        prompt: s.prompt.clone(),
                        answer: s.answer.clone(),
                        privileged: String::new(),
                        context: Vec::new(),
                    });
                    groups.len() - 1
                }
            };
            let l = s.ahat.len();
            responses.push(InspectedResponse {
                group: g,
                text: s.response.clone(),
                response_ids: s.response_ids.clone(),
                tokens: s.tokens.clone(),
                reward: s.reward,
                correct: s.correct,
                reason: s.reason.clone(),
                advantage: s.advantage,
                ahat: s.ahat.clone(),
                weights: s.weights.clone().unwrap_or_else(|| vec![1.0; l]),
                delta: s.delta.clone().unwrap_or_else(|| vec![0.0; l]),
            });
        }
        Inspection {
            algo: self.algo.clone(),
            step: self.step,
            lambda: self.lambda,
            eps_w: self.eps_w,
            examples,
            responses,
        }
    }
}

/// The first `n` responses of a step's batch (prompt-major, so whole groups
/// come first) with their token credit. `tb` must be the [`TrainBatch`]
/// built from `batch`. Never fails the step: a problem is logged and gives
/// an empty sample.
pub fn sample_completions(
    batch: &CreditBatch,
    tb: &TrainBatch,
    algo: &AlgoConfig,
    tokenizer: Option<&Tokenizer>,
    n: usize,
) -> Vec<CompletionSample> {
    match try_sample(batch, tb, algo, tokenizer, n) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(step = batch.plan().step, error = %e, "could not sample completions for the log");
            Vec::new()
        }
    }
}

fn try_sample(
    batch: &CreditBatch,
    tb: &TrainBatch,
    algo: &AlgoConfig,
    tokenizer: Option<&Tokenizer>,
    n: usize,
) -> Result<Vec<CompletionSample>> {
    let k = n.min(batch.rollouts().len()).min(tb.samples.len());
    if k == 0 {
        return Ok(Vec::new());
    }
    let effective = effective_algo(algo, tb)?;
    let lens: Vec<usize> = tb.samples[..k].iter().map(|s| s.response.len()).collect();
    let len = lens.iter().copied().max().unwrap_or(0).max(1);
    let logp = padded(&tb.sampling_logprobs[..k], len)?;
    let entropy = logp.f_zeros_like()?;
    let mbl = micro_batch_loss(
        algo,
        effective,
        tb,
        0..k,
        &logp,
        &entropy,
        LossNorm::of_batch(tb),
    )?;
    let ahat = rows(&mbl.credit.ahat)?;
    let weights = mbl.credit.weights.as_ref().map(rows).transpose()?;
    let delta = mbl.delta.as_ref().map(rows).transpose()?;
    let mut out = Vec::with_capacity(k);
    for (i, s) in batch.rollouts()[..k].iter().enumerate() {
        let score = &batch.scores()[i];
        let l = lens[i];
        let tokens = s
            .response_ids
            .iter()
            .map(|&id| match tokenizer {
                Some(t) => t.decode(&[id], false),
                None => Ok(format!("<{id}>")),
            })
            .collect::<Result<Vec<_>>>()?;
        let ex = batch.example_of(i);
        out.push(CompletionSample {
            group: s.group,
            example_id: ex.map(|e| e.id.clone()).unwrap_or_default(),
            prompt: ex.map(|e| e.prompt.clone()).unwrap_or_default(),
            answer: ex.map(|e| e.answer.clone()).unwrap_or_default(),
            response: s.response_text.clone(),
            response_ids: s.response_ids.clone(),
            tokens,
            reward: score.reward,
            correct: score.correct,
            reason: score.reason.clone(),
            advantage: batch.advantages[i],
            ahat: ahat[i][..l].to_vec(),
            weights: weights.as_ref().map(|w| w[i][..l].to_vec()),
            delta: delta.as_ref().map(|d| d[i][..l].to_vec()),
        });
    }
    Ok(out)
}

/// Right-pad per-response values into a `[B, len]` f64 tensor.
pub(crate) fn padded(rows: &[Vec<f32>], len: usize) -> Result<Tensor> {
    let mut flat = vec![0f64; rows.len() * len];
    for (i, r) in rows.iter().enumerate() {
        for (j, &x) in r.iter().take(len).enumerate() {
            flat[i * len + j] = f64::from(x);
        }
    }
    Ok(Tensor::f_from_slice(&flat)?.f_view([rows.len() as i64, len as i64])?)
}

/// A `[B, L]` tensor as `B` rows of f32.
pub(crate) fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    let size = t.size();
    let (b, l) = match size.as_slice() {
        [b, l] => (*b as usize, *l as usize),
        _ => {
            return Err(Error::ShapeMismatch {
                name: "token credit".into(),
                expected: vec![-1, -1],
                got: size,
            })
        }
    };
    let flat: Vec<f32> = Vec::try_from(
        &t.f_to_device(tch::Device::Cpu)?
            .f_to_kind(Kind::Float)?
            .f_contiguous()?
            .f_view([-1])?,
    )?;
    Ok((0..b).map(|i| flat[i * l..(i + 1) * l].to_vec()).collect())
}

/// Read every step of a `completions.jsonl`; lines that are not JSON are
/// skipped (a torn last line), records of the wrong shape are an error
/// naming the file and line.
pub fn read_completions(path: &Path) -> Result<Vec<StepCompletions>> {
    if !path.is_file() {
        return Err(Error::InvalidInput(format!(
            "{} not found: completions are logged by `rlsd train` when observe.completions_per_step > 0",
            path.display()
        )));
    }
    let log = read_metrics_counted(path)?;
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    // Map each parsed record back to its line number for error messages.
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(i, l)| !l.trim().is_empty() && !log.skipped_lines.contains(&(i + 1)))
        .map(|(i, _)| i + 1)
        .collect();
    log.records
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v).map_err(|e| Error::Metrics {
                path: path.to_path_buf(),
                line: lines.get(i).copied().unwrap_or(0),
                msg: format!("not a completions record: {e}"),
            })
        })
        .collect()
}

/// The logged step `step` of a run folder (the last one logged with `None`).
pub fn read_step(run_dir: &Path, step: Option<u64>) -> Result<StepCompletions> {
    let path = run_dir.join(COMPLETIONS_FILE);
    let all = read_completions(&path)?;
    let found = match step {
        // A resumed run may log a step twice; the later line wins.
        Some(s) => all.into_iter().rev().find(|r| r.step == s),
        None => all.into_iter().max_by_key(|r| r.step),
    };
    found.ok_or_else(|| {
        let what = step.map_or("any step".to_string(), |s| format!("step {s}"));
        Error::InvalidInput(format!("{} has no record of {what}", path.display()))
    })
}

/// JSON has no NaN: non-finite numbers are written as `null` and read back as NaN.
mod nan_f32 {
    use super::*;

    pub(super) fn serialize<S: Serializer>(v: &f32, s: S) -> std::result::Result<S::Ok, S::Error> {
        v.is_finite().then_some(*v).serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<f32, D::Error> {
        Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
    }
}

/// [`nan_f32`] for vectors.
mod nan_vec {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        v: &[f32],
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let o: Vec<Option<f32>> = v.iter().map(|x| x.is_finite().then_some(*x)).collect();
        o.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Vec<f32>, D::Error> {
        let o = Vec::<Option<f32>>::deserialize(d)?;
        Ok(o.into_iter().map(|x| x.unwrap_or(f32::NAN)).collect())
    }
}

/// [`nan_f32`] for optional vectors.
mod nan_opt_vec {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        v: &Option<Vec<f32>>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let o: Option<Vec<Option<f32>>> = v
            .as_ref()
            .map(|v| v.iter().map(|x| x.is_finite().then_some(*x)).collect());
        o.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<Vec<f32>>, D::Error> {
        let o = Option::<Vec<Option<f32>>>::deserialize(d)?;
        Ok(o.map(|v| v.into_iter().map(|x| x.unwrap_or(f32::NAN)).collect()))
    }
}
