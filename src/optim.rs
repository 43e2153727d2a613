//! AdamW on tch tensors, with state that checkpoints by name.
//!
//! The update is PyTorch's `torch.optim.AdamW` (decoupled weight decay):
//!
//! ```text
//! p   <- p * (1 - lr * wd)
//! m   <- b1 m + (1 - b1) g            v <- b2 v + (1 - b2) g^2
//! p   <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//! ```
//!
//! Moments are kept in f32 whatever the parameter dtype. A bf16 / f16
//! parameter also gets an f32 master copy that takes the update and is rounded
//! into the parameter, so that updates far below the parameter's precision
//! (lr 1e-6 on bf16 weights) accumulate instead of vanishing. A parameter with
//! no gradient this step is left alone (no decay either), as in PyTorch.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn, Kind, Tensor};

/// Shape of the learning rate over steps (see [`crate::rlsd::lr_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// `lr` after the warm-up.
    #[default]
    Constant,
    /// Linear decay from `lr` to `min_lr_ratio * lr` at `total_steps`.
    Linear,
    /// Cosine decay from `lr` to `min_lr_ratio * lr` at `total_steps`.
    Cosine,
}

/// Optimiser and train-step settings (the `[optim]` TOML section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Peak learning rate (paper: 1e-6 for an 8B model).
    pub lr: f64,
    /// Adam `beta1`.
    pub beta1: f64,
    /// Adam `beta2`.
    pub beta2: f64,
    /// Adam `eps`.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Gradient-norm clip (global L2 norm); 0 disables clipping.
    pub max_grad_norm: f64,
    /// Linear learning-rate warm-up steps (0 = none).
    pub warmup_steps: u64,
    /// Learning-rate schedule after the warm-up.
    pub lr_schedule: LrSchedule,
    /// Last step of a decaying schedule.
    pub total_steps: u64,
    /// Floor of a decaying schedule, as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// Responses per forward/backward pass; gradients accumulate over the
    /// batch (0 = the whole batch at once).
    pub micro_batch_size: usize,
    /// Padded token positions (`rows x longest prompt + response`) per
    /// forward/backward pass of the train step and the teacher pass; samples
    /// are sorted by length and packed greedily under this budget (a longer
    /// sample runs alone). 0 = no token budget.
    pub max_tokens_per_micro_batch: usize,
    /// Recompute each decoder layer in the backward instead of keeping its
    /// activations: about one extra forward of the trunk for activation
    /// memory of one layer input per layer.
    pub activation_checkpointing: bool,
    /// Response tokens per output-head chunk in the train step (0 = as many as
    /// fit in 64 MiB of float32 logits; see `model::chunked`).
    pub logit_chunk_tokens: usize,
    /// Run a group's prompt once per micro-batch in the train step, its
    /// responses attending to the prompt's keys and values (`model::shared`):
    /// `G x P + B x (L - 1)` positions instead of `B x (P + L)`, the same loss
    /// and gradients. Applies where a micro-batch holds two responses to one
    /// prompt; on by default.
    pub share_prompt: bool,
}

/// Default `optim.max_tokens_per_micro_batch`: 8,192 positions, a few GB of
/// activations for a 0.5-1.5B model without checkpointing (see docs/MODELS.md).
pub const DEFAULT_MAX_TOKENS_PER_MICRO_BATCH: usize = 8192;

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 1e-6,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            warmup_steps: 0,
            lr_schedule: LrSchedule::Constant,
            total_steps: 0,
            min_lr_ratio: 0.0,
            micro_batch_size: 0,
            max_tokens_per_micro_batch: DEFAULT_MAX_TOKENS_PER_MICRO_BATCH,
            activation_checkpointing: false,
            logit_chunk_tokens: 0,
            share_prompt: true,
        }
    }
}

impl OptimConfig {
    /// Check value ranges; the error names the key (`optim.<field>`).
    pub fn validate(&self) -> Result<()> {
        let check = |ok: bool, key: &str, msg: &str| -> Result<()> {
            if ok {
                Ok(())
            } else {
                Err(Error::config(format!("optim.{key}"), msg))
            }
        };
        check(
            self.lr.is_finite() && self.lr >= 0.0,
            "lr",
            "must be finite and >= 0",
        )?;
        check(
            (0.0..1.0).contains(&self.beta1),
            "beta1",
            "must lie in [0, 1)",
        )?;
        check(
            (0.0..1.0).contains(&self.beta2),
            "beta2",
            "must lie in [0, 1)",
        )?;
        check(
            self.eps > 0.0 && self.eps.is_finite(),
            "eps",
            "must be finite and > 0",
        )?;
        check(
            self.weight_decay >= 0.0 && self.weight_decay.is_finite(),
            "weight_decay",
            "must be finite and >= 0",
        )?;
        check(
            self.max_grad_norm >= 0.0 && self.max_grad_norm.is_finite(),
            "max_grad_norm",
            "must be finite and >= 0",
        )?;
        check(
            (0.0..=1.0).contains(&self.min_lr_ratio),
            "min_lr_ratio",
            "must lie in [0, 1]",
        )?;
        check(
            self.lr_schedule == LrSchedule::Constant || self.total_steps > self.warmup_steps,
            "total_steps",
            "a decaying lr_schedule needs total_steps > warmup_steps",
        )?;
        Ok(())
    }
}

