//! `rlsd train` with a vision-language policy (Qwen2.5-VL / Qwen3-VL): the
//! sequential step loop of [`super::sequential`] with the VL sampler and
//! teacher stages of [`crate::pipeline::vision`], on one process.
//!
//! Each step: draw prompts, sample `G` responses per prompt (one group at a
//! time, its images encoded once), verify, score with the teacher (the
//! privileged prompt around the same images), assign credit, train
//! ([`VlPolicy`]: each distinct prompt's images encoded once per batch, the
//! tower frozen unless `model.train_vision`), validate on the held-out
//! prompts when due ([`super::vision_validate`]), append the step's metrics line,
//! checkpoint when due and after the last step. A checkpoint's `model/` is a
//! loadable VL folder (weights plus the source folder's config, tokenizer,
//! chat template and preprocessor files); the run's `final/` is a copy of
//! the last one. Resume reloads the policy, the teacher
//! (`teacher.safetensors`), the AdamW state and the data cursor.
//!
//! What does not run here is refused by name before the run folder is
//! touched ([`check_vision_language_run`]).

use super::final_model::write_final_model;
use super::folder::{prepare_fresh, resolve_resume, RunLock};
use super::source::PromptSource;
use super::vision_validate::vl_validation_on;
use crate::checkpoint::{load_checkpoint, save_checkpoint_with_teacher, LoadedCheckpoint};
use crate::config::RunConfig;
use crate::data::TeacherPrompt;
use crate::device::parse_device;
use crate::error::{Error, Result};
use crate::metrics::MetricsWriter;
use crate::model::vision::{LoadedVlModel, VlPolicy};
use crate::model::{parse_kind, weights};
use crate::pipeline::vision::{bind_group_images, vl_rollout, vl_teacher_pass};
use crate::pipeline::{assign_credit, observe_step, step_stats, verify_all, StepPlan};
use crate::policy::Policy;
use crate::rlsd::{AdaptiveLambda, Algo};
use crate::stats::StepStats;
use crate::train::{train_step, Trainer};
use crate::verify::{build_verifier, Verifier};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Tensor;

/// What a finished VL run reports.
#[derive(Debug)]
pub struct VlRunReport {
    /// Stats of every step trained by this process, in order.
    pub steps: Vec<StepStats>,
    /// The last checkpoint written.
    pub last_checkpoint: Option<PathBuf>,
    /// `<out_dir>/final`, when a checkpoint was written.
    pub final_model: Option<PathBuf>,
}

/// Refuse, by name, what the VL loop does not run: other algorithms' extra
/// teacher passes (SDPO, CEPO, a full-distribution OPSD loss), the KL term,
/// thought-only credit, LoRA adapters, environments and split placement. `runtime.max_staleness` only permits sampling ahead:
/// the VL loop is always on-policy.
pub fn check_vision_language_run(cfg: &RunConfig) -> Result<()> {
    let no = |key: &str, what: &str| {
        Err(Error::config(
            key,
            format!("{what} is not supported when training a vision-language model yet"),
        ))
    };
    let algo = &cfg.algo;
    if algo.algo == Algo::Sdpo {
        return no("algo.algo", "sdpo (feedback candidates)");
    }
    if algo.algo.needs_negative_teacher() {
        return no("algo.algo", "cepo (the negative teacher pass)");
    }
    if algo.algo.distills() && algo.opsd_loss.needs_distribution() {
        return no(
            "algo.opsd_loss",
            "a full-distribution distillation loss (kl / jsd)",
        );
    }
    if algo.kl_coef != 0.0 {
        return no("algo.kl_coef", "the reference-model KL term");
    }
    if algo.rlsd_thought_only {
        return no("algo.rlsd_thought_only", "thought-only credit");
    }
    if cfg.model.lora.is_some() || cfg.model.adapter.is_some() {
        return no("model.lora", "a LoRA adapter");
    }
    if cfg.env.enabled() {
        return no("env.kind", "a multi-turn environment");
    }
    if cfg.runtime.placement == crate::config::Placement::Split {
        return no("runtime.placement", "split placement");
    }
    Ok(())
}

