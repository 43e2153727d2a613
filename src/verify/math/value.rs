//! Structured answers: scalars, tuples, intervals, sets, unions and text,
//! and the equality a grader applies to them.

use super::expr::{expr_equal, parse_expr, Expr};
use super::latex::{clean, normalize_text, repeating_decimals, strip_thousands, strip_units};
use super::relation::{equation, inequality, proportional};
use super::words::parse_number_words;

/// A parsed final answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// One number or expression; `percent` when it was written with `%`.
    Scalar {
        /// The expression.
        expr: Expr,
        /// Written as a percentage.
        percent: bool,
    },
    /// A bracketed sequence: a tuple `(1,2)`, or an interval `[2,5)`.
    Seq {
        /// Opening bracket, `(` or `[`.
        open: char,
        /// Closing bracket, `)` or `]`.
        close: char,
        /// The members, in order.
        items: Vec<Value>,
    },
    /// An unordered collection: `\{1,2\}`, `1, 2`, `x=1 or x=2`.
    Set(Vec<Value>),
    /// A union of intervals.
    Union(Vec<Value>),
    /// An equation in its variables, `y = 2x + 3`, held as `lhs - rhs`;
    /// `solved` is the right side when the left is a lone variable.
    Equation {
        /// `lhs - rhs`.
        diff: Expr,
        /// The right side of `var = rhs`.
        solved: Option<Expr>,
    },
    /// Anything else, compared as normalised text.
    Text(String),
}

/// Words in front of a number that do not change it.
const LEAD_WORDS: &[&str] = &[
    "approximately",
    "about",
    "around",
    "roughly",
    "exactly",
    "only",
    "just",
    "therefore",
    "thus",
    "so",
    "then",
    "a total of",
    "total of",
    "equal to",
    "and",
    "or",
];

/// Split `s` at top-level occurrences of `sep` (outside brackets and braces).
pub(crate) fn split_top<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        // A command separator (`\in`, `\cup`) must not be the start of a
        // longer command (`\infty`).
        let at_sep = depth == 0 && s.is_char_boundary(i) && s[i..].starts_with(sep);
        let whole_word = || {
            !sep.ends_with(|c: char| c.is_ascii_alphabetic())
                || !s[i + sep.len()..].starts_with(|c: char| c.is_ascii_alphabetic())
        };
        if at_sep && whole_word() {
            parts.push(&s[start..i]);
            i += sep.len();
            start = i;
            continue;
        }
        i += 1;
    }
    parts.push(&s[start..]);
    parts
}

/// Whether the bracket opening at byte 0 closes at the last byte.
fn wrapped(s: &str) -> bool {
    let bytes = s.as_bytes();
    if bytes.len() < 2 || !matches!(bytes[0], b'(' | b'[') {
        return false;
    }
    let mut depth = 0i32;
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i == bytes.len() - 1 && matches!(b, b')' | b']');
                }
            }
            _ => {}
        }
    }
    false
}

/// Longest answer, and deepest bracket nesting, that is parsed as math;
/// anything bigger is compared as text (and keeps the recursive parser's
/// stack small whatever a model prints).
const MAX_LEN: usize = 2000;
const MAX_DEPTH: usize = 32;

/// Parse a raw answer (cleaned here).
pub(crate) fn parse_value(raw: &str) -> Value {
    let s = repeating_decimals(&clean(raw));
    let mut depth = 0usize;
    let mut deepest = 0usize;
    for c in s.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        deepest = deepest.max(depth);
    }
    if s.len() > MAX_LEN || deepest > MAX_DEPTH {
        return Value::Text(normalize_text(&s));
    }
    parse_clean(&s)
}

fn strip_lead_words(mut s: &str) -> &str {
    loop {
        let lower = s.to_ascii_lowercase();
        match LEAD_WORDS
            .iter()
            .find(|w| lower.starts_with(**w) && lower[w.len()..].starts_with(' '))
        {
            Some(w) => s = s[w.len()..].trim_start(),
            None => return s,
        }
    }
}

