//! Multiple-choice answers: a gold letter (`C`, `(C)`, `\\text{(C)}`), the
//! letter a response chose, and the options a prompt lists (so an answer
//! given as an option's content can be matched to its letter).

use std::collections::BTreeSet;
use std::sync::OnceLock;

use regex::Regex;

use super::extract::{last_boxed, phrase_answer, re};
use super::latex::clean;

fn choice_re() -> &'static Regex {
    static CELL: OnceLock<Regex> = OnceLock::new();
    re(
        &CELL,
        r"^(?:(?i:option|choice)\s*)?[(\[]?([A-J])[)\]]?(?:[.:)]|\s|$)",
    )
}

/// A multiple-choice letter written alone: `C`, `(C)`, `C.`, `\text{(C)}`.
pub(crate) fn parse_choice(gold: &str) -> Option<char> {
    let g = clean(gold);
    let g = g.trim();
    let caps = choice_re().captures(g)?;
    let letter = caps.get(1)?;
    // Only the letter and its brackets: `C) 42` is not a bare gold letter.
    let rest = g[caps.get(0)?.end()..].trim();
    rest.is_empty().then(|| letter.as_str().chars().next())?
}

fn leading_choice(s: &str) -> Option<char> {
    let c = clean(s);
    let caps = choice_re().captures(c.trim())?;
    caps.get(1)?.as_str().chars().next()
}

/// The option letter a response chose, if it names one.
pub(crate) fn extract_choice(response: &str) -> Option<char> {
    if let Some(b) = last_boxed(response) {
        return leading_choice(&b);
    }
    if let Some(a) = phrase_answer(response) {
        if let Some(c) = leading_choice(&a) {
            return Some(c);
        }
    }
    static IS_RIGHT: OnceLock<Regex> = OnceLock::new();
    let is_right = re(
        &IS_RIGHT,
        r"\(([A-J])\)\s+is\s+(?:the\s+)?(?:right|correct|best|true)\b",
    );
    if let Some(c) = is_right.captures_iter(response).last() {
        return c.get(1)?.as_str().chars().next();
    }
    // A lone letter in either case: `e`, `(e)`, `E.`.
    let bare = response
        .trim()
        .trim_end_matches('.')
        .trim_start_matches('(')
        .trim_end_matches(')');
    if bare.len() == 1 && bare.chars().all(|c| c.is_ascii_alphabetic()) {
        let c = bare.chars().next()?.to_ascii_uppercase();
        return ('A'..='J').contains(&c).then_some(c);
    }
    static OPTION: OnceLock<Regex> = OnceLock::new();
    let option = re(&OPTION, r"(?i:option|choice)\s*\(?([A-J])\b");
    if let Some(c) = option.captures_iter(response).last() {
        return c.get(1)?.as_str().chars().next();
    }
    // Last resort, a letter in parentheses: only when it is the one letter
    // of the last sentence, or of the whole response. A response that lists
    // every option without choosing one gets no letter.
    static PAREN: OnceLock<Regex> = OnceLock::new();
    let paren = re(&PAREN, r"\(([A-J])\)");
    let letters = |text: &str| -> BTreeSet<char> {
        paren
            .captures_iter(text)
            .filter_map(|c| c.get(1)?.as_str().chars().next())
            .collect()
    };
    // A short response that opens with its letter: `C) 42`, `(B) 24`.
    if let Some(c) = leading_choice(response.trim()) {
        if response.trim().len() <= 80 && letters(response).len() <= 1 {
            return Some(c);
        }
    }
    let trimmed = response.trim().trim_end_matches('.');
    let last_sentence = trimmed
        .rsplit(['.', '\n'])
        .find(|s| !s.trim().is_empty())
        .unwrap_or(trimmed);
    for text in [last_sentence, response] {
        let found = letters(text);
        if found.len() == 1 {
            return found.into_iter().next();
        }
        if found.len() > 1 {
            return None;
        }
    }
    None
}

/// The options a prompt lists, `(A) 12 (B) 15`, `A. 12` / `B) 15` on their
/// own lines: letters in order from `A`, with their text.
pub(crate) fn prompt_options(prompt: &str) -> Vec<(char, String)> {
    static MARK: OnceLock<Regex> = OnceLock::new();
    let mark = re(
        &MARK,
        r"(?m)(?:^|[\s,;:])\(([A-J])\)\s*|^[ \t]*([A-J])[.):][ \t]+",
    );
    let marks: Vec<(char, usize, usize)> = mark
        .captures_iter(prompt)
        .filter_map(|c| {
            let whole = c.get(0)?;
            let letter = c.get(1).or_else(|| c.get(2))?.as_str().chars().next()?;
            Some((letter, whole.start(), whole.end()))
        })
        .collect();
    // Keep the first run A, B, C, ... in order.
    let mut options: Vec<(char, String)> = Vec::new();
    for (i, &(letter, _, end)) in marks.iter().enumerate() {
        let want = (b'A' + options.len() as u8) as char;
        if letter != want {
            if options.len() >= 2 {
                break;
            }
            options.clear();
            if letter != 'A' {
                continue;
            }
        }
        let stop = marks.get(i + 1).map_or(prompt.len(), |m| m.1);
        let text = prompt[end..stop].lines().next().unwrap_or("");
        let text = text.trim().trim_end_matches([',', ';']).trim();
        options.push((letter, text.to_string()));
    }
    if options.len() >= 2 {
        options
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices() {
        assert_eq!(parse_choice("(C)"), Some('C'));
        assert_eq!(parse_choice("C"), Some('C'));
        assert_eq!(parse_choice("42"), None);
        assert_eq!(extract_choice("The answer is (B)."), Some('B'));
        assert_eq!(extract_choice(r"\boxed{D}"), Some('D'));
        assert_eq!(extract_choice("A"), Some('A'));
        assert_eq!(extract_choice("I pick option C because"), Some('C'));
        assert_eq!(extract_choice("Maybe (A), (B), (C) or (D)."), None);
        assert_eq!(extract_choice("(A) fails. (B) fails. So (C)."), Some('C'));
    }

    #[test]
    fn options_from_prompts() {
        let inline = prompt_options("What is 6*3? (A) 12 (B) 15 (C) 18 (D) 21");
        assert_eq!(
            inline,
            vec![
                ('A', "12".to_string()),
                ('B', "15".to_string()),
                ('C', "18".to_string()),
                ('D', "21".to_string())
            ]
        );
        let lines = prompt_options("Pick one.\nA. red\nB. green\nC) blue\n");
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2], ('C', "blue".to_string()));
        assert!(prompt_options("What is (A) times 2?").is_empty());
    }
}
