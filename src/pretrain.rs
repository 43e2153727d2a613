//! `rlsd pretrain`: supervised warm-up that makes the built-in task's base
//! policy.
//!
//! A tiny Qwen2-style model with the character-level tokenizer is trained on
//! worked solutions of generated arithmetic problems (a configurable fraction
//! of them with one deliberate slip), by minimising the mean negative
//! log-likelihood of the solution tokens:
//!
//! `loss = -(1 / N) * sum_i sum_t log p(y_{i,t} | x_i, y_{i,<t})`, N = number of
//! solution tokens in the batch (EOS included),
//!
//! with AdamW and a warm-up + cosine learning rate. The step or time budget is
//! meant to stop it *before* it masters the task: reinforcement learning needs
//! a base model whose held-out accuracy is low but not zero. Held-out accuracy
//! is measured by greedy decoding on problems never shown in training and
//! comparing the number after `Answer:`. The result is saved in the Hugging
//! Face format (config.json, model.safetensors, tokenizer files).
//!
//! The teacher must be informative, the way a real LLM reads a reference
//! solution: a fraction `teacher_fraction` of the training solutions are
//! shown behind the *teacher* prompt (the question plus the reference answer,
//! through the same template RLSD's teacher uses) and are always correct, so
//! that the model learns to use the answer when it sees one. The report
//! measures it: on held-out problems, the mean log-prob of the correct answer's
//! tokens (teacher-forced on the correct solution) behind the teacher prompt
//! and behind the student prompt; the first must exceed the second.
//!
//! With `tool_fraction > 0` the model is the built-in *agent* task's base
//! ([`tool_use`]): that share of the solutions calls the calculator tool in
//! the Hermes format and states its value after the tool turn (loss on the
//! model's turns only), the tokenizer gets the chat template with a tool
//! turn ([`char_tokenizer::AGENT_CHAT_TEMPLATE`]), and the held-out check
//! plays episodes against the calculator (accuracy and tool-call rate).

pub mod tool_use;
pub mod vision;

use crate::data::char_tokenizer::{self, write_char_tokenizer_with, EOS_ID, PAD_ID};
use crate::data::prompt::{chat_prompt_ids, TeacherPrompt};
use crate::data::task::{
    extract_answer, ArithmeticTask, Privileged, Problem, TaskConfig, ANSWER_PREFIX,
};
use crate::error::{Error, Result};
use crate::model::{generate, Config, GenerateOptions, LoadedModel, ScratchDir, Tokenizer};
use crate::policy::{Policy, PromptResponse};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

/// The teacher template of the built-in task (`configs/builtin.toml`'s
/// `data.teacher_template`): the question and the reference answer, short,
/// because every character of it is a token of the character model.
pub const BUILTIN_TEACHER_TEMPLATE: &str = "{question} Reference answer: {answer}";

/// Salt mixed into the seed of the held-out problems, so they differ from
/// the training stream for every seed.
const HELD_OUT_SALT: u64 = 0x5EED_0F4E_1D00;

/// Shape of the base model (the rest comes from [`Config::tiny`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelShape {
    /// Width of the residual stream.
    pub hidden_size: i64,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: i64,
    /// Number of decoder layers.
    pub num_hidden_layers: i64,
    /// Query heads.
    pub num_attention_heads: i64,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: i64,
}

impl Default for ModelShape {
    fn default() -> Self {
        ModelShape {
            hidden_size: 64,
            intermediate_size: 192,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
        }
    }
}

