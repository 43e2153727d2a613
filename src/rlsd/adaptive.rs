//! An adaptive lambda schedule: the paper's open question of *when* to hand
//! over from the self-teacher's token credit to plain GRPO, decided from a
//! measured signal instead of a fixed step count (docs/ALGORITHMS.md,
//! "Adaptive lambda").
//!
//! [`AdaptiveLambda`] is a pure state machine. It starts at `lambda_0` and
//! observes each committed step's [`StepStats`] once, in step order:
//!
//! 1. `lambda = 0` is absorbing: nothing changes any more (RLSD is then
//!    exactly GRPO and the teacher pass is skipped).
//! 2. A step that measured no signal (skipped, no teacher pass, or, for
//!    `delta-correct`, no correct response) leaves the state as it is.
//! 3. Else, if `signal < adaptive_threshold`, `streak += 1`; otherwise `streak = 0`.
//! 4. When `streak == adaptive_patience`: `lambda *= adaptive_factor`,
//!    `streak = 0`, and a lambda below `adaptive_min_lambda` becomes 0.
//!
//! lambda never increases. The signals ([`AdaptiveSignal`]):
//!
//! - `delta-correct` (default): the mean teacher-student gap `delta_t` on the
//!   tokens of correct responses. It measures how much the privileged context
//!   still raises the likelihood of what the student already gets right; once
//!   the student has absorbed it the gap shrinks, and the token weights
//!   `exp(delta_t)` of correct responses carry little beyond GRPO's `A_i`.
//! - `weight-clip`: the fraction of response tokens whose `w_t` was clipped,
//!   i.e. where the teacher and the student disagree by more than
//!   `log(1 + eps_w)`: a small rate means the reweighting barely moves `Ahat_t`.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// How lambda is decided for each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LambdaSchedule {
    /// The two-phase schedule, a pure function of the step ([`super::lambda_at`]).
    #[default]
    Fixed,
    /// [`AdaptiveLambda`], driven by the committed steps' measured signal.
    Adaptive,
}

/// The measured signal that drives [`AdaptiveLambda`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdaptiveSignal {
    /// `StepStats::delta_mean_correct`: mean `delta_t` on correct responses.
    #[default]
    DeltaCorrect,
    /// `StepStats::weight_clip_frac`: fraction of tokens whose `w_t` was clipped.
    WeightClip,
}

impl AdaptiveSignal {
    /// The signal a step measured, from its logged values, or `None` when it
    /// measured none: a skipped step, a step that ran no teacher pass
    /// (`lambda` 0 or no response tokens), for `delta-correct` a step with no
    /// correct response (`accuracy` 0), or a non-finite value.
    pub fn of(self, step: &SignalInputs) -> Option<f64> {
        if step.skipped || step.num_tokens == 0 || step.lambda == 0.0 {
            return None;
        }
        let v = match self {
            AdaptiveSignal::DeltaCorrect if step.accuracy > 0.0 => step.delta_mean_correct,
            AdaptiveSignal::DeltaCorrect => return None,
            AdaptiveSignal::WeightClip => step.weight_clip_frac,
        };
        v.is_finite().then_some(v)
    }
}

/// What a committed step logged that the signals read (the fields of the
/// same names in `StepStats`; `pipeline::observe_step` fills it).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SignalInputs {
    /// Step number (from 1).
    pub step: u64,
    /// Whether the step was skipped (no update).
    pub skipped: bool,
    /// Response tokens in the batch.
    pub num_tokens: usize,
    /// lambda the step ran with.
    pub lambda: f64,
    /// Fraction of responses judged correct.
    pub accuracy: f64,
    /// Mean `delta_t` over the tokens of correct responses.
    pub delta_mean_correct: f64,
    /// Fraction of response tokens whose `w_t` was clipped.
    pub weight_clip_frac: f64,
}

/// The adaptive schedule's settings (from `[algo]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveRule {
    /// Which signal is measured.
    pub signal: AdaptiveSignal,
    /// A step whose signal lies below this counts toward the streak.
    pub threshold: f64,
    /// Steps in a row below the threshold that trigger a decay (>= 1).
    pub patience: u64,
    /// lambda is multiplied by this at each decay, in (0, 1).
    pub factor: f64,
    /// A decayed lambda below this becomes 0 (the switch to GRPO).
    pub min_lambda: f64,
}

impl AdaptiveRule {
    /// Check the ranges; the error names the `algo.adaptive_*` key.
    pub fn validate(&self) -> Result<()> {
        let check = |ok: bool, key: &str, msg: &str| -> Result<()> {
            if ok {
                Ok(())
            } else {
                Err(Error::config(format!("algo.{key}"), msg))
            }
        };
        check(
            self.threshold.is_finite(),
            "adaptive_threshold",
            "must be finite",
        )?;
        check(self.patience >= 1, "adaptive_patience", "must be >= 1")?;
        check(
            self.factor > 0.0 && self.factor < 1.0,
            "adaptive_factor",
            "must lie in (0, 1) (lambda never increases)",
        )?;
        check(
            (0.0..=1.0).contains(&self.min_lambda),
            "adaptive_min_lambda",
            "must lie in [0, 1]",
        )
    }
}

/// The adaptive schedule's state after the steps it has observed. Small and
/// plain, so a checkpoint stores it whole (`state.json`, `adaptive_lambda`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveLambda {
    /// lambda for the next step planned from this state.
    pub lambda: f64,
    /// Steps in a row (since the last decay) whose signal lay below the threshold.
    pub streak: u64,
    /// The last step observed (0 before any).
    pub observed_through: u64,
}