/// First and second moments of one parameter, and its f32 master copy when
/// the parameter itself is lower precision.
#[derive(Debug)]
struct Moments {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    master: Option<Tensor>,
}

/// Whether a parameter of this dtype gets an f32 master copy.
fn needs_master(kind: Kind) -> bool {
    matches!(kind, Kind::BFloat16 | Kind::Half)
}

/// The kind AdamW computes and keeps its moments in for a parameter of
/// `kind`: float64 for a float64 parameter (so an f64 run is f64 end to
/// end), float32 for every other.
fn moment_kind(kind: Kind) -> Kind {
    if kind == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    }
}

/// AdamW over the trainable variables of a [`nn::VarStore`], keyed by name.
#[derive(Debug)]
pub struct AdamW {
    /// Trainable parameters, sorted by name (shallow clones sharing storage).
    params: Vec<(String, Tensor)>,
    /// Moments, parallel to `params`; created on first use.
    moments: Vec<Option<Moments>>,
    /// Number of updates taken (Adam's `t`).
    step: u64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    /// Index of the parameter at which the next step fails (fault rehearsal).
    fail_at: Option<usize>,
}

/// A parameter's new value and moments, computed before any is installed.
#[derive(Debug)]
struct Update {
    moments: Moments,
    value: Tensor,
}

/// One AdamW step's constants: betas, epsilon, weight decay, the learning
/// rate and the two bias corrections.
struct Hyper {
    b1: f64,
    b2: f64,
    eps: f64,
    wd: f64,
    lr: f64,
    bc1: f64,
    bc2: f64,
}

/// The new moments and value of parameter `p` with gradient `g` (phase 1 of
/// [`AdamW::step`]: fresh tensors only; `slot` holds the old moments, none
/// at the first step). A low-precision parameter keeps an f32 master copy.
fn adamw_update(p: &Tensor, g: &Tensor, slot: Option<&Moments>, h: &Hyper) -> Result<Update> {
    let Hyper {
        b1,
        b2,
        eps,
        wd,
        lr,
        bc1,
        bc2,
    } = *h;
    // The same arithmetic as the textbook chain (m * b1 + g * (1 - b1), ...),
    // written with in-place steps on the fresh tensors so that at most one
    // parameter-sized temporary lives besides the three results: at a
    // 151,936-token vocabulary the embedding's six copies at once were the
    // run's peak (docs/benchmarks/memory.md). `x.op_(y)` rounds exactly as
    // `x.op(y)`, so the values are bit-identical.
    let ck = moment_kind(p.kind());
    let g = g.f_to_kind(ck)?;
    let (exp_avg, exp_avg_sq, master) = match slot {
        Some(m) => {
            let mut exp_avg = m.exp_avg.f_mul_scalar(b1)?;
            let _ = exp_avg.f_add_(&g.f_mul_scalar(1.0 - b1)?)?;
            let mut exp_avg_sq = m.exp_avg_sq.f_mul_scalar(b2)?;
            let mut gg = g.f_mul(&g)?;
            let _ = gg.f_mul_scalar_(1.0 - b2)?;
            let _ = exp_avg_sq.f_add_(&gg)?;
            drop(gg);
            let master = m.master.as_ref().map(|t| t.f_detach()).transpose()?;
            (exp_avg, exp_avg_sq, master)
        }
        None => {
            let exp_avg = g.f_mul_scalar(1.0 - b1)?;
            let mut exp_avg_sq = g.f_mul(&g)?;
            let _ = exp_avg_sq.f_mul_scalar_(1.0 - b2)?;
            let master = if needs_master(p.kind()) {
                Some(p.detach().f_to_kind(Kind::Float)?)
            } else {
                None
            };
            (exp_avg, exp_avg_sq, master)
        }
    };
    let mut update = {
        let mut denom = exp_avg_sq.f_sqrt()?;
        let _ = denom.f_div_scalar_(bc2.sqrt())?;
        let _ = denom.f_add_scalar_(eps)?;
        exp_avg.f_div(&denom)?
    };
    let _ = update.f_mul_scalar_(lr / bc1)?;
    let (value, master) = match master {
        Some(master) => {
            let mut master = master.f_mul_scalar(1.0 - lr * wd)?;
            let _ = master.f_sub_(&update)?;
            drop(update);
            (master.f_to_kind(p.kind())?, Some(master))
        }
        None => {
            // `f_to_kind` of a float32 (float64) parameter is the parameter itself: the
            // multiplication makes the fresh tensor the update goes into.
            let mut new = p.f_to_kind(ck)?.f_mul_scalar(1.0 - lr * wd)?;
            let _ = new.f_sub_(&update)?;
            drop(update);
            (new.f_to_kind(p.kind())?, None)
        }
    };
    Ok(Update {
        moments: Moments {
            exp_avg,
            exp_avg_sq,
            master,
        },
        value,
    })
}

