//! `rlsd pretrain` for the built-in vision-language task: the tiny
//! Qwen2.5-VL of `assets/tiny-arith-vl` learns to read the rendered
//! arithmetic problems ([`crate::data::task_image`]) and write their worked
//! solutions.
//!
//! Each training solution is shown behind one of three prompts, drawn per
//! example: the whole expression as a picture (`What is <image>?`, share
//! `question_fraction`), its first half as a picture and the rest as text
//! (`What is <image>*3-5?`, share `half_fraction`), or plain text (the
//! rest). As in the text base, a share `teacher_fraction` is shown behind
//! the teacher prompt (the same picture plus the reference answer) and is
//! always correct; the student-prompt ones carry a slip with probability
//! `flawed_fraction`. The pictures go through the tower (trained with the
//! decoder), the prompt's `<|image_pad|>` is expanded to the picture's token
//! count, and the M-RoPE positions come from [`VlModel::forward_all`]. The
//! loss is the text base's: the mean negative log-likelihood of the
//! solution tokens (EOS included), nothing on the prompt.
//!
//! The language half starts random, or, with `vision.init_text`, from a
//! text base folder (`assets/tiny-arith`): every `model.*` tensor of the
//! same name is copied, the embedding's first rows by id (the VL
//! tokenizer keeps the character ids and appends its 4 vision tokens).
//!
//! Held-out accuracy is measured on `question` pictures of problems never
//! trained on: greedy ([`VlModel::generate_greedy`]) and sampled at
//! temperature 1.

use super::{held_out_problems, PretrainConfig, PretrainReport};
use crate::data::prompt::TeacherPrompt;
use crate::data::task::{extract_answer, ArithmeticTask, Problem};
use crate::data::task_image::with_image;
use crate::data::vl_prompt::{student_prompt, teacher_prompt, tokenizer};
use crate::data::Example;
use crate::error::{Error, Result};
use crate::model::sampling::SamplingParams;
use crate::model::vision::{
    ImageProcessor, LoadedVlModel, ProcessedImage, VisionInput, VlConfig, VlModel,
};
use crate::model::{weights, Tokenizer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// The `[vision]` table of a pretrain config: empty `config_dir` keeps the
/// text-only pretraining.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VisionPretrain {
    /// Folder with the VL `config.json`, tokenizer and preprocessor
    /// (`assets/tiny-arith-vl`); its non-weight files are copied to `out_dir`.
    pub config_dir: PathBuf,
    /// Share of training examples with the whole expression pictured.
    pub question_fraction: f64,
    /// Share with the first half pictured and the rest in text.
    pub half_fraction: f64,
    /// A text base folder whose `model.*` tensors start the language half
    /// (empty: random init).
    pub init_text: PathBuf,
}

impl Default for VisionPretrain {
    fn default() -> Self {
        VisionPretrain {
            config_dir: PathBuf::new(),
            question_fraction: 0.5,
            half_fraction: 0.25,
            init_text: PathBuf::new(),
        }
    }
}

impl VisionPretrain {
    /// Whether this pretraining makes a VL model.
    pub fn enabled(&self) -> bool {
        !self.config_dir.as_os_str().is_empty()
    }

    /// Check the shares.
    pub fn validate(&self) -> Result<()> {
        let (q, h) = (self.question_fraction, self.half_fraction);
        if !(0.0..=1.0).contains(&q) || !(0.0..=1.0).contains(&h) || q + h > 1.0 {
            return Err(Error::config(
                "pretrain.vision.question_fraction",
                "question_fraction and half_fraction must lie in [0, 1] and sum to at most 1",
            ));
        }
        Ok(())
    }
}

/// How one training example shows its problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    /// `What is <image>?`
    Question,
    /// `What is <image>*3-5?`
    Half,
    /// `What is 12+7*3-5?`
    Text,
}

/// One training row: prompt ids (pads expanded), its pictures, the response.
#[derive(Debug)]
struct VlSample {
    prompt: Vec<i64>,
    images: Vec<ProcessedImage>,
    response: Vec<i64>,
}

