//! Schedules: pure functions of the step (counted from 1), so a resumed run
//! continues them exactly.

use super::config::{AlgoConfig, LambdaWarmup};
use crate::optim::{LrSchedule, OptimConfig};

/// The two-phase lambda schedule of RLSD (RLSD-SPEC.md, the reference code's
/// semantics), steps counted from 1, `W = lambda_warmup`, `D = decay steps`:
///
/// - warm-up, `step <= W`: `lambda = lambda_0 * step / W` (ramps up from 0;
///   with `lambda_warmup_mode = "hold"`, `lambda_0` instead);
/// - after it: `lambda = lambda_0 * max(1 - (step - W) / D, 0)`;
/// - `D = 0`: no decay, lambda stays `lambda_0` (never "GRPO from step 1").
///
/// Once lambda is 0, RLSD is exactly GRPO.
pub fn lambda_at(step: u64, cfg: &AlgoConfig) -> f64 {
    let lambda0 = cfg.lambda0();
    let warmup = cfg.lambda_warmup;
    if warmup > 0 && step <= warmup {
        return match cfg.lambda_warmup_mode {
            LambdaWarmup::Ramp => lambda0 * step as f64 / warmup as f64,
            LambdaWarmup::Hold => lambda0,
        };
    }
    let decay = cfg.lambda_decay_steps();
    if decay == 0 {
        return lambda0;
    }
    let past = step.saturating_sub(warmup);
    lambda0 * (1.0 - past as f64 / decay as f64).max(0.0)
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
