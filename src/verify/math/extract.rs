//! Finding the final answer in a free-form response.
//!
//! In order of trust: the last `\boxed{..}` (or `\fbox`), the last GSM8K-style
//! `#### ..` line, the last "the answer is ..." / "Answer: ..." phrase, a short
//! response that is itself an answer, and finally the last number (or the last
//! math segment `$..$` holding it), or the last run of number words.

use std::sync::OnceLock;

use regex::Regex;

use super::latex::brace_end;
use super::value::{parse_value, Value};
use super::words::is_number_word;

/// How an answer was found; reported in the verdict's reason.
pub(crate) type Method = &'static str;

pub(crate) fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).unwrap_or_else(|e| unreachable!("bad regex: {e}")))
}

fn phrase_re() -> &'static Regex {
    static CELL: OnceLock<Regex> = OnceLock::new();
    re(
        &CELL,
        r"(?i)\b(?:final answer|the answer|answer)\b\s*(?:is\s*(?:therefore|thus)?|would be|will be|should be|equals|=|:|is:)\s*:?",
    )
}

fn number_re() -> &'static Regex {
    static CELL: OnceLock<Regex> = OnceLock::new();
    re(
        &CELL,
        r"(?x)
          [-−]?\d*\\[dt]?frac\s*\{[^{}]*\}\s*\{[^{}]*\}
        | [-−]?\\[dt]?frac\s*\d\s*\d
        | [-−]?\d*\\sqrt\s*\{[^{}]*\}
        | [-−]?\d*\\sqrt\s*\d+
        | [-−]?\d{1,3}(?:(?:,|\\,|\{,\})\d{3})+(?:\.\d+)?%?
        | [-−]?\d+(?:\.\d+)?\s(?:thousand|million|billion)\b
        | [-−]?\d+(?:\.\d+)?(?:\s*\\pi|π)?(?:/\d+)?%?
        | [-−]?\.\d+%?",
    )
}

fn math_segment_re() -> &'static Regex {
    static CELL: OnceLock<Regex> = OnceLock::new();
    re(
        &CELL,
        r"(?s)\$\$(.+?)\$\$|\$([^$]+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]",
    )
}

/// Contents of the last `\boxed{..}` / `\fbox{..}` (or `\boxed 5`).
pub(crate) fn last_boxed(s: &str) -> Option<String> {
    let at = ["\\boxed", "\\fbox"]
        .iter()
        .filter_map(|p| s.rfind(p).map(|i| (i, p.len())))
        .max()?;
    let mut open = at.0 + at.1;
    while s[open..].starts_with(' ') {
        open += 1;
    }
    if s[open..].starts_with('{') {
        let end = brace_end(s, open)?;
        return Some(s[open + 1..end - 1].trim().to_string());
    }
    let rest: String = s[open..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '$')
        .collect();
    (!rest.is_empty()).then_some(rest)
}

/// Cut the text after an "answer is" phrase down to the answer itself.
fn answer_tail(tail: &str) -> Option<String> {
    let tail = tail.trim_start();
    // A display-math block right after the phrase, possibly over several lines.
    if let Some(m) = math_segment_re().find(tail) {
        if m.start() == 0 {
            return Some(m.as_str().to_string());
        }
    }
    let line = tail.lines().next()?.trim();
    if line.is_empty() {
        return None;
    }
    if let Some(m) = math_segment_re().find(line) {
        if m.start() == 0 {
            return Some(m.as_str().to_string());
        }
    }
    let mut cut = line.len();
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        // A sentence ends at `.` unless it is a decimal point.
        if b == b'.' && !(i + 1 < bytes.len() && bytes[i + 1].is_ascii_digit()) {
            cut = i;
            break;
        }
    }
    let mut head = &line[..cut];
    for stop in [" because ", " since ", " which ", " as ", " so ", " when "] {
        if let Some(i) = head.find(stop) {
            head = &head[..i];
        }
    }
    // `42, which ...`, `3 and we are done`: a comma or "and" before prose
    // ends the answer.
    for sep in [", ", " and "] {
        if let Some(i) = head.find(sep) {
            let next = head[i + sep.len()..]
                .split_whitespace()
                .next()
                .unwrap_or("");
            if next.chars().filter(|c| c.is_alphabetic()).count() >= 2
                && next.chars().all(|c| c.is_alphabetic())
                && next != "and"
                && !is_number_word(next)
            {
                head = &head[..i];
            }
        }
    }
    let mut head = head.trim().trim_end_matches([',', ';', '!']);
    // `1000 (one thousand)`: a closing parenthetical remark is not the answer.
    if let (Some(open), true) = (head.rfind(" ("), head.ends_with(')')) {
        let remark = &head[open + 2..head.len() - 1];
        let wordy = remark
            .split(|c: char| !c.is_alphabetic())
            .any(|w| w.chars().count() >= 3);
        if wordy && !remark.contains(['(', ',']) {
            head = head[..open].trim_end();
        }
    }
    (!head.is_empty()).then(|| head.to_string())
}