/// Settings of `rlsd pretrain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainConfig {
    /// Folder the model is written to (Hugging Face layout).
    pub out_dir: PathBuf,
    /// Problems to train and evaluate on.
    pub task: TaskConfig,
    /// Model size.
    pub model: ModelShape,
    /// Seed of the initial weights, the training stream and the held-out set.
    pub seed: u64,
    /// Most optimizer steps (the cosine learning rate ends here).
    pub max_steps: usize,
    /// Stop after this many steps while the learning rate keeps the schedule
    /// of `max_steps` (0 = run to `max_steps`). Reproduces a run that
    /// `max_seconds` cut short.
    pub stop_after: usize,
    /// Wall-clock budget for training in seconds (0 = none); whichever of
    /// this and `max_steps` comes first stops training.
    pub max_seconds: f64,
    /// Worked solutions per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps before the cosine decay.
    pub warmup_steps: usize,
    /// Learning rate at the end of the cosine, as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Gradient-norm clip.
    pub grad_clip: f64,
    /// Fraction of training solutions with one deliberate arithmetic slip
    /// (among those shown behind the student prompt).
    pub flawed_fraction: f64,
    /// Fraction of training solutions shown behind the teacher prompt (the
    /// question and the reference answer through `teacher_template`); these
    /// are always correct. 0 gives a base model whose teacher is noise.
    pub teacher_fraction: f64,
    /// The teacher template of those prompts; keep it equal to the RL run's
    /// `data.teacher_template` (`configs/builtin.toml` uses this default,
    /// [`BUILTIN_TEACHER_TEMPLATE`]).
    pub teacher_template: String,
    /// Held-out problems for the accuracy check (0 skips it).
    pub eval_problems: usize,
    /// Token budget of a held-out answer.
    pub eval_max_new_tokens: usize,
    /// Log the loss every this many steps (0 = never).
    pub log_every: usize,
    /// libtorch intra-op CPU threads for the process (0 = libtorch's
    /// default). One is fastest for a model this small: with more, the
    /// threads spend their time synchronising on tiny matrices (measured in
    /// docs/DATA.md). The result does not depend on it.
    pub threads: usize,
    /// Fraction of training solutions that call the calculator tool instead
    /// of working the steps by hand ([`tool_use`]); 0 (the built-in base)
    /// keeps the plain chat template and single-turn solutions. Above 0 the
    /// tokenizer gets [`char_tokenizer::AGENT_CHAT_TEMPLATE`] and the
    /// held-out check plays calculator episodes.
    pub tool_fraction: f64,
    /// Most model turns of a held-out episode (with `tool_fraction > 0`).
    pub eval_max_turns: usize,
    /// The vision-language base (`[vision]`, [`vision`]); off by default.
    pub vision: vision::VisionPretrain,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            out_dir: PathBuf::from("assets/tiny-arith"),
            task: TaskConfig::default(),
            model: ModelShape::default(),
            seed: 0,
            max_steps: 1500,
            stop_after: 0,
            max_seconds: 600.0,
            batch_size: 32,
            lr: 3e-3,
            warmup_steps: 30,
            min_lr_ratio: 0.1,
            weight_decay: 0.01,
            grad_clip: 1.0,
            flawed_fraction: 0.25,
            teacher_fraction: 0.3,
            teacher_template: BUILTIN_TEACHER_TEMPLATE.to_string(),
            eval_problems: 200,
            eval_max_new_tokens: 64,
            log_every: 50,
            threads: 1,
            tool_fraction: 0.0,
            eval_max_turns: 4,
            vision: vision::VisionPretrain::default(),
        }
    }
}

/// What a pretraining run did and how good the result is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainReport {
    /// Where the model was saved.
    pub out_dir: PathBuf,
    /// Optimizer steps taken.
    pub steps: usize,
    /// Solutions trained on.
    pub examples_seen: usize,
    /// Mean loss over the last (up to) 20 steps.
    pub final_loss: f64,
    /// Number of parameters.
    pub parameters: i64,
    /// Greedy accuracy on held-out problems (NaN when `eval_problems` is 0).
    pub heldout_accuracy: f64,
    /// Accuracy on the same problems when sampling at temperature 1 (what an
    /// RL run starts from; NaN when `eval_problems` is 0).
    pub heldout_sampled_accuracy: f64,
    /// Held-out problems evaluated.
    pub heldout_problems: usize,
    /// Mean log-prob of the correct answer's tokens behind the student
    /// prompt, teacher-forced on the correct solution (NaN without held-out
    /// problems); every step's result when the privileged text is the worked
    /// solution ([`ScoredTokens::Results`]).
    #[serde(default)]
    pub heldout_student_answer_logprob: f64,
    /// The same behind the teacher prompt (with the reference answer).
    #[serde(default)]
    pub heldout_teacher_answer_logprob: f64,
    /// Fraction of the greedy held-out episodes that called the calculator
    /// (NaN without tool use or held-out problems).
    #[serde(default = "nan")]
    pub heldout_tool_call_rate: f64,
    /// The same for the sampled episodes (what an RL run starts from).
    #[serde(default = "nan")]
    pub heldout_sampled_tool_call_rate: f64,
    /// Accuracy of the sampled episodes that called the calculator.
    #[serde(default = "nan")]
    pub heldout_sampled_accuracy_with_tool: f64,
    /// Seconds spent training.
    pub train_seconds: f64,
    /// Seconds spent on the held-out check.
    pub eval_seconds: f64,
    /// Seconds for the whole run, saving included.
    pub wall_seconds: f64,
}

