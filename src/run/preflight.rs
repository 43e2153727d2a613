//! Start-up checks of a run that need more than the config text, made
//! before the run folder is touched (so a refused run writes nothing):
//!
//! - the devices exist (the config's validation only checks their names);
//! - the model is not a vision-language model (`rlsd train` sends those to
//!   the sequential VL loop before these checks; the actor runtime and
//!   data-parallel ranks do not train them);
//! - the verifier builds, and a command verifier's program exists;
//! - the prompts load (the built-in task's settings are valid), and there
//!   are enough of them for `runtime.steps` when `data.epochs` bounds them;
//! - every prompt, student and teacher, leaves room for
//!   `rollout.max_new_tokens` within the model's context
//!   (`max_position_embeddings`), and one row fits `rollout.kv_cache_bytes`;
//! - the memory plan fits the devices ([`crate::memory::refuse_if_too_big`]).
//!
//! A model folder that cannot be read here is left to the loader to report.

use std::path::PathBuf;

use crate::config::RunConfig;
use crate::data::prompt::student_prompt_ids;
use crate::data::{Dataset, TeacherPrompt};
use crate::error::{Error, Result};
use crate::model::config::Config;
use crate::model::Tokenizer;
use crate::verify::VerifierKind;

/// Every check above, in order; the first problem is returned. An embedding
/// program that brings its own verifier or prompt source turns the checks
/// of the configured ones off (`config_verifier`, `config_data` false).
pub fn check_run(cfg: &RunConfig, config_verifier: bool, config_data: bool) -> Result<()> {
    let rt = &cfg.runtime;
    for (key, dev) in [
        ("runtime.sampler_device", &rt.sampler_device),
        ("runtime.teacher_device", &rt.teacher_device),
        ("runtime.optimizer_device", &rt.optimizer_device),
    ] {
        crate::device::parse_device(dev).map_err(|e| e.at_key(key))?;
    }
    check_inputs(cfg, config_verifier, config_data)?;
    crate::memory::refuse_if_too_big(cfg)
}

/// The checks of the verifier and the prompts alone: what a data-parallel
/// rank checks, since its device comes from the launcher
/// (`RLSD_DIST_DEVICE`) and its memory plan is of its own share
/// (`distributed::rank_memory`).
pub fn check_inputs(cfg: &RunConfig, config_verifier: bool, config_data: bool) -> Result<()> {
    refuse_vision_language(cfg)?;
    if config_verifier {
        check_verifier(cfg)?;
    }
    if config_data {
        let data = Dataset::from_config(&cfg.data)?;
        check_data_lasts(cfg, data.len())?;
        if let Some((model, tokenizer)) = model_and_tokenizer(cfg)? {
            check_prompts_fit(cfg, &data, &model, &tokenizer)?;
        }
    }
    Ok(())
}

/// Refuse a vision-language model (a folder whose `config.json` has a
/// `vision_config`, or a missing folder named like a known one) here: the
/// actor runtime and data-parallel ranks do not train them; `rlsd train` on
/// one process runs them through [`crate::run::vision_train`] instead.
pub fn refuse_vision_language(cfg: &RunConfig) -> Result<()> {
    let vl = match cfg.model.resolve() {
        Ok(dir) => crate::model::vision::VlConfig::is_vl_file(&dir.join("config.json")),
        Err(_) => crate::memory::vision::known_vision(&cfg.model.path).is_some(),
    };
    if vl {
        return Err(Error::config(
            "model.path",
            format!(
                "{} is a vision-language model: `rlsd train` on one process trains it (the \
                 sequential vision-language loop), but the actor runtime's embedding API and \
                 data-parallel runs do not yet (see docs/VISION.md)",
                cfg.model.path
            ),
        ));
    }
    Ok(())
}

/// The verifier builds; a command verifier's program is a file (a name
/// without a slash is looked up in `PATH`).
fn check_verifier(cfg: &RunConfig) -> Result<()> {
    crate::verify::build_verifier(&cfg.verifier)?;
    if cfg.verifier.kind == VerifierKind::Command {
        let program = &cfg.verifier.command.program;
        if find_program(program).is_none() {
            return Err(Error::config(
                "verifier.command.program",
                format!(
                    "{program:?} not found (not a file, and not in PATH); every reward would be 0"
                ),
            ));
        }
    }
    Ok(())
}

/// Where `program` runs from: itself when it names a path, else the first
/// `PATH` entry holding a file of that name.
pub fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// With `data.epochs > 0` the data holds `len x epochs` prompts; a run of
/// `steps x batch_prompts` that needs more would stop part-way.
fn check_data_lasts(cfg: &RunConfig, len: usize) -> Result<()> {
    let epochs = cfg.data.epochs;
    if epochs == 0 {
        return Ok(());
    }
    let have = (len as u128) * u128::from(epochs);
    let need = u128::from(cfg.runtime.steps) * cfg.rollout.batch_prompts as u128;
    if need > have {
        return Err(Error::config(
            "runtime.steps",
            format!(
                "{} steps x {} prompts need {need} prompts, but the data holds {len} x data.epochs = {epochs} = {have}; raise data.epochs (0 repeats forever) or lower runtime.steps",
                cfg.runtime.steps, cfg.rollout.batch_prompts
            ),
        ));
    }
    Ok(())
}

