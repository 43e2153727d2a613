//! The `rlsd` subcommands: what each prints and writes. Only `main.rs` uses
//! this layer; the work itself (evaluation, inspection, charts) is in the
//! layers below ([`crate::run::evaluate`], [`crate::observe::inspection`],
//! [`crate::observe::charts`]).
//!
//! - [`generate`]: chat-templated sampling from a model.
//! - [`export`]: a model as a Hugging Face folder, a LoRA adapter merged or not.
//! - [`compare`]: the paper's comparison of algorithms over seeds.
//! - [`train`]: `rlsd train` (actor runtime or one data-parallel rank) and
//!   `rlsd pretrain` with their printed summaries.
//! - [`console`]: what `inspect`, `eval`, `generate` and `info` print.
//!
//! Every command starts from a [`RunConfig`] (a TOML file plus `--set`
//! overrides) and a model chosen by [`ModelChoice`].

pub mod compare;
pub mod compare_table;
pub mod console;
pub mod export;
pub mod generate;
pub mod generate_vl;
pub mod train;

use crate::config::RunConfig;
use crate::device::parse_device;
use crate::error::{Error, Result};
use crate::model::{parse_kind, LoadedModel};
use std::path::{Path, PathBuf};

/// Which weights a command runs: the config's `[model]`, another model
/// folder, or the model inside a checkpoint directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ModelChoice {
    /// `[model].path` of the run config (`builtin` = the shipped base model).
    #[default]
    FromConfig,
    /// A Hugging Face model folder or Hub id (`--model DIR_OR_ID`).
    Dir(PathBuf),
    /// A checkpoint written by `rlsd train` (`--checkpoint DIR`); its `model/`
    /// folder is loaded after the manifest's checksums are verified.
    Checkpoint(PathBuf),
}

impl ModelChoice {
    /// From the two optional command-line flags; giving both is an error.
    pub fn from_flags(model: Option<PathBuf>, checkpoint: Option<PathBuf>) -> Result<Self> {
        match (model, checkpoint) {
            (Some(m), Some(c)) => Err(Error::InvalidInput(format!(
                "give either --model ({}) or --checkpoint ({}), not both",
                m.display(),
                c.display()
            ))),
            (Some(m), None) => Ok(ModelChoice::Dir(m)),
            (None, Some(c)) => Ok(ModelChoice::Checkpoint(c)),
            (None, None) => Ok(ModelChoice::FromConfig),
        }
    }

    /// The model folder to load.
    pub fn model_dir(&self, cfg: &RunConfig) -> Result<PathBuf> {
        match self {
            ModelChoice::FromConfig => cfg.model.resolve(),
            ModelChoice::Dir(d) => match d.to_str() {
                Some(s) if !d.is_dir() => crate::hub::resolve_model(
                    s,
                    cfg.model.revision.as_deref(),
                    &crate::hub::HubEnv::from_env(),
                ),
                _ => Ok(d.clone()),
            },
            ModelChoice::Checkpoint(c) => {
                if !c.is_dir() {
                    return Err(Error::InvalidInput(format!(
                        "checkpoint directory {} does not exist",
                        c.display()
                    )));
                }
                crate::checkpoint::verify_checkpoint(c)?;
                Ok(c.join("model"))
            }
        }
    }
}

/// Load the chosen model with the config's dtype onto `device` (a config
/// string: `cpu`, `cuda:N`, `auto`). A missing folder or a folder without
/// `config.json` is an error naming the folder.
pub fn load_model(cfg: &RunConfig, choice: &ModelChoice, device: &str) -> Result<LoadedModel> {
    let dir = choice.model_dir(cfg)?;
    check_model_dir(&dir)?;
    let kind = parse_kind(&cfg.model.dtype)?;
    let mut model = LoadedModel::load(&dir, parse_device(device)?, kind)?;
    cfg.model.attach_adapter(&mut model, false)?;
    if model.tokenizer.is_none() {
        return Err(Error::InvalidInput(format!(
            "model folder {} has no tokenizer.json; rlsd needs one to turn text into tokens",
            dir.display()
        )));
    }
    Ok(model)
}

/// A model folder must exist and hold a `config.json`.
fn check_model_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::InvalidInput(format!(
            "model directory {} does not exist (give --model DIR or set model.path)",
            dir.display()
        )));
    }
    if !dir.join("config.json").is_file() {
        return Err(Error::InvalidInput(format!(
            "model directory {} has no config.json; is it a Hugging Face model folder?",
            dir.display()
        )));
    }
    Ok(())
}

/// Write a text file, creating its folder; errors name the path.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}