/// Serde default of the fields older reports do not have.
fn nan() -> f64 {
    f64::NAN
}

impl PretrainConfig {
    /// Check the values that would make training meaningless.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, msg: &str| Err(Error::config(format!("pretrain.{key}"), msg));
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr", "must be a positive number");
        }
        if !(0.0..=1.0).contains(&self.flawed_fraction) {
            return bad("flawed_fraction", "must lie in [0, 1]");
        }
        if !(0.0..=1.0).contains(&self.teacher_fraction) {
            return bad("teacher_fraction", "must lie in [0, 1]");
        }
        if !(0.0..=1.0).contains(&self.tool_fraction) {
            return bad("tool_fraction", "must lie in [0, 1]");
        }
        if self.tool_fraction > 0.0 && self.eval_max_turns < 2 {
            return bad(
                "eval_max_turns",
                "must be at least 2 with tool use (a call, then the answer)",
            );
        }
        TeacherPrompt::new(self.teacher_template.clone())
            .map_err(|e| Error::config("pretrain.teacher_template", e.to_string()))?;
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad("min_lr_ratio", "must lie in [0, 1]");
        }
        if self.max_seconds.is_nan() || self.max_seconds < 0.0 {
            return bad("max_seconds", "must be >= 0");
        }
        if self.grad_clip.is_nan() || self.grad_clip <= 0.0 {
            return bad("grad_clip", "must be positive");
        }
        ArithmeticTask::new(self.task.clone()).map(|_| ())
    }

    /// The chat template of the tokenizer: with a tool turn when the
    /// solutions call the tool.
    pub fn chat_template(&self) -> &'static str {
        if self.tool_fraction > 0.0 {
            char_tokenizer::AGENT_CHAT_TEMPLATE
        } else {
            char_tokenizer::CHAT_TEMPLATE
        }
    }

    /// Learning rate at `step`: linear warm-up to `lr`, then a cosine down to
    /// `min_lr_ratio * lr` at `max_steps`.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.max_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)
    }
}

/// The base model's configuration: [`Config::tiny`] with the given shape and
/// the character tokenizer's vocabulary and special ids.
pub fn base_model_config(shape: &ModelShape) -> Config {
    let mut config = Config::tiny();
    config.vocab_size = char_tokenizer::vocab_size() as i64;
    config.hidden_size = shape.hidden_size;
    config.intermediate_size = shape.intermediate_size;
    config.num_hidden_layers = shape.num_hidden_layers;
    config.num_attention_heads = shape.num_attention_heads;
    config.num_key_value_heads = shape.num_key_value_heads;
    config.head_dim = shape.hidden_size / shape.num_attention_heads.max(1);
    config.eos_token_id = vec![EOS_ID];
    config.pad_token_id = Some(PAD_ID);
    config.bos_token_id = None;
    config
}

/// Token ids of a user prompt rendered through the tokenizer's chat template,
/// ending with the assistant marker.
pub fn encode_prompt(tokenizer: &Tokenizer, prompt: &str) -> Result<Vec<i64>> {
    chat_prompt_ids(tokenizer, prompt)
}