impl AdaptiveLambda {
    /// The state before step 1: `lambda0`, no streak.
    pub fn start(lambda0: f64) -> AdaptiveLambda {
        AdaptiveLambda {
            lambda: lambda0,
            streak: 0,
            observed_through: 0,
        }
    }

    /// Observe committed step `step.step`. Steps at or before
    /// `observed_through` are ignored, so a step reported twice (a re-issued
    /// step) counts once. Follows the rule of this module's doc.
    pub fn observe(&mut self, rule: &AdaptiveRule, step: &SignalInputs) {
        if step.step <= self.observed_through {
            return;
        }
        self.observed_through = step.step;
        if self.lambda == 0.0 {
            return;
        }
        let Some(signal) = rule.signal.of(step) else {
            return;
        };
        if signal < rule.threshold {
            self.streak += 1;
        } else {
            self.streak = 0;
        }
        if self.streak >= rule.patience {
            self.streak = 0;
            self.lambda *= rule.factor;
            if self.lambda < rule.min_lambda {
                self.lambda = 0.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(step: u64, lambda: f64, delta_correct: f64, accuracy: f64) -> SignalInputs {
        SignalInputs {
            step,
            lambda,
            delta_mean_correct: delta_correct,
            weight_clip_frac: delta_correct,
            accuracy,
            num_tokens: 10,
            ..SignalInputs::default()
        }
    }

    fn rule() -> AdaptiveRule {
        AdaptiveRule {
            signal: AdaptiveSignal::DeltaCorrect,
            threshold: 0.1,
            patience: 2,
            factor: 0.5,
            min_lambda: 0.1,
        }
    }

    /// Hand-worked: lambda0 0.5, threshold 0.1, patience 2, factor 0.5, min 0.1.
    /// signals 0.05 0.2 0.05 0.05 | 0.05 0.05 | 0.01 0.01
    /// streak    1   0    1    2->0  1   2->0    1   2->0
    /// lambda  0.5 0.5  0.5  0.25  0.25 0.125  0.125 0.0625 -> 0 (< 0.1)
    #[test]
    fn halves_after_patience_steps_below_threshold_and_switches_to_zero() {
        let r = rule();
        let mut a = AdaptiveLambda::start(0.5);
        let signals = [0.05, 0.2, 0.05, 0.05, 0.05, 0.05, 0.01, 0.01];
        let want = [0.5, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125, 0.0];
        let want_streak = [1, 0, 1, 0, 1, 0, 1, 0];
        for (i, (&s, (&l, &k))) in signals
            .iter()
            .zip(want.iter().zip(want_streak.iter()))
            .enumerate()
        {
            let step = i as u64 + 1;
            a.observe(&r, &stats(step, a.lambda, s, 0.5));
            assert_eq!((a.lambda, a.streak), (l, k), "after step {step}");
            assert_eq!(a.observed_through, step);
        }
        // 0 is absorbing: even a step claiming a tiny signal changes nothing.
        a.observe(&r, &stats(9, 0.3, 0.0, 0.5));
        assert_eq!((a.lambda, a.streak, a.observed_through), (0.0, 0, 9));
    }

    #[test]
    fn steps_without_signal_leave_the_streak_alone() {
        let r = rule();
        let mut a = AdaptiveLambda::start(0.5);
        a.observe(&r, &stats(1, 0.5, 0.0, 0.5)); // below: streak 1
        a.observe(&r, &stats(2, 0.5, 0.0, 0.0)); // no correct response: no signal
        let mut skipped = stats(3, 0.5, 0.0, 0.5);
        skipped.skipped = true;
        a.observe(&r, &skipped);
        a.observe(&r, &stats(4, 0.5, f64::NAN, 0.5)); // non-finite: no signal
        assert_eq!((a.lambda, a.streak, a.observed_through), (0.5, 1, 4));
        a.observe(&r, &stats(5, 0.5, 0.0, 0.5)); // below again: decay
        assert_eq!((a.lambda, a.streak), (0.25, 0));
    }

    #[test]
    fn a_step_counts_once_and_only_in_order() {
        let r = rule();
        let mut a = AdaptiveLambda::start(0.5);
        a.observe(&r, &stats(1, 0.5, 0.0, 0.5));
        a.observe(&r, &stats(1, 0.5, 0.0, 0.5)); // re-issued step 1
        assert_eq!((a.lambda, a.streak), (0.5, 1));
    }

    #[test]
    fn weight_clip_signal_reads_the_clip_rate_without_needing_correct_answers() {
        let s = stats(1, 0.5, 0.03, 0.0);
        assert_eq!(AdaptiveSignal::WeightClip.of(&s), Some(0.03));
        assert_eq!(AdaptiveSignal::DeltaCorrect.of(&s), None);
        let at_zero = stats(1, 0.0, 0.03, 0.5);
        assert_eq!(AdaptiveSignal::WeightClip.of(&at_zero), None);
    }

    #[test]
    fn validation_names_the_key() {
        let bad = |f: fn(&mut AdaptiveRule)| {
            let mut r = rule();
            f(&mut r);
            r.validate().unwrap_err().to_string()
        };
        assert!(bad(|r| r.patience = 0).contains("algo.adaptive_patience"));
        assert!(bad(|r| r.factor = 1.0).contains("algo.adaptive_factor"));
        assert!(bad(|r| r.factor = 0.0).contains("algo.adaptive_factor"));
        assert!(bad(|r| r.threshold = f64::NAN).contains("algo.adaptive_threshold"));
        assert!(bad(|r| r.min_lambda = 2.0).contains("algo.adaptive_min_lambda"));
        rule().validate().unwrap();
    }
}