/// A random VL model from `dir`'s config (matrices N(0, 0.02), norms one,
/// biases zero), with the folder's tokenizer and processor.
pub fn random_vl_model(dir: &Path, seed: u64) -> Result<LoadedVlModel> {
    let config = VlConfig::from_file(&dir.join("config.json"))?;
    let vs = nn::VarStore::new(Device::Cpu);
    let model = VlModel::new(&vs.root(), &config)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| -> Result<()> {
        for (name, var) in vars {
            if name.ends_with("norm.weight")
                || name.ends_with("norm1.weight")
                || name.ends_with("norm2.weight")
                || name.ends_with("ln_q.weight")
                || name.ends_with(".bias")
            {
                continue; // ones / zeros from construction
            }
            let values: Vec<f32> = (0..var.numel())
                .map(|_| 0.02 * standard_normal(&mut rng))
                .collect();
            let t = Tensor::from_slice(&values).f_view(var.size().as_slice())?;
            var.shallow_clone().f_copy_(&t)?;
        }
        Ok(())
    })?;
    let tokenizer = Tokenizer::from_dir(dir, &config.text.eos_token_id, config.text.pad_token_id)?;
    let processor = Some(ImageProcessor::load(&dir.join("preprocessor_config.json"))?);
    Ok(LoadedVlModel {
        vs,
        model,
        tokenizer,
        processor,
    })
}

/// One draw from N(0, 1) (Box-Muller).
fn standard_normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Copy the text base's `model.*` tensors of `dir` into the language half
/// (the embedding's first rows by id); returns how many were copied.
pub fn init_language_from_text(model: &LoadedVlModel, dir: &Path) -> Result<usize> {
    let file = dir.join("model.safetensors");
    let tensors = Tensor::read_safetensors(&file).map_err(|e| Error::Model {
        path: file.clone(),
        msg: format!("cannot read the text base: {e}"),
    })?;
    let vars = model.vs.variables();
    let mut copied = 0;
    tch::no_grad(|| -> Result<()> {
        for (name, t) in &tensors {
            let Some(var) = vars.get(name) else { continue };
            let (have, got) = (var.size(), t.size());
            let src = if have == got {
                t.shallow_clone()
            } else if have.len() == 2 && got.len() == 2 && have[1] == got[1] && got[0] < have[0] {
                // Embedding rows: the VL vocabulary appends its vision tokens.
                let rows = var.f_zeros_like()?;
                rows.shallow_clone().f_copy_(var)?;
                rows.f_narrow(0, 0, got[0])?.f_copy_(t)?;
                rows
            } else {
                return Err(Error::ShapeMismatch {
                    name: format!("{} in {}", name, file.display()),
                    expected: have,
                    got,
                });
            };
            var.shallow_clone().f_copy_(&src.f_to_kind(var.kind())?)?;
            copied += 1;
        }
        Ok(())
    })?;
    Ok(copied)
}

/// Prompt ids of `ex` (student, or teacher through `teacher`) with each
/// image's pad run expanded, and the processed images.
fn prompt_of(
    model: &LoadedVlModel,
    ex: &Example,
    teacher: Option<&TeacherPrompt>,
) -> Result<(Vec<i64>, Vec<ProcessedImage>)> {
    let student = student_prompt(model, ex)?;
    let prompt = match teacher {
        Some(t) => teacher_prompt(model, t, ex, student.images)?,
        None => student,
    };
    Ok((prompt.ids, prompt.images.to_vec()))
}

/// The example of `problem` shown as `shown`.
fn shown_example(cfg: &PretrainConfig, problem: &Problem, shown: Shown) -> Result<Example> {
    let text = problem.to_example_with("pretrain", cfg.task.privileged);
    match shown {
        Shown::Text => Ok(text),
        Shown::Question => with_image(text, &problem.expression(), ""),
        Shown::Half => {
            let (pictured, rest) = problem.split_half();
            with_image(text, &pictured, &rest)
        }
    }
}