pub(crate) fn parse_clean(s: &str) -> Value {
    let s = strip_lead_words(s.trim()).trim();
    let s = s.trim_end_matches(['.', ',', ';']).trim();
    let union = split_top(s, "\\cup");
    if union.len() > 1 {
        return Value::Union(union.iter().map(|p| parse_clean(p)).collect());
    }
    if let Some(inner) = s.strip_prefix("\\{").and_then(|r| r.strip_suffix("\\}")) {
        return Value::Set(split_list(inner).iter().map(|p| parse_clean(p)).collect());
    }
    if wrapped(s) {
        let inner = &s[1..s.len() - 1];
        let items = split_top(inner, ",");
        if items.len() > 1 {
            return Value::Seq {
                open: s.chars().next().unwrap_or('('),
                close: s.chars().last().unwrap_or(')'),
                items: items.iter().map(|p| parse_clean(p)).collect(),
            };
        }
    }
    let s = strip_thousands(s);
    let s = s.as_str();
    for sep in [";", ","] {
        let items = split_list_by(s, sep);
        if items.len() > 1 {
            return Value::Set(items.iter().map(|p| parse_clean(p)).collect());
        }
    }
    if let Some(v) = parse_number_words(s) {
        return Value::Scalar {
            expr: Expr::Num(v),
            percent: false,
        };
    }
    // `2 \pm \sqrt{3}` is the pair of both signs.
    if split_top(s, "\\pm").len() == 2 {
        return Value::Set(vec![
            parse_clean(&s.replace("\\pm", "+")),
            parse_clean(&s.replace("\\pm", "-")),
        ]);
    }
    for sep in [" or ", " and "] {
        let items = split_top(s, sep);
        if items.len() > 1 {
            return Value::Set(items.iter().map(|p| parse_clean(p)).collect());
        }
    }
    if let Some(v) = inequality(s) {
        return v;
    }
    // `x = 5`, `y \approx 2.3`, `x \in [1, 2]`: the answer is the last side.
    if let Some(v) = equation(s) {
        return v;
    }
    for sep in ["=", "\\in"] {
        let sides = split_top(s, sep);
        if sides.len() > 1 {
            let last = sides[sides.len() - 1].trim();
            if !last.is_empty() {
                return parse_clean(last);
            }
        }
    }
    scalar(s)
}

fn split_list(s: &str) -> Vec<&str> {
    split_list_by(s, ",")
}

fn split_list_by<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    split_top(s, sep)
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn scalar(s: &str) -> Value {
    let (body, percent) = match s.strip_suffix('%') {
        Some(b) => (b.trim(), true),
        None => (s, false),
    };
    static MIXED: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let mixed = MIXED.get_or_init(|| {
        regex::Regex::new(r"^(-?)(\d+)\s+(\d+)/(\d+)$|^(.+?)\s+[xX]\s+(10\^.+)$")
            .unwrap_or_else(|e| unreachable!("bad regex: {e}"))
    });
    if let Some(c) = mixed.captures(body) {
        // `2 1/2` is the mixed number 2 1/2; `3 x 10^8` is a product.
        let rewritten = match (c.get(2), c.get(5)) {
            (Some(int), _) => format!("{}({}+{}/{})", &c[1], int.as_str(), &c[3], &c[4]),
            (None, Some(m)) => format!("{}*{}", m.as_str(), &c[6]),
            _ => body.to_string(),
        };
        if let Some(expr) = parse_expr(&rewritten) {
            return Value::Scalar { expr, percent };
        }
    }
    if let Some(expr) = parse_expr(body) {
        return Value::Scalar { expr, percent };
    }
    if let Some(v) = parse_number_words(body) {
        return Value::Scalar {
            expr: Expr::Num(v),
            percent,
        };
    }
    if let Some(head) = strip_units(body) {
        if let Some(head) = head.strip_suffix('%') {
            if let Some(expr) = parse_expr(head) {
                return Value::Scalar {
                    expr,
                    percent: true,
                };
            }
        }
        let lower = body.to_ascii_lowercase();
        let percent = percent || lower.ends_with("percent");
        if let Some(expr) = parse_expr(head) {
            return Value::Scalar { expr, percent };
        }
        if let Some(v) = parse_number_words(head) {
            return Value::Scalar {
                expr: Expr::Num(v),
                percent,
            };
        }
    }
    Value::Text(normalize_text(s))
}

fn scaled(e: &Expr, by: f64) -> Expr {
    Expr::Mul(Box::new(e.clone()), Box::new(Expr::Num(by)))
}