/// Train the base model, check it on held-out problems and save it.
pub fn pretrain(cfg: &PretrainConfig) -> Result<PretrainReport> {
    cfg.validate()?;
    if cfg.vision.enabled() {
        return vision::pretrain_vl(cfg);
    }
    let started = Instant::now();
    if cfg.threads > 0 {
        tch::set_num_threads(i32::try_from(cfg.threads).unwrap_or(i32::MAX));
    }
    let task = ArithmeticTask::new(cfg.task.clone())?;
    let out = cfg.out_dir.as_path();
    // The tokenizer files go to a scratch folder; `out` is only written by the
    // final (per-file atomic) save, so an interrupted run leaves it as it was.
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let scratch = ScratchDir::new(out.join(format!(".pretrain-{}", std::process::id())))?;
    write_char_tokenizer_with(scratch.path(), cfg.chat_template())?;
    let mut model = LoadedModel::random(base_model_config(&cfg.model), Device::Cpu, cfg.seed)?;
    model.tokenizer = Tokenizer::from_dir(scratch.path(), &[EOS_ID], Some(PAD_ID))?;
    let tokenizer = model.tokenizer.as_ref().ok_or_else(|| Error::Model {
        path: scratch.path().join("tokenizer.json"),
        msg: "the character tokenizer just written could not be read back".into(),
    })?;

    // Held-out problems first; training never shows their expressions.
    let held_out = held_out_problems(&task, cfg.eval_problems, cfg.seed);
    let held_out_exprs: HashSet<String> = held_out.iter().map(Problem::expression).collect();

    let losses = optimize(cfg, &model.vs, started, "pretrain", &mut |rng| {
        let batch = training_batch(cfg, &task, tokenizer, &held_out_exprs, rng)?;
        solution_nll(&model, &batch)
    })?;
    let steps = losses.len();
    let train_seconds = started.elapsed().as_secs_f64();

    let eval_started = Instant::now();
    let teacher = TeacherPrompt::new(cfg.teacher_template.clone())?;
    let mut tool_rates = (f64::NAN, f64::NAN, f64::NAN);
    let (heldout_accuracy, heldout_sampled_accuracy) = if held_out.is_empty() {
        (f64::NAN, f64::NAN)
    } else if cfg.tool_fraction > 0.0 {
        let (tokens, turns) = (cfg.eval_max_new_tokens, cfg.eval_max_turns);
        let greedy = tool_use::heldout_episodes(&model, &held_out, tokens, turns, None)?;
        let sampled = tool_use::heldout_episodes(&model, &held_out, tokens, turns, Some(cfg.seed))?;
        tool_rates = (
            greedy.tool_call_rate,
            sampled.tool_call_rate,
            sampled.accuracy_with_tool,
        );
        (greedy.accuracy, sampled.accuracy)
    } else {
        (
            heldout_accuracy(&model, &held_out, cfg.eval_max_new_tokens, None)?,
            heldout_accuracy(&model, &held_out, cfg.eval_max_new_tokens, Some(cfg.seed))?,
        )
    };
    // With the worked solution as privileged text, the teacher knows every
    // step's result: score all of them, not only the final answer.
    let scored = match cfg.task.privileged {
        Privileged::Answer => ScoredTokens::Answer,
        Privileged::Solution => ScoredTokens::Results,
    };
    let (student_lp, teacher_lp) = if held_out.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        (
            scored_token_logprob(&model, &held_out, None, scored)?,
            scored_token_logprob(
                &model,
                &held_out,
                Some((&teacher, cfg.task.privileged)),
                scored,
            )?,
        )
    };
    let eval_seconds = eval_started.elapsed().as_secs_f64();
    model.save(out)?;

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
    let report = PretrainReport {
        out_dir: out.to_path_buf(),
        steps,
        examples_seen: steps * cfg.batch_size,
        final_loss,
        parameters,
        heldout_accuracy,
        heldout_sampled_accuracy,
        heldout_problems: held_out.len(),
        heldout_student_answer_logprob: student_lp,
        heldout_teacher_answer_logprob: teacher_lp,
        heldout_tool_call_rate: tool_rates.0,
        heldout_sampled_tool_call_rate: tool_rates.1,
        heldout_sampled_accuracy_with_tool: tool_rates.2,
        train_seconds,
        eval_seconds,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    tracing::debug!(?report, "pretrain done");
    Ok(report)
}

