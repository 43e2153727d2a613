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
/// Each weight file is memory-mapped (read-only), and each tensor is copied
/// straight from the mapping into its parameter, converting dtype and device
/// on the way; the mapped pages of a tensor are released right after its
/// copy, so the peak is about the parameters plus the largest tensor, not the
/// file on top of the weights.
///
/// Errors: a variable absent from all files ([`Error::MissingTensor`]), a tensor
/// whose shape differs from the variable's ([`Error::ShapeMismatch`]), an
/// unsupported dtype, or an unreadable file. Tensors the model does not use
/// (a tied `lm_head.weight`, rotary buffers) are skipped with a debug log.
pub fn load_weights(vs: &nn::VarStore, dir: &Path) -> Result<()> {
    load_weights_renamed(vs, dir, &|_| None)
}

/// [`load_weights`] where `rename` maps a stored tensor name to the
/// variable's (`None` keeps it): how a vision-language model reads both the
/// Hub's names and transformers 5's.
pub fn load_weights_renamed(
    vs: &nn::VarStore,
    dir: &Path,
    rename: &dyn Fn(&str) -> Option<String>,
) -> Result<()> {
    let vars = vs.variables();
    let mut loaded = BTreeSet::new();
    for file in weight_files(dir)? {
        let bad = |msg: String| Error::Model {
            path: file.clone(),
            msg,
        };
        let map = Mapped::open(&file)?;
        let st = safetensors::SafeTensors::deserialize(map.bytes())
            .map_err(|e| bad(format!("cannot read safetensors: {e}")))?;
        for (stored, view) in st.iter() {
            let renamed = rename(stored);
            let name = renamed.as_deref().unwrap_or(stored);
            let Some(var) = vars.get(name) else {
                tracing::debug!(tensor = %name, file = %file.display(), "unused tensor skipped");
                continue;
            };
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            if var.size() != shape {
                // The shape the model expects comes from config.json: name
                // both files, since either may be the wrong one.
                return Err(bad(format!(
                    "tensor `{name}` has shape {shape:?}, but {} makes the model expect {:?}",
                    dir.join("config.json").display(),
                    var.size()
                )));
            }
            let kind = match view.dtype() {
                safetensors::Dtype::F32 => Kind::Float,
                safetensors::Dtype::BF16 => Kind::BFloat16,
                safetensors::Dtype::F16 => Kind::Half,
                safetensors::Dtype::F64 => Kind::Double,
                other => {
                    return Err(bad(format!(
                        "tensor {name} has unsupported dtype {other:?}"
                    )))
                }
            };
            let data = view.data();
            let want = shape.iter().product::<i64>() as usize * kind.elt_size_in_bytes();
            if data.len() != want {
                return Err(bad(format!(
                    "tensor {name} has {} bytes for shape {shape:?} ({want} expected)",
                    data.len()
                )));
            }
            if data.as_ptr() as usize % kind.elt_size_in_bytes() == 0 {
                // SAFETY: `data` lies inside `map`, which outlives `src`
                // (dropped at the end of this block); the length was checked
                // against the shape and the pointer is aligned for `kind`; the
                // mapping is read-only and `src` is only read by `copy_`.
                let src = unsafe {
                    Tensor::f_from_blob(data.as_ptr(), &shape, &[], kind, tch::Device::Cpu)?
                };
                tch::no_grad(|| var.shallow_clone().f_copy_(&src))?;
            } else {
                let src = Tensor::f_from_data_size(data, &shape, kind)?;
                tch::no_grad(|| var.shallow_clone().f_copy_(&src))?;
            }
            map.release(data);
            loaded.insert(name.to_string());
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

/// A read-only, private memory mapping of a whole file, unmapped on drop.
#[derive(Debug)]
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    /// Map `path` (a non-empty regular file).
    fn open(path: &Path) -> Result<Mapped> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len() as usize;
        if len == 0 {
            return Err(Error::Model {
                path: path.to_path_buf(),
                msg: "empty weight file".into(),
            });
        }
        // SAFETY: a fresh read-only private mapping of an open file; the
        // kernel picks the address; failure is checked below. The file
        // descriptor may close afterwards (the mapping keeps its own reference).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::io(path, std::io::Error::last_os_error()));
        }
        Ok(Mapped { ptr, len })
    }

    /// The file's bytes.
    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `self` is dropped.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }

    /// Drop the resident pages lying wholly inside `part` (a sub-slice of
    /// [`Mapped::bytes`]): they are clean file pages, so a later read would
    /// fault them in again; this only keeps the resident set small.
    fn release(&self, part: &[u8]) {
        // SAFETY: sysconf only reads a system constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let base = self.ptr as usize;
        let start = (part.as_ptr() as usize - base).div_ceil(page) * page;
        let end = (part.as_ptr() as usize - base + part.len()) / page * page;
        if end > start {
            // SAFETY: [start, end) is page-aligned and inside the mapping.
            // MADV_DONTNEED on a private read-only file mapping discards
            // only clean pages; the contents stay those of the file.
            unsafe {
                libc::madvise(
                    (base + start) as *mut libc::c_void,
                    end - start,
                    libc::MADV_DONTNEED,
                );
            }
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`, once.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
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

/// Write every variable of `vs` but LoRA adapter matrices to `path` as one
/// safetensors file (CPU, contiguous, in the var store's kind), sorted by name.
pub fn save_weights(vs: &nn::VarStore, path: &Path) -> Result<()> {
    // Adapter matrices are saved in peft's own file (`super::lora`).
    let vars: BTreeMap<String, Tensor> = vs
        .variables()
        .into_iter()
        .filter(|(n, _)| !super::lora::is_adapter_name(n))
        .collect();
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
        "f64" | "float64" | "double" => Ok(Kind::Double),
        other => Err(Error::config(
            "model.dtype",
            format!("unknown dtype {other:?} (expected f32, bf16, f16 or f64)"),
        )),
    }
}