/// Every variable of `vs` that requires grad, sorted by name: the order the
/// optimiser updates them in, and so the order data-parallel collectives
/// pair them across replicas.
pub fn trainable_by_name(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut params: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
}

impl AdamW {
    /// An optimiser for every variable of `vs` that requires grad. It keeps
    /// handles to those tensors: load new weights into them in place
    /// (`VarStore::copy`, `Tensor::copy_`), not by replacing them.
    pub fn new(vs: &nn::VarStore, cfg: &OptimConfig) -> Self {
        let params = trainable_by_name(vs);
        let moments = params.iter().map(|_| None).collect();
        AdamW {
            params,
            moments,
            step: 0,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            fail_at: None,
        }
    }

    /// Re-read the f32 master copies of bf16 / f16 parameters from the
    /// parameters themselves. Call it after overwriting the weights of a
    /// policy that has already taken steps (otherwise the next step would
    /// write the stale master copy back).
    pub fn sync_masters_from_params(&mut self) -> Result<()> {
        for ((_, p), slot) in self.params.iter().zip(self.moments.iter_mut()) {
            if let Some(m) = slot {
                if m.master.is_some() {
                    m.master = Some(p.detach().f_to_kind(Kind::Float)?);
                }
            }
        }
        Ok(())
    }

    /// Updates taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The parameters (shallow copies sharing storage and gradient), in
    /// update order: what a data-parallel step all-reduces the gradients of.
    pub fn parameters(&self) -> Vec<Tensor> {
        self.params.iter().map(|(_, p)| p.shallow_clone()).collect()
    }