/// Train `cfg.runtime.steps` steps on prompts from `source` (from the
/// checkpoint `resume` when given), calling `on_step` after each.
pub fn train_vision_language(
    cfg: &RunConfig,
    mut source: Box<dyn PromptSource>,
    resume: Option<&Path>,
    overwrite: bool,
    on_step: &mut dyn FnMut(&StepStats),
) -> Result<VlRunReport> {
    check_vision_language_run(cfg)?;
    crate::memory::refuse_if_too_big(cfg)?;
    let verifier = build_verifier(&cfg.verifier)?;
    let template = TeacherPrompt::for_data(&cfg.data)?;
    let kind = parse_kind(&cfg.model.dtype)?;
    let device = parse_device(&cfg.runtime.optimizer_device)?;
    let teacher_device = parse_device(&cfg.runtime.teacher_device)?;
    let out_dir = cfg.runtime.out_dir.clone();
    let ckpt_root = out_dir.join(&cfg.checkpoint.dir);
    let _lock = RunLock::acquire(&out_dir)?;
    let checkpoint = match resume {
        Some(arg) => Some(load_checkpoint(&resolve_resume(
            arg,
            &ckpt_root,
            &cfg.checkpoint.dir,
        )?)?),
        None => {
            prepare_fresh(&out_dir, &ckpt_root, overwrite)?;
            None
        }
    };
    let model_dir = match &checkpoint {
        Some(ck) => ck.model_dir.clone(),
        None => cfg.model.resolve()?,
    };
    let load = |dev| LoadedVlModel::load(&model_dir, dev, kind);
    let policy = VlPolicy::new(load(device)?, cfg.model.train_vision);
    let teacher = VlPolicy::new(load(teacher_device)?, false);
    let mut teacher_version = 0;
    if let Some(ck) = &checkpoint {
        teacher_version = ck.step;
        if let Some(weights) = &ck.teacher {
            load_named(&teacher, weights)?;
            teacher_version = ck.state["teacher_version"].as_u64().unwrap_or(ck.step);
        }
    }
    let mut trainer = Trainer::new(policy, cfg.algo.clone(), cfg.optim.clone())?;
    let metrics_path = out_dir.join("metrics.jsonl");
    let (first, mut metrics) = match &checkpoint {
        Some(ck) => {
            trainer.optimizer.load_state_tensors(&ck.optimizer)?;
            source.restore(&ck.state["cursor"])?;
            (ck.step + 1, MetricsWriter::resume(&metrics_path, ck.step)?)
        }
        None => (1, MetricsWriter::create(&metrics_path)?),
    };
    let mut run = VlLoop {
        cfg,
        trainer,
        teacher,
        teacher_version,
        verifier: &*verifier,
        template,
        model_dir,
    };
    let mut report = VlRunReport {
        steps: Vec::new(),
        last_checkpoint: None,
        final_model: None,
    };
    let rule = cfg.algo.adaptive_rule();
    let mut lambda_state = match &checkpoint {
        Some(ck) => resumed_adaptive(cfg, ck)?,
        None => cfg.algo.adaptive_start(),
    };
    let held_out = match cfg.validation.every {
        0 => Vec::new(),
        _ => super::evaluate::held_out_examples(cfg)?,
    };
    let probe_template = TeacherPrompt::for_data(&cfg.data)?;
    let validate = |policy: &VlPolicy, step| {
        vl_validation_on(
            cfg,
            policy,
            &held_out,
            &*verifier,
            Some(&probe_template),
            step,
        )
    };
    // Validation before step 1 goes with step 1's stats.
    let mut pending = match first {
        1 => validate(&run.trainer.policy, 0)?,
        _ => Vec::new(),
    };
    for step in first..=cfg.runtime.steps {
        let examples = source.next_batch(cfg.rollout.batch_prompts)?;
        let plan = StepPlan::new(cfg, step, 0, examples, source.cursor())
            .with_schedule(&cfg.algo, &lambda_state);
        let cursor = plan.cursor_after.clone();
        let mut stats = run.step(plan)?;
        pending.extend(validate(&run.trainer.policy, step)?);
        stats.validation = std::mem::take(&mut pending);
        observe_step(&mut lambda_state, &rule, &stats);
        metrics.append(&stats)?;
        metrics.sync()?;
        on_step(&stats);
        report.steps.push(stats);
        if cfg.checkpoint.is_due(step) || step == cfg.runtime.steps {
            report.last_checkpoint =
                Some(run.checkpoint(step, &ckpt_root, &cursor, &lambda_state)?);
        }
    }
    if let Some(ck) = &report.last_checkpoint {
        report.final_model = Some(write_final_model(&out_dir, ck)?);
    }
    Ok(report)
}

/// The models and fixed inputs of the loop.
struct VlLoop<'a> {
    cfg: &'a RunConfig,
    trainer: Trainer<VlPolicy>,
    teacher: VlPolicy,
    /// Policy version of the teacher's weights.
    teacher_version: u64,
    verifier: &'a dyn Verifier,
    template: TeacherPrompt,
    /// Where the non-weight files of a saved model come from.
    model_dir: PathBuf,
}

