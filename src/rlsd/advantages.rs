//! Group-relative advantages (GRPO, RLSD-SPEC.md step 3).

use crate::error::{Error, Result};

/// Advantages of one group of responses to the same prompt:
///
/// `A_i = (R_i - mean(R)) / (std(R) + 1e-6)` with the unbiased std (n - 1), or
/// `A_i = R_i - mean(R)` when `scale_by_std` is false (Dr. GRPO).
///
/// A group of one, or a group whose rewards are all equal, gets `A_i = 0`.
/// A non-finite reward makes the whole group's advantages NaN, so that the
/// train step detects it and skips the step.
pub fn group_advantage(rewards: &[f32], scale_by_std: bool) -> Vec<f32> {
    let n = rewards.len();
    if rewards.iter().any(|r| !r.is_finite()) {
        return vec![f32::NAN; n];
    }
    if n <= 1 || rewards.iter().all(|&r| r == rewards[0]) {
        return vec![0.0; n];
    }
    let r: Vec<f64> = rewards.iter().map(|&x| f64::from(x)).collect();
    let mean = r.iter().sum::<f64>() / n as f64;
    let scale = if scale_by_std {
        let var = r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        1.0 / (var.sqrt() + 1e-6)
    } else {
        1.0
    };
    r.iter().map(|x| ((x - mean) * scale) as f32).collect()
}

/// Advantages of a batch laid out as consecutive groups of `group_size`
/// responses (all `G` responses of prompt 0, then of prompt 1, ...); see
/// [`group_advantage`] for the formula.
pub fn group_advantages(
    rewards: &[f32],
    group_size: usize,
    scale_by_std: bool,
) -> Result<Vec<f32>> {
    if group_size == 0 || rewards.len() % group_size != 0 {
        return Err(Error::InvalidInput(format!(
            "group_advantages: {} rewards do not split into groups of {group_size}",
            rewards.len()
        )));
    }
    Ok(rewards
        .chunks(group_size)
        .flat_map(|g| group_advantage(g, scale_by_std))
        .collect())
}