/// Whether `pred` is a correct answer for `gold`.
pub(crate) fn values_equal(gold: &Value, pred: &Value, rel_tol: f64) -> bool {
    use Value::*;
    match (gold, pred) {
        (
            Scalar {
                expr: g,
                percent: gp,
            },
            Scalar {
                expr: p,
                percent: pp,
            },
        ) => {
            // `50%` answers a gold of `50` or of `0.5`, and the other way round.
            expr_equal(g, p, rel_tol)
                || (*pp && !*gp && expr_equal(g, &scaled(p, 0.01), rel_tol))
                || (*gp && !*pp && expr_equal(&scaled(g, 0.01), p, rel_tol))
        }
        (
            Seq {
                open: go,
                close: gc,
                items: gi,
            },
            Seq {
                open: po,
                close: pc,
                items: pi,
            },
        ) => go == po && gc == pc && seq_equal(gi, pi, rel_tol),
        // A tuple written without its parentheses.
        (
            Seq {
                open: '(',
                close: ')',
                items: gi,
            },
            Set(pi),
        ) => seq_equal(gi, pi, rel_tol),
        (Set(gi), Set(pi)) | (Union(gi), Union(pi)) | (Union(gi), Set(pi)) => {
            set_equal(gi, pi, rel_tol)
        }
        (Set(gi), p) if gi.len() == 1 => values_equal(&gi[0], p, rel_tol),
        (g, Set(pi)) if pi.len() == 1 => values_equal(g, &pi[0], rel_tol),
        (Text(g), Text(p)) => g == p,
        (Equation { diff: g, .. }, Equation { diff: p, .. }) => proportional(g, p, rel_tol),
        // `y = 2x + 3` answers `2x + 3` and the other way round.
        (
            Scalar { expr: g, .. },
            Equation {
                solved: Some(p), ..
            },
        )
        | (
            Equation {
                solved: Some(g), ..
            },
            Scalar { expr: p, .. },
        ) => expr_equal(g, p, rel_tol),
        _ => false,
    }
}

fn seq_equal(g: &[Value], p: &[Value], rel_tol: f64) -> bool {
    g.len() == p.len() && g.iter().zip(p).all(|(a, b)| values_equal(a, b, rel_tol))
}

fn set_equal(g: &[Value], p: &[Value], rel_tol: f64) -> bool {
    if g.len() != p.len() {
        return false;
    }
    let mut used = vec![false; p.len()];
    g.iter().all(
        |a| match (0..p.len()).find(|&j| !used[j] && values_equal(a, &p[j], rel_tol)) {
            Some(j) => {
                used[j] = true;
                true
            }
            None => false,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eq(g: &str, p: &str) -> bool {
        values_equal(&parse_value(g), &parse_value(p), 1e-6)
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(strip_thousands("10,000"), "10000");
        assert_eq!(strip_thousands("1 234 567.5"), "1234567.5");
        assert_eq!(strip_thousands("1,2"), "1,2");
        assert_eq!(strip_thousands("1234,567"), "1234,567");
        assert!(eq("10000", r"10\,000"));
        assert!(eq("10000", "10{,}000"));
    }

    #[test]
    fn structured_answers() {
        assert!(eq("(1, 2)", r"\left(1,2\right)"));
        assert!(!eq("(1, 2)", "(2, 1)"));
        assert!(eq("[2, 5)", "[2,5)"));
        assert!(!eq("[2, 5)", "(2,5)"));
        assert!(eq(r"\{1, 2\}", r"\{2,1\}"));
        assert!(eq("x = 2 or x = 3", "3, 2"));
        assert!(eq("50%", "0.5"));
        assert!(eq("5", "5 cm"));
        assert!(eq("twelve", "12"));
        assert!(eq(r"(-\infty, 3]", r"(-\infty,3]"));
        assert!(!eq("yes", "no"));
        assert!(eq(r"\frac{1}{3}", r"0.\overline{3}"));
        assert!(eq(r"\frac{41}{33}", r"1.\overline{24}"));
        assert!(eq("-1, 1", r"\pm 1"));
        assert!(eq("[0, 1]", r"0 \le x \le 1"));
        assert!(eq(r"(2, \infty)", "x > 2"));
        assert!(eq(r"(-\infty, 3]", r"3 \geq x"));
        assert!(!eq("[0, 1]", "0 < x < 1"));
        assert!(eq("y = 2x + 3", "2x - y + 3 = 0"));
        assert!(eq("y = 2x + 3", "2x + 3"));
        assert!(!eq("(x-1)^2 + y^2 = 9", "x^2 + y^2 = 9"));
        assert!(!eq("x + y = 5", "x - y = 5"));
        assert!(eq("x = 5", "5"));
        assert!(eq("5", "2 + 3 = 5"));
    }
}