impl VlLoop<'_> {
    /// Generate, verify, teach, credit and train one step.
    fn step(&mut self, plan: StepPlan) -> Result<StepStats> {
        let cfg = self.cfg;
        if plan.teacher_version > self.teacher_version {
            let policy = self.trainer.policy.var_store();
            self.teacher.var_store_mut().copy(policy)?;
            self.teacher_version = plan.teacher_version;
        }
        let t = Instant::now();
        let version = plan.step - 1;
        let (mut rolled, prompts) = vl_rollout(&self.trainer.policy, plan, version, &cfg.rollout)?;
        rolled.timings.generate_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut scored = verify_all(self.verifier, rolled)?;
        scored.rollout.timings.verify_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut taught = vl_teacher_pass(
            &self.teacher,
            self.teacher_version,
            &self.template,
            &prompts,
            scored,
            cfg.rollout.temperature,
        )?;
        taught.scored.rollout.timings.teacher_s = t.elapsed().as_secs_f64();
        let credit = assign_credit(taught, cfg.rollout.group_size, &cfg.algo)?;
        let mut tb = credit.train_batch(&self.trainer.algo, cfg.rollout.temperature);
        bind_group_images(&self.trainer.policy, &prompts, credit.rollouts(), &mut tb)?;
        let trained = train_step(&mut self.trainer, &tb);
        self.trainer.policy.clear_images();
        Ok(step_stats(
            &credit,
            &tb,
            trained?,
            &cfg.algo,
            self.trainer.policy.model.tokenizer.as_ref(),
            cfg.observe.completions_per_step,
        ))
    }

    /// Save the policy, AdamW state and data cursor after `step`.
    fn checkpoint(
        &self,
        step: u64,
        root: &Path,
        cursor: &serde_json::Value,
        adaptive: &AdaptiveLambda,
    ) -> Result<PathBuf> {
        let state = serde_json::json!({
            "step": step,
            "policy_version": step,
            "teacher_version": self.teacher_version,
            "cursor": cursor,
            "vision_language": true,
            // The adaptive lambda schedule's state after `step`, so an
            // adaptive run resumes exactly.
            "adaptive_lambda": adaptive,
        });
        let write = |dir: &Path| write_vl_folder(&self.trainer.policy, &self.model_dir, dir);
        let mut teacher: Vec<(String, Tensor)> =
            self.teacher.var_store().variables().into_iter().collect();
        teacher.sort_by(|a, b| a.0.cmp(&b.0));
        save_checkpoint_with_teacher(
            root,
            step,
            &write,
            &self.trainer.optimizer.state_tensors(),
            Some(&teacher),
            &state,
            &self.cfg.to_toml(),
            self.cfg.checkpoint.keep_last,
        )
    }
}

/// The adaptive lambda state a resumed run continues from: the checkpoint's
/// `adaptive_lambda`; a checkpoint without one resumes a fixed schedule (its
/// state is unused) and cannot resume an adaptive one.
fn resumed_adaptive(cfg: &RunConfig, ck: &LoadedCheckpoint) -> Result<AdaptiveLambda> {
    let state_file = || {
        ck.dir
            .join(crate::checkpoint::STATE_FILE)
            .display()
            .to_string()
    };
    match ck.state.get("adaptive_lambda").filter(|v| !v.is_null()) {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| Error::InvalidInput(format!("{}: `adaptive_lambda`: {e}", state_file()))),
        None if cfg.algo.lambda_schedule == crate::rlsd::LambdaSchedule::Adaptive => {
            Err(Error::config(
                "algo.lambda_schedule",
                format!(
                    "\"adaptive\" cannot resume from {}: it has no `adaptive_lambda`",
                    state_file()
                ),
            ))
        }
        None => Ok(cfg.algo.adaptive_start()),
    }
}

/// Copy checkpointed weights `(name, tensor)` into `policy`'s variables of
/// the same names; a name the model lacks (or misses) is an error.
fn load_named(policy: &VlPolicy, weights: &[(String, Tensor)]) -> Result<()> {
    let vars = policy.var_store().variables();
    if vars.len() != weights.len() {
        return Err(Error::InvalidInput(format!(
            "the checkpoint's teacher has {} tensors, the model {}",
            weights.len(),
            vars.len()
        )));
    }
    tch::no_grad(|| -> Result<()> {
        for (name, t) in weights {
            let mut var = vars
                .get(name)
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "the checkpoint's teacher has an unknown tensor {name}"
                    ))
                })?
                .shallow_clone();
            var.f_copy_(&t.f_to_device(var.device())?.f_to_kind(var.kind())?)?;
        }
        Ok(())
    })
}

/// Write `policy` as a Hugging Face VL folder into `dir`: `model.safetensors`
/// plus every other file of `source` (config, tokenizer, chat template,
/// preprocessor) but its weights.
pub fn write_vl_folder(policy: &VlPolicy, source: &Path, dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(source).map_err(|e| Error::io(source, e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io(source, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let weights_file =
            name.ends_with(".safetensors") || name.ends_with(".safetensors.index.json");
        if !path.is_file() || weights_file || name.starts_with('.') {
            continue;
        }
        let to = dir.join(name);
        std::fs::copy(&path, &to).map_err(|e| Error::io(&to, e))?;
    }
    weights::save_weights(policy.var_store(), &dir.join("model.safetensors"))
}