/// One batch of training rows, none of them a held-out expression.
fn training_batch(
    cfg: &PretrainConfig,
    model: &LoadedVlModel,
    task: &ArithmeticTask,
    teacher: &TeacherPrompt,
    held_out: &HashSet<String>,
    rng: &mut StdRng,
) -> Result<Vec<VlSample>> {
    let tok = tokenizer(model)?;
    let eos = model
        .model
        .config
        .text
        .eos_token_id
        .first()
        .copied()
        .unwrap_or(1);
    let mut batch = Vec::with_capacity(cfg.batch_size);
    let mut draws = 0usize;
    while batch.len() < cfg.batch_size {
        draws += 1;
        if draws > 1000 * cfg.batch_size {
            return Err(Error::config(
                "pretrain.task",
                "the task is too small: almost every problem is held out",
            ));
        }
        let problem = task.problem(rng);
        if held_out.contains(&problem.expression()) {
            continue;
        }
        let u: f64 = rng.random();
        let shown = if u < cfg.vision.question_fraction {
            Shown::Question
        } else if u < cfg.vision.question_fraction + cfg.vision.half_fraction {
            Shown::Half
        } else {
            Shown::Text
        };
        let as_teacher = rng.random_bool(cfg.teacher_fraction);
        let flawed = !as_teacher && rng.random_bool(cfg.flawed_fraction);
        let ex = shown_example(cfg, &problem, shown)?;
        let (prompt, images) = prompt_of(model, &ex, as_teacher.then_some(teacher))?;
        let solution = if flawed {
            problem.flawed_solution(rng).0
        } else {
            problem.solution()
        };
        let mut response = tok.encode(&solution, false)?;
        response.push(eos);
        batch.push(VlSample {
            prompt,
            images,
            response,
        });
    }
    Ok(batch)
}

/// Mean negative log-likelihood of the response tokens of `batch`: one
/// forward over `prompt + response` right-padded with 0 (causal attention
/// never reads a row's trailing padding, and the M-RoPE positions of its
/// tokens do not depend on it), every picture through the tower in row order.
fn solution_nll(model: &VlModel, batch: &[VlSample]) -> Result<Tensor> {
    let b = batch.len();
    let s = batch
        .iter()
        .map(|r| r.prompt.len() + r.response.len())
        .max()
        .unwrap_or(0);
    let mut ids = vec![0i64; b * s];
    let mut targets = vec![0i64; b * (s - 1)];
    let mut mask = vec![0f32; b * (s - 1)];
    for (r, row) in batch.iter().enumerate() {
        let p = row.prompt.len();
        ids[r * s..r * s + p].copy_from_slice(&row.prompt);
        ids[r * s + p..r * s + p + row.response.len()].copy_from_slice(&row.response);
        for (j, &t) in row.response.iter().enumerate() {
            // Position p + j - 1 predicts response token j.
            targets[r * (s - 1) + p + j - 1] = t;
            mask[r * (s - 1) + p + j - 1] = 1.0;
        }
    }
    let (b, s) = (b as i64, s as i64);
    let ids = Tensor::from_slice(&ids).f_view([b, s])?;
    let images: Vec<ProcessedImage> = batch.iter().flat_map(|r| r.images.clone()).collect();
    let input = if images.is_empty() {
        None
    } else {
        Some(VisionInput::from_processed(&images, Device::Cpu)?)
    };
    let logits = model.forward_all(&ids, None, input.as_ref())?;
    let logp = logits
        .f_narrow(1, 0, s - 1)?
        .f_log_softmax(-1, Kind::Float)?;
    let targets = Tensor::from_slice(&targets).f_view([b, s - 1, 1])?;
    let mask = Tensor::from_slice(&mask).f_view([b, s - 1])?;
    let picked = logp.f_gather(2, &targets, false)?.f_squeeze_dim(2)?;
    let total = picked.f_mul(&mask)?.f_sum(Kind::Float)?;
    let count = mask.f_sum(Kind::Float)?.f_clamp_min(1.0)?;
    Ok(total.f_div(&count)?.f_neg()?)
}

/// Fraction of `problems`, pictured whole (`What is <image>?`), whose
/// answer after `Answer:` is right: greedy when `sample_seed` is `None`,
/// else sampled at temperature 1 from that seed.
pub fn vl_heldout_accuracy(
    model: &LoadedVlModel,
    problems: &[Problem],
    max_new_tokens: usize,
    sample_seed: Option<u64>,
) -> Result<f64> {
    let tok = tokenizer(model)?;
    let eos = model.model.config.text.eos_token_id.clone();
    let params = SamplingParams {
        greedy: sample_seed.is_none(),
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        presence_penalty: 0.0,
    };
    let mut rng = StdRng::seed_from_u64(sample_seed.unwrap_or(0));
    let mut correct = 0usize;
    for problem in problems {
        let ex = with_image(
            problem.to_example_with("heldout", crate::data::task::Privileged::Answer),
            &problem.expression(),
            "",
        )?;
        let (ids, images) = prompt_of(model, &ex, None)?;
        let input = VisionInput::from_processed(&images, model.vs.device())?;
        let (out, _) = tch::no_grad(|| {
            model
                .model
                .generate(&ids, Some(&input), max_new_tokens, &eos, &params, &mut rng)
        })?;
        let text = tok.decode(&out, true)?;
        if extract_answer(&text) == Some(problem.answer) {
            correct += 1;
        }
    }
    Ok(correct as f64 / problems.len().max(1) as f64)
}