    /// Names of the parameters this optimiser updates, sorted.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|(n, _)| n.as_str())
    }

    /// Reset every gradient to zero.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// Global L2 norm of all gradients (f64; NaN/inf if any gradient is).
    pub fn grad_norm(&self) -> Result<f64> {
        let mut norms = Vec::with_capacity(self.params.len());
        for (_, p) in &self.params {
            let g = p.grad();
            if g.defined() {
                norms.push(g.f_to_kind(Kind::Double)?.f_norm()?);
            }
        }
        if norms.is_empty() {
            return Ok(0.0);
        }
        // One device sync for all parameters.
        Ok(f64::try_from(Tensor::f_stack(&norms, 0)?.f_norm()?)?)
    }

    /// Scale gradients so their global norm is at most `max_norm` (no-op for
    /// `max_norm <= 0`); returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.grad_norm()?;
        if max_norm > 0.0 && norm.is_finite() && norm > max_norm {
            let scale = max_norm / (norm + 1e-6);
            tch::no_grad(|| -> Result<()> {
                for (_, p) in &self.params {
                    let mut g = p.grad();
                    if g.defined() {
                        let _ = g.f_mul_scalar_(scale)?;
                    }
                }
                Ok(())
            })?;
        }
        Ok(norm)
    }

    /// One AdamW update with learning rate `lr` from the current gradients.
    ///
    /// The update is atomic: every new moment and parameter value is first
    /// computed into fresh tensors (phase 1, where an error such as an
    /// out-of-memory can happen), and only when all of them exist are they
    /// installed (phase 2: moves and same-shape `copy_`). An error therefore
    /// leaves every parameter, moment and the step counter as they were, and
    /// the step can be retried. The price is transient memory: one extra
    /// copy of the parameters and their moments during the update.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        let t = (self.step + 1) as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        let hyper = Hyper {
            b1: self.beta1,
            b2: self.beta2,
            eps: self.eps,
            wd: self.weight_decay,
            lr,
            bc1,
            bc2,
        };
        let fail_at = self.fail_at.take();
        // Phase 1: compute, touching nothing that is kept.
        let updates = tch::no_grad(|| -> Result<Vec<Option<Update>>> {
            let mut out = Vec::with_capacity(self.params.len());
            for (i, ((name, p), slot)) in self.params.iter().zip(&self.moments).enumerate() {
                if fail_at == Some(i) {
                    return Err(Error::Runtime(format!(
                        "injected fault inside the AdamW step at parameter `{name}`"
                    )));
                }
                let g = p.grad();
                if !g.defined() {
                    out.push(None);
                    continue;
                }
                out.push(Some(adamw_update(p, &g, slot.as_ref(), &hyper)?));
            }
            Ok(out)
        })?;
        // Phase 2: install (no allocation; same shapes, dtypes and devices).
        tch::no_grad(|| -> Result<()> {
            for (((_, p), slot), up) in self
                .params
                .iter_mut()
                .zip(self.moments.iter_mut())
                .zip(updates)
            {
                let Some(up) = up else { continue };
                p.f_copy_(&up.value)?;
                *slot = Some(up.moments);
            }
            Ok(())
        })?;
        self.step += 1;
        Ok(())
    }

    /// Rehearsal hook: make the next [`AdamW::step`] fail when it reaches the
    /// parameter with this index (after computing the ones before it). Fires once.
    pub fn inject_fault_at(&mut self, param_index: usize) {
        self.fail_at = Some(param_index);
    }

    /// The state as named tensors: `step` (i64 scalar), `exp_avg.<param>` and
    /// `exp_avg_sq.<param>` for every parameter that has moments, and
    /// `master.<param>` for the f32 master copies of bf16 / f16 parameters.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("step".to_string(), Tensor::from(self.step as i64))];
        for ((name, _), slot) in self.params.iter().zip(&self.moments) {
            if let Some(m) = slot {
                out.push((format!("exp_avg.{name}"), m.exp_avg.detach().copy()));
                out.push((format!("exp_avg_sq.{name}"), m.exp_avg_sq.detach().copy()));
                if let Some(master) = &m.master {
                    out.push((format!("master.{name}"), master.detach().copy()));
                }
            }
        }
        out
    }

    /// Restore from [`AdamW::state_tensors`]. Errors name a missing `step`, a
    /// moment for an unknown parameter, or a moment of the wrong shape.
    pub fn load_state_tensors(&mut self, tensors: &[(String, Tensor)]) -> Result<()> {
        let find = |key: &str| tensors.iter().find(|(n, _)| n == key).map(|(_, t)| t);
        let step = find("step")
            .ok_or_else(|| Error::InvalidInput("optimizer state has no `step` tensor".into()))?;
        let step = i64::try_from(step)?;
        let known: std::collections::HashSet<&str> =
            self.params.iter().map(|(n, _)| n.as_str()).collect();
        for (n, _) in tensors {
            let p = n
                .strip_prefix("exp_avg.")
                .or_else(|| n.strip_prefix("exp_avg_sq."))
                .or_else(|| n.strip_prefix("master."));
            if let Some(p) = p {
                if !known.contains(p) {
                    return Err(Error::InvalidInput(format!(
                        "optimizer state has `{n}` for a parameter the model does not have"
                    )));
                }
            }
        }
        let mut moments = Vec::with_capacity(self.params.len());
        for (name, p) in &self.params {
            let m = find(&format!("exp_avg.{name}"));
            let v = find(&format!("exp_avg_sq.{name}"));
            moments.push(match (m, v) {
                (Some(m), Some(v)) => {
                    let master = find(&format!("master.{name}"));
                    for (key, t) in [
                        ("exp_avg", Some(m)),
                        ("exp_avg_sq", Some(v)),
                        ("master", master),
                    ] {
                        let Some(t) = t else { continue };
                        if t.size() != p.size() {
                            return Err(Error::ShapeMismatch {
                                name: format!("{key}.{name}"),
                                expected: p.size(),
                                got: t.size(),
                            });
                        }
                    }
                    // A state saved without a master copy (or from an f32 run)
                    // starts the master from the current parameter.
                    let master = match (needs_master(p.kind()), master) {
                        (false, _) => None,
                        (true, Some(t)) => Some(t.f_to_kind(Kind::Float)?.f_to_device(p.device())?),
                        (true, None) => Some(p.detach().f_to_kind(Kind::Float)?),
                    };
                    let ck = moment_kind(p.kind());
                    Some(Moments {
                        exp_avg: m.f_to_kind(ck)?.f_to_device(p.device())?,
                        exp_avg_sq: v.f_to_kind(ck)?.f_to_device(p.device())?,
                        master,
                    })
                }
                (None, None) => None,
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "optimizer state for `{name}` has only one of exp_avg / exp_avg_sq"
                    )))
                }
            });
        }
        self.moments = moments;
        self.step = u64::try_from(step).unwrap_or(0);
        Ok(())
    }

    /// Write the state to a safetensors file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let tensors = self.state_tensors();
        Tensor::write_safetensors(&tensors, path.as_ref())?;
        Ok(())
    }

    /// Read the state from a safetensors file written by [`AdamW::save`].
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let tensors = Tensor::read_safetensors(path.as_ref())?;
        self.load_state_tensors(&tensors)
    }
}