/// The optimisation loop both pretraining paths share: AdamW over `vs`
/// (`lr` with its schedule, `weight_decay`, the gradient-norm clip) until
/// `max_steps` (or `stop_after`) steps or the `max_seconds` budget; `loss_at`
/// draws a step's batch from the run's random stream and returns its loss.
/// Returns each step's loss; a non-finite loss is an error naming the step.
pub(crate) fn optimize(
    cfg: &PretrainConfig,
    vs: &nn::VarStore,
    started: Instant,
    label: &str,
    loss_at: &mut dyn FnMut(&mut StdRng) -> Result<Tensor>,
) -> Result<Vec<f64>> {
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_add(1));
    let mut opt = nn::AdamW {
        wd: cfg.weight_decay,
        ..Default::default()
    }
    .build(vs, cfg.lr)?;
    let last = match cfg.stop_after {
        0 => cfg.max_steps,
        n => n.min(cfg.max_steps),
    };
    let mut losses: Vec<f64> = Vec::with_capacity(last);
    while losses.len() < last {
        let steps = losses.len();
        if cfg.max_seconds > 0.0 && started.elapsed().as_secs_f64() >= cfg.max_seconds {
            tracing::info!(steps, "pretrain time budget reached");
            break;
        }
        opt.set_lr(cfg.lr_at(steps));
        let loss = loss_at(&mut rng)?;
        let value = loss.f_double_value(&[])?;
        if !value.is_finite() {
            return Err(Error::InvalidInput(format!(
                "pretrain loss became {value} at step {steps}; lower pretrain.lr"
            )));
        }
        opt.backward_step_clip_norm(&loss, cfg.grad_clip);
        losses.push(value);
        if cfg.log_every > 0 && losses.len() % cfg.log_every == 0 {
            tracing::info!(
                step = losses.len(),
                loss = value,
                lr = cfg.lr_at(losses.len()),
                "{label}"
            );
        }
    }
    Ok(losses)
}

/// The held-out problems of a pretraining run with `seed`: drawn from a
/// stream of their own, and never used for training.
pub fn held_out_problems(task: &ArithmeticTask, n: usize, seed: u64) -> Vec<Problem> {
    let mut rng = StdRng::seed_from_u64(seed ^ HELD_OUT_SALT);
    (0..n).map(|_| task.problem(&mut rng)).collect()
}

/// One training solution: the prompt, the response (EOS included) and the
/// response's loss mask (1 on the model's tokens, 0 on a tool turn's).
#[derive(Debug)]
struct Sample {
    pair: PromptResponse,
    loss_mask: Vec<f32>,
}

/// One batch of (prompt, worked solution + EOS) samples, none of them held
/// out. Each draws, in order: teacher prompt or not, tool use or not (only
/// with `tool_fraction > 0`, so the built-in base's stream is unchanged), a
/// slip or not (student prompt only).
fn training_batch(
    cfg: &PretrainConfig,
    task: &ArithmeticTask,
    tokenizer: &Tokenizer,
    held_out: &HashSet<String>,
    rng: &mut StdRng,
) -> Result<Vec<Sample>> {
    let teacher = TeacherPrompt::new(cfg.teacher_template.clone())?;
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
        let as_teacher = rng.random_bool(cfg.teacher_fraction);
        let with_tool = cfg.tool_fraction > 0.0 && rng.random_bool(cfg.tool_fraction);
        let flawed = !as_teacher && rng.random_bool(cfg.flawed_fraction);
        let prompt = if as_teacher {
            teacher_prompt_ids_with(tokenizer, &teacher, &problem, cfg.task.privileged)?
        } else {
            encode_prompt(tokenizer, &problem.prompt())?
        };
        let (response, loss_mask) = if with_tool {
            let expression = if flawed {
                tool_use::flawed_expression(&problem, rng)
            } else {
                problem.expression()
            };
            let episode = tool_use::tool_use_episode(tokenizer, &problem, &expression, EOS_ID)?;
            (episode.response_ids(), episode.response_loss_mask())
        } else {
            let solution = if flawed {
                problem.flawed_solution(rng).0
            } else {
                problem.solution()
            };
            let mut response = tokenizer.encode(&solution, false)?;
            response.push(EOS_ID);
            let n = response.len();
            (response, vec![1.0; n])
        };
        batch.push(Sample {
            pair: PromptResponse {
                prompt,
                response,
                image_key: 0,
            },
            loss_mask,
        });
    }
    Ok(batch)
}

