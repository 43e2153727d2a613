//! Text clean-up of an extracted answer before it is parsed: Unicode
//! symbols, math delimiters, LaTeX spacing and formatting commands, degree
//! signs, markdown emphasis.

use std::sync::OnceLock;

use regex::Regex;

/// Index just past the brace group opening at `open` (which must be `{`),
/// or `None` when the braces do not balance.
pub(crate) fn brace_end(s: &str, open: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    if bytes.get(open) != Some(&b'{') {
        return None;
    }
    let mut depth = 0usize;
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        match b {
            b'{' if i == 0 || bytes[i - 1] != b'\\' => depth += 1,
            b'}' if i == 0 || bytes[i - 1] != b'\\' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Replace every `\cmd{body}` by `body` for the given commands.
fn unwrap_commands(mut s: String, cmds: &[&str]) -> String {
    for cmd in cmds {
        let pat = format!("\\{cmd}");
        let mut from = 0;
        while let Some(rel) = s[from..].find(&pat) {
            let at = from + rel;
            let mut open = at + pat.len();
            // `\text` must not match `\textbf`: the next char must be a brace or space.
            while s[open..].starts_with(' ') {
                open += 1;
            }
            match brace_end(&s, open) {
                Some(end) => {
                    let body = s[open + 1..end - 1].to_string();
                    s.replace_range(at..end, &body);
                    from = at;
                }
                None => from = at + pat.len(),
            }
        }
    }
    s
}

/// Unicode symbols that models print, mapped to the ASCII/LaTeX the parser reads.
const UNICODE: &[(&str, &str)] = &[
    ("\u{2212}", "-"), // minus sign
    ("\u{2013}", "-"), // en dash
    ("\u{2012}", "-"), // figure dash
    ("\u{fe63}", "-"), // small hyphen-minus
    ("\u{ff0d}", "-"), // fullwidth hyphen-minus
    ("\u{00d7}", "*"), // multiplication sign
    ("\u{22c5}", "*"), // dot operator
    ("\u{00b7}", "*"), // middle dot
    ("\u{00f7}", "/"), // division sign
    ("\u{2215}", "/"), // division slash
    ("\u{03c0}", "\\pi "),
    ("\u{221a}", "\\sqrt"),
    ("\u{221e}", "\\infty "),
    ("\u{222a}", "\\cup "),
    ("\u{2208}", "\\in "),
    ("\u{2264}", "\\le "),
    ("\u{2265}", "\\ge "),
    ("\u{00b1}", "\\pm "),
    ("\u{00bd}", "(1/2)"),
    ("\u{00bc}", "(1/4)"),
    ("\u{00be}", "(3/4)"),
    ("\u{2153}", "(1/3)"),
    ("\u{2154}", "(2/3)"),
    ("\u{00b2}", "^2"),
    ("\u{00b3}", "^3"),
    ("\u{00b0}", ""),  // degree sign
    ("\u{2009}", " "), // thin space
    ("\u{202f}", " "), // narrow no-break space
    ("\u{00a0}", " "), // no-break space
    ("\u{2248}", "="), // almost equal: the value after it is the answer
];

/// LaTeX commands dropped outright (spacing, sizing, degree marks).
const DROP: &[&str] = &[
    "\\displaystyle",
    "\\left.",
    "\\right.",
    "\\left",
    "\\right",
    "\\bigl",
    "\\bigr",
    "\\Bigl",
    "\\Bigr",
    "\\big",
    "\\Big",
    "^{\\circ}",
    "^\\circ",
    "{}^\\circ",
    "\\circ",
    "\\degree",
    "\\qquad",
    "\\quad",
    "\\,",
    "\\;",
    "\\:",
    "\\ ",
];

/// Clean an extracted answer into the form [`super::value`] parses.
pub(crate) fn clean(s: &str) -> String {
    // `\!` is a negative thin space: `32,\!348` is 32,348.
    let mut s = s.replace("\\!", "");
    // Mixed numbers with vulgar fractions: `3½` is 3 + 1/2.
    if s.contains(['\u{00bd}', '\u{00bc}', '\u{00be}', '\u{2153}', '\u{2154}']) {
        static MIXED: OnceLock<Regex> = OnceLock::new();
        let mixed = MIXED.get_or_init(|| {
            Regex::new(r"(\d+)\s*([\x{00bd}\x{00bc}\x{00be}\x{2153}\x{2154}])")
                .unwrap_or_else(|e| unreachable!("bad regex: {e}"))
        });
        s = mixed.replace_all(&s, "($1+$2)").into_owned();
    }
    for (from, to) in UNICODE {
        s = s.replace(from, to);
    }
    s = s.replace("\\$", "").replace('$', "");
    for d in ["\\(", "\\)", "\\[", "\\]"] {
        s = s.replace(d, "");
    }
    s = s.replace("**", "").replace('`', "");
    // Column vectors and matrices are compared as tuples of their entries.
    for env in ["pmatrix", "bmatrix", "matrix"] {
        s = s
            .replace(&format!("\\begin{{{env}}}"), "(")
            .replace(&format!("\\end{{{env}}}"), ")");
    }
    if s.contains("\\\\") || s.contains('&') {
        s = s.replace("\\\\", ",").replace('&', ",");
    }
    s = unwrap_commands(
        s,
        &[
            "boxed",
            "fbox",
            "textbf",
            "textit",
            "textrm",
            "textnormal",
            "text",
            "mathrm",
            "mathbf",
            "mathit",
            "mbox",
            "operatorname",
        ],
    );
    // Degrees inside trigonometric functions become radians: `\sin 60^\circ`.
    if ["\\sin", "\\cos", "\\tan"].iter().any(|f| s.contains(f)) {
        static DEG: OnceLock<Regex> = OnceLock::new();
        let deg = DEG.get_or_init(|| {
            Regex::new(r"(\d+(?:\.\d+)?)\s*\^\s*\{?\\circ\}?")
                .unwrap_or_else(|e| unreachable!("bad regex: {e}"))
        });
        s = deg.replace_all(&s, "($1\\pi/180)").into_owned();
    }
    for d in DROP {
        s = s.replace(d, " ");
    }
    s = s
        .replace("{,}", ",")
        .replace("\\%", "%")
        .replace("\\approx", "=")
        .replace("\\leq", "\\le")
        .replace("\\geq", "\\ge")
        .replace('~', " ");
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    s.trim()
        .trim_end_matches(['.', ',', ';', ':'])
        .trim()
        .to_string()
}

/// Remove thousands separators (`,` or a space) from digit groups such as
/// `10,000`, `1 234 567` or `12,345.5`; leaves `1,2` and `(3, 4)` alone.
pub(crate) fn strip_thousands(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_number = chars[i].is_ascii_digit()
            && (i == 0 || !(chars[i - 1].is_ascii_digit() || chars[i - 1] == '.'));
        if starts_number {
            let mut j = i;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            let lead = j - i;
            let mut groups = Vec::new();
            let mut k = j;
            while let Some(&sep) = chars.get(k) {
                let same_sep = groups.is_empty() || sep == chars[groups[0]];
                let group_ok = k + 4 <= chars.len()
                    && chars[k + 1..k + 4].iter().all(|c| c.is_ascii_digit())
                    && !chars.get(k + 4).is_some_and(|c| c.is_ascii_digit());
                if !(sep == ',' || sep == ' ') || !same_sep || !group_ok {
                    break;
                }
                groups.push(k);
                k += 4;
            }
            if (1..=3).contains(&lead) && !groups.is_empty() {
                for (idx, c) in chars.iter().enumerate().take(k).skip(i) {
                    if !groups.contains(&idx) {
                        out.push(*c);
                    }
                }
                i = k;
                continue;
            }
            out.extend(&chars[i..j]);
            i = j;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Drop a trailing unit or word list: `5 cm`, `12 apples`, `3 km/h`, `40 m^2`.
pub(crate) fn strip_units(s: &str) -> Option<&str> {
    let bytes = s.as_bytes();
    let mut end = s.len();
    // Walk back over letters, spaces, `/`, `^` and exponent digits that follow a letter.
    while end > 0 {
        let c = bytes[end - 1];
        let exponent_digit = c.is_ascii_digit() && end >= 2 && bytes[end - 2] == b'^';
        if c.is_ascii_alphabetic() || c == b' ' || c == b'/' || c == b'^' || exponent_digit {
            end -= if exponent_digit { 2 } else { 1 };
        } else {
            break;
        }
    }
    let head = s[..end].trim_end();
    let tail = s[end..].trim();
    let letters = tail.chars().filter(|c| c.is_ascii_alphabetic()).count();
    (!head.is_empty() && letters >= 2).then_some(head)
}

/// Rewrite repeating decimals `0.\overline{3}`, `1.2\overline{45}` as exact
/// fractions `(N/D)`.
pub(crate) fn repeating_decimals(s: &str) -> String {
    static RE: OnceLock<Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"(\d*)\.(\d*)\\overline\{(\d{1,9})\}")
            .unwrap_or_else(|e| unreachable!("bad regex: {e}"))
    });
    re.replace_all(s, |c: &regex::Captures<'_>| {
        let (int, fixed, rep) = (&c[1], &c[2], &c[3]);
        // x = int.fixed(rep)... = (int fixed rep - int fixed) / ((10^|rep| - 1) 10^|fixed|)
        let all: f64 = format!("{int}{fixed}{rep}").parse().unwrap_or(f64::NAN);
        let head: f64 = format!("0{int}{fixed}").parse().unwrap_or(f64::NAN);
        let den = (10f64.powi(rep.len() as i32) - 1.0) * 10f64.powi(fixed.len() as i32);
        format!("(({})/({}))", all - head, den)
    })
    .into_owned()
}

/// Canonical form of a textual answer: lowercase, no spaces or final period.
pub(crate) fn normalize_text(s: &str) -> String {
    clean(s)
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '{' && *c != '}')
        .collect()
}

/// The words of a sentence, lowercased, without punctuation.
pub(crate) fn normalize_words(s: &str) -> Vec<String> {
    clean(s)
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_delimiters_spacing_and_text() {
        assert_eq!(clean(r"$10\,000$."), "10 000");
        assert_eq!(clean(r"\boxed{\text{5 cm}}"), "5 cm");
        assert_eq!(clean(r"\left( 1, 2 \right)"), "( 1, 2 )");
        assert_eq!(clean("\u{2212}3"), "-3");
        assert_eq!(clean(r"30^\circ"), "30");
        assert_eq!(clean(r"\$1{,}200"), "1,200");
        assert_eq!(clean(r"**42**"), "42");
        assert_eq!(normalize_text(r"\text{Yes.}"), "yes");
    }

    #[test]
    fn brace_matching() {
        assert_eq!(brace_end("{a{b}c}d", 0), Some(7));
        assert_eq!(brace_end("{a{b}c", 0), None);
    }
}
