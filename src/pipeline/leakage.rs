//! Leakage monitor (RLSD-SPEC.md, "Quantities worth logging"): OPSD's failure
//! mode is a student that learns to *say* what only the teacher saw. A
//! response counts as leaking when, before its final answer, it contains
//!
//! - the privileged text verbatim (whitespace-trimmed, at least
//!   [`MIN_LEAK_CHARS`] characters so that a bare `4` met in honest arithmetic
//!   is not counted), or
//! - a mention of the teacher's context, the phrase `reference solution`
//!   (case-insensitive), which the student's prompt never contains.
//!
//! "Before its final answer" is the text before the last `<answer>` tag or
//! `\boxed{`, or the whole response when it has neither.

use crate::data::Example;

/// Shortest privileged text that counts when found verbatim.
pub const MIN_LEAK_CHARS: usize = 3;

/// The cue of the teacher template that a student has no reason to write.
pub const CONTEXT_CUE: &str = "reference solution";

/// The part of a response before its final answer.
pub fn before_final_answer(response: &str) -> &str {
    let cut = [response.rfind("<answer>"), response.rfind("\\boxed{")]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(response.len());
    &response[..cut]
}

/// Whether `response` leaks `example`'s privileged information (module docs).
pub fn leaks(example: &Example, response: &str) -> bool {
    let head = before_final_answer(response);
    let privileged = example.privileged.trim();
    (privileged.chars().count() >= MIN_LEAK_CHARS && head.contains(privileged))
        || head.to_lowercase().contains(CONTEXT_CUE)
}

/// Share of `(example, response)` pairs that leak; 0 for none.
pub fn leakage_rate<'a>(pairs: impl Iterator<Item = (&'a Example, &'a str)>) -> f64 {
    let (mut n, mut hit) = (0usize, 0usize);
    for (ex, r) in pairs {
        n += 1;
        hit += usize::from(leaks(ex, r));
    }
    if n == 0 {
        0.0
    } else {
        hit as f64 / n as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(privileged: &str) -> Example {
        Example {
            id: "t".into(),
            prompt: "q".into(),
            answer: privileged.into(),
            privileged: privileged.into(),
            context: Vec::new(),
            extra: Default::default(),
            images: Vec::new(),
        }
    }

    #[test]
    fn counts_verbatim_text_before_the_final_answer_only() {
        let e = ex("x = 17 / 3");
        assert!(leaks(&e, "We know x = 17 / 3 so <answer>17/3</answer>"));
        assert!(!leaks(&e, "Solving gives <answer>x = 17 / 3</answer>"));
        assert!(!leaks(&e, "Solving, we get \\boxed{x = 17 / 3}"));
        assert!(leaks(
            &ex("12"),
            "As the Reference Solution says, <answer>12</answer>"
        ));
        // Short privileged texts are not matched verbatim.
        assert!(!leaks(&ex("4"), "2 + 2 = 4, so <answer>4</answer>"));
        let pairs = [(&e, "x = 17 / 3!"), (&e, "no")];
        assert_eq!(leakage_rate(pairs.into_iter()), 0.5);
        assert_eq!(leakage_rate(std::iter::empty()), 0.0);
    }
}
