//! Leakage measured on held-out prompts (issue 23, item 6): the student,
//! given only its own prompt, writes what only the teacher's context held.
//!
//! The paper's case against OPSD is that the student learns to reproduce the
//! privileged context (Thm. 1: the mutual information `I(Y_t; R)` no student
//! can remove). Per validation response, with `n`-token windows:
//!
//! - **span**: the response contains an `n`-gram of the teacher's user
//!   message (the template with the privileged text) that is neither an
//!   `n`-gram of the student's message nor of an excluded text (the task's
//!   answer line in the forms a correct response writes, e.g. `Answer: 12`,
//!   `<answer>12</answer>`, `\boxed{12}`). Honest text cannot match such an
//!   `n`-gram unless it guesses the privileged text itself, so for a student
//!   that never saw the teacher (GRPO) the rate is 0 on a task whose
//!   privileged context is not guessable.
//! - **cue**: the response refers to a reference it was never shown
//!   ([`CUE_PHRASES`], case-insensitive).
//!
//! Tokens are the policy's own (text encoded without special tokens), so the
//! measurement is the same whatever the tokenizer; `n` trades sensitivity
//! (small) for specificity (large).

use std::collections::HashSet;

/// Phrases that refer to a reference the student never saw.
pub const CUE_PHRASES: [&str; 5] = [
    "reference solution",
    "the reference",
    "the given solution",
    "the provided solution",
    "the hint",
];

/// Default window, in tokens.
pub const DEFAULT_NGRAM: usize = crate::config::DEFAULT_LEAKAGE_NGRAM;

/// The `n`-grams that only the teacher's context holds, for one prompt.
#[derive(Debug, Clone, Default)]
pub struct PrivilegedSpans {
    /// Window length in tokens.
    n: usize,
    /// `n`-grams of the teacher's message minus the student's and the excluded texts'.
    grams: HashSet<Vec<i64>>,
}

fn ngrams(ids: &[i64], n: usize) -> impl Iterator<Item = &[i64]> {
    ids.windows(n.max(1))
}

impl PrivilegedSpans {
    /// The spans of `teacher` (token ids of the teacher's user message) that
    /// occur neither in `student` (the student's message) nor in any of
    /// `excluded` (the answer line in the forms a correct response writes).
    pub fn new(teacher: &[i64], student: &[i64], excluded: &[Vec<i64>], n: usize) -> Self {
        let n = n.max(1);
        let mut public: HashSet<&[i64]> = ngrams(student, n).collect();
        for e in excluded {
            public.extend(ngrams(e, n));
        }
        let grams = ngrams(teacher, n)
            .filter(|g| !public.contains(g))
            .map(<[i64]>::to_vec)
            .collect();
        PrivilegedSpans { n, grams }
    }

    /// How many distinct privileged `n`-grams there are (0: nothing to leak).
    pub fn len(&self) -> usize {
        self.grams.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.grams.is_empty()
    }

    /// Whether `response` (token ids) contains one of the spans.
    pub fn found_in(&self, response: &[i64]) -> bool {
        !self.grams.is_empty() && ngrams(response, self.n).any(|g| self.grams.contains(g))
    }
}

/// Whether `response` uses one of [`CUE_PHRASES`].
pub fn has_cue(response: &str) -> bool {
    let lower = response.to_lowercase();
    CUE_PHRASES.iter().any(|c| lower.contains(c))
}

/// The texts excluded from the privileged spans for a gold `answer`: the
/// answer line a correct response writes (`Answer: a`, `<answer>a</answer>`,
/// `\boxed{a}`, the answer alone).
pub fn answer_lines(answer: &str) -> Vec<String> {
    let a = answer.trim();
    vec![
        a.to_string(),
        format!("Answer: {a}"),
        format!("<answer>{a}</answer>"),
        format!("<answer> {a} </answer>"),
        format!("\\boxed{{{a}}}"),
    ]
}

/// Share of validation responses that leak, each way.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LeakageRates {
    /// Responses holding a privileged span.
    pub span: f64,
    /// Responses using a cue phrase.
    pub cue: f64,
    /// Responses doing either.
    pub any: f64,
}

/// The rates over `(spans, response ids, response text)` triples; zeros
/// for none.
pub fn leakage_rates<'a>(
    items: impl Iterator<Item = (&'a PrivilegedSpans, &'a [i64], &'a str)>,
) -> LeakageRates {
    let (mut n, mut span, mut cue, mut any) = (0usize, 0usize, 0usize, 0usize);
    for (spans, ids, text) in items {
        let s = spans.found_in(ids);
        let c = has_cue(text);
        n += 1;
        span += usize::from(s);
        cue += usize::from(c);
        any += usize::from(s || c);
    }
    if n == 0 {
        return LeakageRates::default();
    }
    let r = |k: usize| k as f64 / n as f64;
    LeakageRates {
        span: r(span),
        cue: r(cue),
        any: r(any),
    }
}