/// Copy every non-weight file of `from` (config, tokenizer, preprocessor)
/// into `to`.
fn copy_folder_files(from: &Path, to: &Path) -> Result<()> {
    if from == to {
        return Ok(());
    }
    let entries = std::fs::read_dir(from).map_err(|e| Error::io(from, e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io(from, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let skip = name.ends_with(".safetensors")
            || name.starts_with('.')
            || name == "pretrain_report.json";
        if path.is_file() && !skip {
            let dest = to.join(name);
            std::fs::copy(&path, &dest).map_err(|e| Error::io(&dest, e))?;
        }
    }
    Ok(())
}

/// Train the VL base model, check it on held-out pictured problems and save
/// it into `cfg.out_dir` (`model.safetensors` plus the config folder's files).
pub fn pretrain_vl(cfg: &PretrainConfig) -> Result<PretrainReport> {
    cfg.vision.validate()?;
    let started = Instant::now();
    if cfg.threads > 0 {
        tch::set_num_threads(i32::try_from(cfg.threads).unwrap_or(i32::MAX));
    }
    tch::manual_seed(cfg.seed as i64);
    let task = ArithmeticTask::new(cfg.task.clone())?;
    let model = random_vl_model(&cfg.vision.config_dir, cfg.seed)?;
    if !cfg.vision.init_text.as_os_str().is_empty() {
        let n = init_language_from_text(&model, &cfg.vision.init_text)?;
        tracing::info!(tensors = n, from = %cfg.vision.init_text.display(), "language half from the text base");
    }
    let teacher = TeacherPrompt::new(cfg.teacher_template.clone())?;
    let held_out = held_out_problems(&task, cfg.eval_problems, cfg.seed);
    let held_out_exprs: HashSet<String> = held_out.iter().map(Problem::expression).collect();
    let losses = super::optimize(cfg, &model.vs, started, "pretrain vl", &mut |rng| {
        let batch = training_batch(cfg, &model, &task, &teacher, &held_out_exprs, rng)?;
        solution_nll(&model.model, &batch)
    })?;
    let steps = losses.len();
    let train_seconds = started.elapsed().as_secs_f64();
    let eval_started = Instant::now();
    let (greedy, sampled) = if held_out.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        let n = cfg.eval_max_new_tokens;
        (
            vl_heldout_accuracy(&model, &held_out, n, None)?,
            vl_heldout_accuracy(&model, &held_out, n, Some(cfg.seed))?,
        )
    };
    let eval_seconds = eval_started.elapsed().as_secs_f64();
    let out = cfg.out_dir.as_path();
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    copy_folder_files(&cfg.vision.config_dir, out)?;
    weights::save_weights(&model.vs, &out.join("model.safetensors"))?;
    let tail = &losses[losses.len().saturating_sub(20)..];
    let final_loss = if tail.is_empty() {
        f64::NAN
    } else {
        tail.iter().sum::<f64>() / tail.len() as f64
    };
    let parameters = model
        .vs
        .variables()
        .values()
        .map(Tensor::numel)
        .sum::<usize>() as i64;
    Ok(PretrainReport {
        out_dir: out.to_path_buf(),
        steps,
        examples_seen: steps * cfg.batch_size,
        final_loss,
        parameters,
        heldout_accuracy: greedy,
        heldout_sampled_accuracy: sampled,
        heldout_problems: held_out.len(),
        heldout_student_answer_logprob: f64::NAN,
        heldout_teacher_answer_logprob: f64::NAN,
        heldout_tool_call_rate: f64::NAN,
        heldout_sampled_tool_call_rate: f64::NAN,
        heldout_sampled_accuracy_with_tool: f64::NAN,
        train_seconds,
        eval_seconds,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}