pub(crate) fn phrase_answer(s: &str) -> Option<String> {
    let plain = s.replace("**", "");
    let m = phrase_re().find_iter(&plain).last()?;
    answer_tail(&plain[m.end()..])
}

fn has_text(v: &Value) -> bool {
    match v {
        Value::Text(_) => true,
        Value::Scalar { .. } | Value::Equation { .. } => false,
        Value::Seq { items, .. } | Value::Set(items) | Value::Union(items) => {
            items.iter().any(has_text)
        }
    }
}

/// A response that is nothing but an answer (`x = 5`, `(1, 2)`, `five`).
fn whole_answer(s: &str) -> Option<String> {
    let t = s.trim();
    if t.is_empty() || t.len() > 80 || t.contains('\n') {
        return None;
    }
    // No prose: every word of three or more letters (outside LaTeX commands)
    // must be a number word or a connective.
    static WORD: OnceLock<Regex> = OnceLock::new();
    let word = re(&WORD, r"\\[A-Za-z]+|[A-Za-z]{3,}");
    let prose = word.find_iter(t).any(|m| {
        let w = m.as_str();
        !w.starts_with('\\')
            && !is_number_word(w)
            && !matches!(
                w.to_ascii_lowercase().as_str(),
                "and" | "negative" | "minus" | "sqrt" | "sin" | "cos" | "tan" | "log" | "exp"
            )
    });
    // Short English words are prose too (`so`, `is`); `or` joins solutions.
    static SHORT: OnceLock<Regex> = OnceLock::new();
    let short = re(
        &SHORT,
        r"(?i)\b(?:so|is|it|we|to|be|as|at|by|if|of|on|an|the)\b",
    );
    let prose = prose || short.is_match(t);
    if prose {
        return None;
    }
    (!has_text(&parse_value(t))).then(|| t.to_string())
}

fn tuple_re() -> &'static Regex {
    static CELL: OnceLock<Regex> = OnceLock::new();
    re(&CELL, r"[(\[][^()\[\]]*,[^()\[\]]*[)\]]")
}

fn last_number(s: &str) -> Option<String> {
    // Skip exponents and subscripts: the `2` of `cm^2` or `x_2` is no answer.
    let m = number_re()
        .find_iter(s)
        .filter(|m| {
            let before = &s.as_bytes()[..m.start()];
            let n = before.len();
            let marks = |b: u8| b == b'^' || b == b'_';
            !(n >= 1 && marks(before[n - 1])
                || n >= 2 && before[n - 1] == b'{' && marks(before[n - 2]))
        })
        .last()?;
    // `is − 8`: a minus sign set off by a space after a word, `=` or `:`.
    let text = m.as_str();
    if !text.starts_with(['-', '−']) {
        let before = s[..m.start()].trim_end_matches(' ');
        if let Some(rest) = before.strip_suffix(['-', '−']) {
            let rest = rest.trim_end();
            let prev: String = rest
                .chars()
                .rev()
                .take_while(|c| c.is_alphabetic())
                .collect();
            if rest.is_empty() || rest.ends_with(['=', ':']) || prev.chars().count() >= 2 {
                return Some(format!("-{text}"));
            }
        }
    }
    // A number inside a final tuple `(-1, 4)` or interval `[2, 5)` means the tuple.
    if let Some(t) = tuple_re().find_iter(s).last() {
        if t.start() <= m.start() && m.end() <= t.end() && !inside_math(s, t.start()) {
            return Some(t.as_str().to_string());
        }
    }
    // When that number sits inside the last `$..$` segment, take the segment:
    // `so $x = \frac{3}{4}$` should give 3/4, not 4.
    if let Some(seg) = math_segment_re().captures_iter(s).last() {
        let whole = seg.get(0)?;
        if whole.start() <= m.start() && m.end() <= whole.end() {
            let inner = (1..=4).find_map(|i| seg.get(i))?;
            return Some(inner.as_str().trim().to_string());
        }
    }
    Some(m.as_str().to_string())
}

/// Whether byte `at` lies inside a `$..$` segment.
fn inside_math(s: &str, at: usize) -> bool {
    math_segment_re()
        .find_iter(s)
        .any(|m| m.start() < at && at < m.end())
}

/// The last list of numbers, `1 and 4`, `2, 3 or 5`: for gold answers with
/// several members, when no explicit answer was marked.
pub(crate) fn last_number_list(s: &str) -> Option<String> {
    static CELL: OnceLock<Regex> = OnceLock::new();
    let num = r"[-−]?\d+(?:\.\d+)?(?:/\d+)?";
    let list = re(
        &CELL,
        &format!(r"{num}(?:\s*(?:,\s*and|,\s*or|,|and|or)\s*{num})+"),
    );
    list.find_iter(s).last().map(|m| m.as_str().to_string())
}

