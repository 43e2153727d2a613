//! Weights in the Hugging Face safetensors layout: `model.safetensors`, or
//! shards listed in `model.safetensors.index.json`. Stored f32, bf16 or f16
//! tensors are copied into the var store, which casts them to its own kind and
//! device. Every parameter must be present with its exact shape.

use crate::error::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use tch::{nn, Kind, Tensor};

/// The weight files of a checkpoint folder, in a stable order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let bad = |msg: String| Error::Model {
            path: index.clone(),
            msg,
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no `weight_map` object".into()))?;
        let files: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
        if files.is_empty() {
            return Err(bad("`weight_map` lists no files".into()));
        }
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(Error::Model {
        path: dir.to_path_buf(),
        msg: "no model.safetensors or model.safetensors.index.json".into(),
    })
}

/// Fill every variable of `vs` from the checkpoint in `dir`.
///
/// Errors: a variable absent from all files ([`Error::MissingTensor`]), a tensor
/// whose shape differs from the variable's ([`Error::ShapeMismatch`]), or an
/// unreadable file. Tensors the model does not use (a tied `lm_head.weight`,
/// rotary buffers) are skipped with a debug log.
pub fn load_weights(vs: &nn::VarStore, dir: &Path) -> Result<()> {
    let vars = vs.variables();
    let mut loaded = BTreeSet::new();
    for file in weight_files(dir)? {
        let tensors = Tensor::read_safetensors(&file).map_err(|e| Error::Model {
            path: file.clone(),
            msg: format!("cannot read safetensors: {e}"),
        })?;
        for (name, t) in tensors {
            let Some(var) = vars.get(&name) else {
                tracing::debug!(tensor = %name, file = %file.display(), "unused tensor skipped");
                continue;
            };
            if var.size() != t.size() {
                return Err(Error::ShapeMismatch {
                    name,
                    expected: var.size(),
                    got: t.size(),
                });
            }
            tch::no_grad(|| var.shallow_clone().f_copy_(&t))?;
            loaded.insert(name);
        }
    }
    let mut missing: Vec<(&String, &Tensor)> =
        vars.iter().filter(|(n, _)| !loaded.contains(*n)).collect();
    missing.sort_by(|a, b| a.0.cmp(b.0));
    if let Some((name, var)) = missing.first() {
        return Err(Error::MissingTensor {
            path: dir.to_path_buf(),
            name: name.to_string(),
            expected: var.size(),
        });
    }
    Ok(())
}

/// The transformers name of a floating-point kind (`float32`, `bfloat16`, `float16`).
pub fn dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        Kind::Double => "float64",
        _ => "float32",
    }
}

/// Write every variable of `vs` to `path` as one safetensors file (CPU,
/// contiguous, in the var store's kind), sorted by name.
pub fn save_weights(vs: &nn::VarStore, path: &Path) -> Result<()> {
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let tensors = vars
        .into_iter()
        .map(|(n, t)| {
            Ok((
                n,
                t.f_detach()?
                    .f_to_device(tch::Device::Cpu)?
                    .f_contiguous()?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::write_safetensors(&tensors, path).map_err(|e| Error::Model {
        path: path.to_path_buf(),
        msg: format!("cannot write safetensors: {e}"),
    })
}

/// Parse a kind from a config string: `f32`, `bf16`, `f16` (and the
/// transformers spellings `float32`, `bfloat16`, `float16`).
pub fn parse_kind(s: &str) -> Result<Kind> {
    match s {
        "f32" | "float32" | "float" => Ok(Kind::Float),
        "bf16" | "bfloat16" => Ok(Kind::BFloat16),
        "f16" | "float16" | "half" => Ok(Kind::Half),
        other => Err(Error::config(
            "model.dtype",
            format!("unknown dtype {other:?} (expected f32, bf16 or f16)"),
        )),
    }
}
