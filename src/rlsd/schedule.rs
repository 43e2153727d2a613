//! Schedules: pure functions of the step (counted from 1), so a resumed run
//! continues them exactly.

use super::config::AlgoConfig;
use crate::optim::{LrSchedule, OptimConfig};

/// The two-phase lambda schedule of RLSD:
///
/// `lambda(step) = lambda_0 * max(1 - (step - warmup) / decay_steps, 0)`, steps from 1.
///
/// During the warm-up (`step <= warmup`) lambda stays at `lambda_0` (the
/// literal formula would exceed `lambda_0` there). `decay_steps = 0` means an
/// immediate drop to 0 after the warm-up. Once lambda is 0, RLSD is exactly GRPO.
pub fn lambda_at(step: u64, cfg: &AlgoConfig) -> f64 {
    let past = step.saturating_sub(cfg.lambda_warmup);
    if past == 0 {
        return cfg.lambda0;
    }
    if cfg.lambda_decay_steps == 0 {
        return 0.0;
    }
    let frac = 1.0 - past as f64 / cfg.lambda_decay_steps as f64;
    cfg.lambda0 * frac.max(0.0)
}

/// The learning rate at `step` (counted from 1):
///
/// - linear warm-up: `lr * step / warmup_steps` for `step <= warmup_steps`;
/// - then, with `p = (step - warmup_steps) / (total_steps - warmup_steps)` clamped to [0, 1]
///   and `lr_min = min_lr_ratio * lr`:
///   - `constant`: `lr`;
///   - `linear`: `lr_min + (lr - lr_min) * (1 - p)`;
///   - `cosine`: `lr_min + (lr - lr_min) * (1 + cos(pi * p)) / 2`.
///
/// A decaying schedule with `total_steps <= warmup_steps` stays at `lr` after the warm-up.
pub fn lr_at(step: u64, cfg: &OptimConfig) -> f64 {
    let step = step.max(1);
    if cfg.warmup_steps > 0 && step <= cfg.warmup_steps {
        return cfg.lr * step as f64 / cfg.warmup_steps as f64;
    }
    let lr_min = cfg.min_lr_ratio * cfg.lr;
    let span = cfg.total_steps.saturating_sub(cfg.warmup_steps);
    if span == 0 {
        return cfg.lr;
    }
    let p = ((step - cfg.warmup_steps) as f64 / span as f64).clamp(0.0, 1.0);
    match cfg.lr_schedule {
        LrSchedule::Constant => cfg.lr,
        LrSchedule::Linear => lr_min + (cfg.lr - lr_min) * (1.0 - p),
        LrSchedule::Cosine => {
            lr_min + (cfg.lr - lr_min) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
        }
    }
}