/// Token ids of the teacher's context for `problem`: the question and its
/// reference answer through `teacher`, exactly as an RL run's teacher sees it.
pub fn teacher_prompt_ids(
    tokenizer: &Tokenizer,
    teacher: &TeacherPrompt,
    problem: &Problem,
) -> Result<Vec<i64>> {
    teacher_prompt_ids_with(tokenizer, teacher, problem, Privileged::Answer)
}

/// [`teacher_prompt_ids`] with the chosen privileged text (the task's
/// `privileged`: the answer, or the worked solution's steps).
pub fn teacher_prompt_ids_with(
    tokenizer: &Tokenizer,
    teacher: &TeacherPrompt,
    problem: &Problem,
    privileged: Privileged,
) -> Result<Vec<i64>> {
    teacher.ids(tokenizer, &problem.to_example_with("pretrain", privileged))
}

/// Token ranges of a worked solution where it states its final answer: the
/// result of the last step line (where the answer is first written; `a-b=`
/// *`28`*) and the number after `Answer: ` (a copy of it).
fn answer_spans(tokenizer: &Tokenizer, solution: &str) -> Result<Vec<(usize, usize)>> {
    let len = |text: &str| -> Result<usize> { Ok(tokenizer.encode(text, false)?.len()) };
    let mut spans = Vec::new();
    let Some(at) = solution.rfind(ANSWER_PREFIX) else {
        return Ok(spans);
    };
    let steps = &solution[..at];
    if let Some(eq) = steps.rfind('=') {
        let end = steps.trim_end_matches('\n').len();
        spans.push((len(&solution[..eq + 1])?, len(&solution[..end])?));
    }
    let after = (at + ANSWER_PREFIX.len() + 1).min(solution.len());
    spans.push((len(&solution[..after])?, len(solution)?));
    Ok(spans)
}

/// Mean log-prob of the correct answer's tokens, teacher-forced on each
/// problem's correct solution, behind the student prompt (`teacher = None`)
/// or behind the teacher prompt with the final answer as privileged text.
/// The answer's tokens are where the solution states its final answer: the
/// result of the last step line, and the number after `Answer: `. Averaged
/// over every such token of every problem.
pub fn answer_token_logprob(
    model: &LoadedModel,
    problems: &[Problem],
    teacher: Option<&TeacherPrompt>,
) -> Result<f64> {
    let teacher = teacher.map(|t| (t, Privileged::Answer));
    scored_token_logprob(model, problems, teacher, ScoredTokens::Answer)
}

/// Which tokens of a correct worked solution [`scored_token_logprob`] averages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoredTokens {
    /// Where the final answer is stated (see [`answer_token_logprob`]).
    Answer,
    /// The result of every step line (`=`*`21`*), intermediate ones included.
    Results,
}

/// Mean log-prob of the chosen tokens of each problem's correct solution,
/// teacher-forced behind the student prompt (`teacher = None`) or behind the
/// teacher prompt with the given privileged text.
pub fn scored_token_logprob(
    model: &LoadedModel,
    problems: &[Problem],
    teacher: Option<(&TeacherPrompt, Privileged)>,
    scored: ScoredTokens,
) -> Result<f64> {
    let tokenizer = model
        .tokenizer
        .as_ref()
        .ok_or_else(|| Error::InvalidInput("the model has no tokenizer to score with".into()))?;
    let (mut total, mut count) = (0.0f64, 0usize);
    for chunk in problems.chunks(64) {
        let mut batch = Vec::with_capacity(chunk.len());
        let mut spans = Vec::with_capacity(chunk.len());
        for problem in chunk {
            let solution = problem.solution();
            let response = tokenizer.encode(&solution, false)?;
            spans.push(match scored {
                ScoredTokens::Answer => answer_spans(tokenizer, &solution)?,
                ScoredTokens::Results => result_spans(tokenizer, &solution)?,
            });
            let prompt = match teacher {
                Some((t, privileged)) => {
                    teacher_prompt_ids_with(tokenizer, t, problem, privileged)?
                }
                None => encode_prompt(tokenizer, &problem.prompt())?,
            };
            batch.push(PromptResponse {
                prompt,
                response,
                image_key: 0,
            });
        }
        let scores = tch::no_grad(|| model.response_scores(&batch, 1.0))?;
        let logprobs: Vec<Vec<f64>> =
            Vec::<Vec<f64>>::try_from(&scores.logprobs.to_kind(Kind::Double))?;
        for (row, row_spans) in logprobs.iter().zip(spans) {
            for (start, end) in row_spans {
                for lp in &row[start..end.min(row.len())] {
                    total += lp;
                    count += 1;
                }
            }
        }
    }
    Ok(total / count.max(1) as f64)
}

