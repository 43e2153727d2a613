//! `rlsd export`: write a model as a Hugging Face folder. With `--merge`, an
//! attached LoRA adapter (a LoRA checkpoint's, or `--adapter DIR`) is folded
//! into the weights (peft's `merge_and_unload`) and the folder is a plain
//! model; without it, the base weights go out with peft's adapter files next
//! to them.

use super::{load_model, ModelChoice};
use crate::config::RunConfig;
use crate::error::{Error, Result};
use std::path::Path;

/// Export the chosen model (with its adapter, if any) into `out`, which must
/// not exist or be empty. Returns whether an adapter was merged.
pub fn export(cfg: &RunConfig, choice: &ModelChoice, out: &Path, merge: bool) -> Result<bool> {
    if out.exists() {
        let mut entries = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
        if entries.next().is_some() {
            return Err(Error::InvalidInput(format!(
                "export folder {} is not empty",
                out.display()
            )));
        }
    }
    let mut model = load_model(cfg, choice, "cpu")?;
    let merged = merge && model.lora.is_some();
    if merged {
        model.merge_lora()?;
    }
    model.save(out)?;
    Ok(merged)
}
