//! Ticks of a chart's x axis.
//!
//! Metrics are drawn against the training step, a whole number. plotters
//! puts ticks at "nice" spacings (1, 2 or 5 times a power of ten) with at
//! most as many ticks as asked for; asking for no more than one tick per
//! whole step on an integer axis makes the spacing at least 1, so every tick
//! is a whole step, labelled without decimals (`1, 2, 3`, never
//! `1.0, 1.5`).

/// Most x ticks a chart asks for.
pub(crate) const MAX_X_LABELS: usize = 8;

/// Whether every finite value is a whole number (and there is at least one).
pub(crate) fn all_integers(vals: impl Iterator<Item = f64>) -> bool {
    let mut any = false;
    for v in vals.filter(|v| v.is_finite()) {
        if v.fract() != 0.0 {
            return false;
        }
        any = true;
    }
    any
}

/// How many x ticks to ask plotters for on `[lo, hi]`: [`MAX_X_LABELS`],
/// and on an integer axis at most one per whole step.
pub(crate) fn x_label_count(lo: f64, hi: f64, integer: bool) -> usize {
    let span = hi - lo;
    if integer && span.is_finite() && span >= 0.0 {
        (span.floor() as usize + 1).clamp(2, MAX_X_LABELS)
    } else {
        MAX_X_LABELS
    }
}

/// The label of an x tick: a whole number without decimals on an integer
/// axis, otherwise as [`super::tick_label`] writes it.
pub(crate) fn x_tick_label(v: f64, span: f64, integer: bool) -> String {
    if integer && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        super::tick_label(v, span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_axes_ask_for_at_most_one_tick_per_step() {
        assert!(all_integers([1.0, 2.0, f64::NAN].into_iter()));
        assert!(!all_integers([1.0, 2.5].into_iter()));
        assert!(!all_integers([f64::NAN].into_iter()));
        // Steps 1..=3: three ticks at most, so plotters spaces them by 1.
        assert_eq!(x_label_count(1.0, 3.0, true), 3);
        assert_eq!(x_label_count(1.0, 3.0, false), MAX_X_LABELS);
        assert_eq!(x_label_count(1.0, 600.0, true), MAX_X_LABELS);
        assert_eq!(x_label_count(5.0, 5.0, true), 2);
        assert_eq!(x_tick_label(2.0, 3.0, true), "2");
        assert_eq!(x_tick_label(2.0, 3.0, false), "2.0");
        assert_eq!(x_tick_label(2.5, 3.0, true), "2.5");
    }
}