fn last_number_words(s: &str) -> Option<String> {
    let words: Vec<&str> = s
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '.' | '!' | '?' | ';' | ':'))
        .filter(|w| !w.is_empty())
        .collect();
    let is_part = |w: &str| is_number_word(w) || matches!(w, "and" | "negative" | "minus");
    let end = words.iter().rposition(|w| is_number_word(w))?;
    let mut start = end;
    while start > 0 && is_part(words[start - 1]) {
        start -= 1;
    }
    while words[start] == "and" {
        start += 1;
    }
    Some(words[start..=end].join(" "))
}

/// Find the final answer and say how it was found.
pub(crate) fn extract(response: &str) -> Option<(String, Method)> {
    if let Some(b) = last_boxed(response) {
        return Some((b, "boxed"));
    }
    if let Some(i) = response.rfind("####") {
        let line = response[i + 4..].lines().next().unwrap_or("").trim();
        if !line.is_empty() {
            return Some((line.to_string(), "####"));
        }
    }
    if let Some(a) = phrase_answer(response) {
        return Some((a, "answer phrase"));
    }
    if let Some(a) = whole_answer(response) {
        return Some((a, "whole response"));
    }
    if let Some(a) = last_number(response) {
        return Some((a, "last number"));
    }
    if let Some(a) = last_number_words(response) {
        return Some((a, "number words"));
    }
    let t = response.trim();
    (!t.is_empty() && t.len() <= 80 && !t.contains('\n')).then(|| (t.to_string(), "short response"))
}

/// The content of the first `<answer>...</answer>` span (case-insensitive
/// tags, as the reference's `re.search(r"<answer>(.*?)</answer>")`), trimmed.
pub(crate) fn answer_tag(response: &str) -> Option<String> {
    let lower = response.to_ascii_lowercase();
    let open = lower.find("<answer>")?;
    let start = open + "<answer>".len();
    let close = lower[start..].find("</answer>")? + start;
    Some(response[start..close].trim().to_string())
}

/// Strict extraction (the reference's): the `<answer>` content, else the last
/// `\boxed{}`; `phrase` also reads a `####` line or an "answer is" /
/// "Answer:" phrase. Anything else has no answer (scores 0).
pub(crate) fn extract_strict(response: &str, phrases: bool) -> Option<(String, Method)> {
    if let Some(a) = answer_tag(response) {
        return Some((a, "<answer>"));
    }
    if let Some(b) = last_boxed(response) {
        return Some((b, "boxed"));
    }
    if !phrases {
        return None;
    }
    if let Some(i) = response.rfind("####") {
        let line = response[i + 4..].lines().next().unwrap_or("").trim();
        if !line.is_empty() {
            return Some((line.to_string(), "####"));
        }
    }
    phrase_answer(response).map(|a| (a, "answer phrase"))
}

/// The final-answer string of a response (what the math verifier compares).
pub fn extract_final_answer(response: &str) -> Option<String> {
    extract(response).map(|(a, _)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extraction_order() {
        assert_eq!(
            extract_final_answer(r"so \boxed{\frac{1}{2}} and 7"),
            Some(r"\frac{1}{2}".into())
        );
        assert_eq!(extract_final_answer("3 + 4 = 7\n#### 7"), Some("7".into()));
        assert_eq!(
            extract_final_answer("The answer is 42, which is even."),
            Some("42".into())
        );
        assert_eq!(
            extract_final_answer("We get 3.5 apples."),
            Some("3.5".into())
        );
        assert_eq!(
            extract_final_answer(r"so we have $x = \frac{3}{4}$."),
            Some(r"x = \frac{3}{4}".into())
        );
        assert_eq!(extract_final_answer("yes"), Some("yes".into()));
        let prose =
            "There is nothing to compute here, and no number appears anywhere in this long reply.";
        assert_eq!(extract_final_answer(prose), None);
    }

    #[test]
    fn strict_extraction_reads_tags_and_boxes_only() {
        let tagged = "<thought>2+2 is 4, not 5</thought> <ANSWER> 4 </answer>";
        assert_eq!(
            extract_strict(tagged, false),
            Some(("4".into(), "<answer>"))
        );
        // The first <answer> span, as the reference's re.search.
        let two = "<answer>3</answer> no: <answer>4</answer>";
        assert_eq!(extract_strict(two, false).unwrap().0, "3");
        assert_eq!(extract_strict(r"so \boxed{7}.", false).unwrap().0, "7");
        // No tag, no box: nothing, however obvious the last number.
        assert_eq!(extract_strict("so the total is 7", false), None);
        assert_eq!(extract_strict("Answer: 7", false), None);
        assert_eq!(extract_strict("<answer>7", false), None);
        // `phrase` adds #### and answer phrases, never the last number.
        assert_eq!(extract_strict("Answer: 7", true).unwrap().0, "7");
        assert_eq!(extract_strict("x\n#### 9", true).unwrap().0, "9");
        assert_eq!(extract_strict("so the total is 7", true), None);
    }
}