/// Token ranges of every step line's result (after its `=`, before its
/// newline) in a worked solution.
fn result_spans(tokenizer: &Tokenizer, solution: &str) -> Result<Vec<(usize, usize)>> {
    let len = |text: &str| -> Result<usize> { Ok(tokenizer.encode(text, false)?.len()) };
    let mut spans = Vec::new();
    let mut line_start = 0;
    for line in solution.split_inclusive('\n') {
        if let Some(eq) = line.find('=') {
            let end = line_start + line.trim_end_matches('\n').len();
            spans.push((
                len(&solution[..line_start + eq + 1])?,
                len(&solution[..end])?,
            ));
        }
        line_start += line.len();
    }
    Ok(spans)
}

/// Mean negative log-likelihood of the response tokens the model writes
/// (padding and tool turns excluded).
fn solution_nll(model: &LoadedModel, batch: &[Sample]) -> Result<Tensor> {
    let pairs: Vec<PromptResponse> = batch.iter().map(|s| s.pair.clone()).collect();
    let scores = model.response_scores(&pairs, 1.0)?;
    let width = scores.mask.size().last().copied().unwrap_or(0).max(0) as usize;
    let mut flat = Vec::with_capacity(batch.len() * width);
    for s in batch {
        let n = s.loss_mask.len().min(width);
        flat.extend_from_slice(&s.loss_mask[..n]);
        flat.extend(std::iter::repeat_n(0.0f32, width - n));
    }
    let loss_mask = Tensor::from_slice(&flat)
        .f_view([batch.len() as i64, width as i64])?
        .f_to_device(scores.mask.device())?;
    let mask = scores.mask.f_mul(&loss_mask)?;
    let total = scores.logprobs.f_mul(&mask)?.f_sum(Kind::Float)?;
    let count = mask.f_sum(Kind::Float)?.f_clamp_min(1.0)?;
    Ok(total.f_div(&count)?.f_neg()?)
}

/// Fraction of `problems` whose answer (the number after `Answer:`) equals
/// the true value: greedy decoding when `sample_seed` is `None`, otherwise
/// sampling at temperature 1 from that seed. Decodes in batches of 64.
pub fn heldout_accuracy(
    model: &LoadedModel,
    problems: &[Problem],
    max_new_tokens: usize,
    sample_seed: Option<u64>,
) -> Result<f64> {
    let tokenizer = model
        .tokenizer
        .as_ref()
        .ok_or_else(|| Error::InvalidInput("the model has no tokenizer to evaluate with".into()))?;
    let opts = GenerateOptions {
        max_new_tokens,
        greedy: sample_seed.is_none(),
        eos_ids: model.eos_ids(),
        pad_id: Some(model.pad_id()),
        ..GenerateOptions::default()
    };
    let mut rng = StdRng::seed_from_u64(sample_seed.unwrap_or(0));
    let mut correct = 0usize;
    for chunk in problems.chunks(64) {
        let prompts = chunk
            .iter()
            .map(|p| encode_prompt(tokenizer, &p.prompt()))
            .collect::<Result<Vec<_>>>()?;
        let generations = tch::no_grad(|| generate(&model.lm, &prompts, &opts, &mut rng))?;
        for (problem, generation) in chunk.iter().zip(&generations) {
            let text = tokenizer.decode(&generation.tokens, true)?;
            if extract_answer(&text) == Some(problem.answer) {
                correct += 1;
            }
        }
    }
    Ok(correct as f64 / problems.len().max(1) as f64)
}

/// Load a saved base model from `dir` on the CPU in f32.
pub fn load_base_model(dir: &Path) -> Result<LoadedModel> {
    LoadedModel::load(dir, Device::Cpu, Kind::Float)
}