/// The model's shape and tokenizer when its folder has both; a folder that
/// cannot be found is left to the loader, a malformed file is an error here.
fn model_and_tokenizer(cfg: &RunConfig) -> Result<Option<(Config, Tokenizer)>> {
    let Ok(dir) = cfg.model.resolve() else {
        return Ok(None);
    };
    let file = dir.join("config.json");
    if !file.is_file() {
        return Ok(None);
    }
    let model = Config::from_file(&file)?;
    let tokenizer = Tokenizer::from_dir(&dir, &model.eos_token_id, model.pad_token_id)?;
    Ok(tokenizer.map(|t| (model, t)))
}

/// Every prompt plus `rollout.max_new_tokens` fits the model's context, and
/// the longest student prompt's row fits `rollout.kv_cache_bytes`.
fn check_prompts_fit(
    cfg: &RunConfig,
    data: &Dataset,
    model: &Config,
    tokenizer: &Tokenizer,
) -> Result<()> {
    let context = usize::try_from(model.max_position_embeddings).unwrap_or(0);
    let new = cfg.rollout.max_new_tokens;
    if new >= context {
        return Err(Error::config(
            "rollout.max_new_tokens",
            format!(
                "{new} leaves no room for a prompt in the model's context of {context} tokens (max_position_embeddings)"
            ),
        ));
    }
    let teacher = TeacherPrompt::new(cfg.data.teacher_template.clone())?;
    let mut longest_student = 0;
    for ex in data.examples() {
        let student = student_prompt_ids(tokenizer, ex)?.len();
        let teacher_len = teacher.ids(tokenizer, ex)?.len();
        longest_student = longest_student.max(student);
        let (who, len) = if teacher_len > student {
            ("teacher", teacher_len)
        } else {
            ("student", student)
        };
        if len + new > context {
            return Err(Error::PromptTooLong {
                source_name: data.source().to_string(),
                id: ex.id.clone(),
                who,
                tokens: len,
                max_new_tokens: new,
                context,
            });
        }
    }
    let kv = cfg.rollout.kv_cache_bytes;
    if kv > 0 {
        let kind = crate::model::parse_kind(&cfg.model.dtype)?;
        let per_position = 2
            * model.num_hidden_layers.max(0) as u128
            * model.num_key_value_heads.max(0) as u128
            * model.head_dim.max(0) as u128
            * kind.elt_size_in_bytes() as u128;
        let row = per_position * (longest_student + new) as u128;
        if u128::from(kv) < row {
            return Err(Error::config(
                "rollout.kv_cache_bytes",
                format!(
                    "{kv} is below one response's KV cache: {row} bytes (longest prompt {longest_student} + {new} new tokens x {per_position} bytes per position)"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_by_path_or_in_path() {
        assert!(find_program("sh").is_some());
        assert!(find_program("/bin/sh").is_some() || find_program("/usr/bin/sh").is_some());
        assert!(find_program("rlsd-no-such-program-xyz").is_none());
        assert!(find_program("./no/such/file").is_none());
    }

    #[test]
    fn vision_language_models_are_refused_naming_model_path() {
        let mut cfg = RunConfig::from_toml_str("").unwrap();
        for dir in ["qwen2_5_vl_tiny", "qwen3_vl_tiny"] {
            cfg.model.path = format!("{}/tests/fixtures/vl/{dir}", env!("CARGO_MANIFEST_DIR"));
            let err = check_run(&cfg, false, false).unwrap_err().to_string();
            assert!(
                err.contains("model.path") && err.contains("vision-language"),
                "{err}"
            );
        }
        cfg.model.path = "/no/such/models/Qwen3-VL-8B-Instruct".into();
        let err = refuse_vision_language(&cfg).unwrap_err().to_string();
        assert!(err.contains("model.path"), "{err}");
        // A text model passes this check.
        cfg.model.path = "/no/such/models/Qwen2.5-1.5B-Instruct".into();
        refuse_vision_language(&cfg).unwrap();
    }

    #[test]
    fn data_that_runs_out_is_refused_by_steps() {
        let mut cfg = RunConfig::from_toml_str("").unwrap();
        cfg.data.epochs = 1;
        cfg.runtime.steps = 10;
        cfg.rollout.batch_prompts = 8;
        check_data_lasts(&cfg, 80).unwrap();
        let err = check_data_lasts(&cfg, 79).unwrap_err().to_string();
        assert!(err.contains("runtime.steps") && err.contains("80"), "{err}");
        cfg.data.epochs = 0;
        check_data_lasts(&cfg, 1).unwrap();
    }
}
