//! English number words: "twenty-one", "one hundred and five", "three
//! quarters", "negative seven".

/// Cardinal words below one hundred and their values.
const SMALL: &[(&str, f64)] = &[
    ("zero", 0.0),
    ("one", 1.0),
    ("two", 2.0),
    ("three", 3.0),
    ("four", 4.0),
    ("five", 5.0),
    ("six", 6.0),
    ("seven", 7.0),
    ("eight", 8.0),
    ("nine", 9.0),
    ("ten", 10.0),
    ("eleven", 11.0),
    ("twelve", 12.0),
    ("thirteen", 13.0),
    ("fourteen", 14.0),
    ("fifteen", 15.0),
    ("sixteen", 16.0),
    ("seventeen", 17.0),
    ("eighteen", 18.0),
    ("nineteen", 19.0),
    ("twenty", 20.0),
    ("thirty", 30.0),
    ("forty", 40.0),
    ("fifty", 50.0),
    ("sixty", 60.0),
    ("seventy", 70.0),
    ("eighty", 80.0),
    ("ninety", 90.0),
];

/// Scale words and their multipliers.
const SCALES: &[(&str, f64)] = &[
    ("hundred", 100.0),
    ("thousand", 1e3),
    ("million", 1e6),
    ("billion", 1e9),
];

/// Ordinals, read as their number when they stand alone ("she finished third").
const ORDINALS: &[(&str, f64)] = &[
    ("first", 1.0),
    ("second", 2.0),
    ("third", 3.0),
    ("fourth", 4.0),
    ("fifth", 5.0),
    ("sixth", 6.0),
    ("seventh", 7.0),
    ("eighth", 8.0),
    ("ninth", 9.0),
    ("tenth", 10.0),
];

/// Fraction denominators (singular and plural).
const DENOMS: &[(&str, f64)] = &[
    ("half", 2.0),
    ("halves", 2.0),
    ("third", 3.0),
    ("thirds", 3.0),
    ("quarter", 4.0),
    ("quarters", 4.0),
    ("fourth", 4.0),
    ("fourths", 4.0),
    ("fifth", 5.0),
    ("fifths", 5.0),
    ("sixth", 6.0),
    ("sixths", 6.0),
    ("eighth", 8.0),
    ("eighths", 8.0),
    ("tenth", 10.0),
    ("tenths", 10.0),
];

fn lookup(table: &[(&str, f64)], w: &str) -> Option<f64> {
    table.iter().find(|(k, _)| *k == w).map(|(_, v)| *v)
}

/// Whether `w` is one of the words this module reads.
pub(crate) fn is_number_word(w: &str) -> bool {
    let w = w.to_ascii_lowercase();
    lookup(SMALL, &w).is_some()
        || lookup(SCALES, &w).is_some()
        || lookup(ORDINALS, &w).is_some()
        || lookup(DENOMS, &w).is_some()
        || w.split('-').all(|p| lookup(SMALL, p).is_some())
}

/// The value of a phrase made only of number words, or `None`.
pub(crate) fn parse_number_words(s: &str) -> Option<f64> {
    let lower = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || c == '-')
        .filter(|w| !w.is_empty() && *w != "and")
        .collect();
    if words.is_empty() {
        return None;
    }
    let (sign, words) = match words[0] {
        "negative" | "minus" => (-1.0, &words[1..]),
        _ => (1.0, &words[..]),
    };
    if words.is_empty() {
        return None;
    }
    // "3 million", "2.5 thousand".
    if let [num, scale] = words {
        if let (Ok(n), Some(m)) = (num.parse::<f64>(), lookup(SCALES, scale)) {
            return Some(sign * n * m);
        }
    }
    if let [w] = words {
        if let Some(v) = lookup(ORDINALS, w) {
            return Some(sign * v);
        }
    }
    // "one half", "a third", "three quarters".
    if let Some(den) = lookup(DENOMS, words[words.len() - 1]) {
        let num = match &words[..words.len() - 1] {
            [] | ["a"] | ["an"] => 1.0,
            rest => cardinal(rest)?,
        };
        return Some(sign * num / den);
    }
    Some(sign * cardinal(words)?)
}

fn cardinal(words: &[&str]) -> Option<f64> {
    let mut total = 0.0;
    let mut group = 0.0;
    let mut seen = false;
    for w in words {
        if let Some(v) = lookup(SMALL, w) {
            group += v;
        } else if *w == "hundred" {
            group = group.max(1.0) * 100.0;
        } else if let Some(m) = lookup(SCALES, w) {
            total += group.max(1.0) * m;
            group = 0.0;
        } else if *w == "a" && !seen {
            group = 1.0;
        } else {
            return None;
        }
        seen = true;
    }
    Some(total + group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cardinals_and_fractions() {
        assert_eq!(parse_number_words("five"), Some(5.0));
        assert_eq!(parse_number_words("Twenty-one"), Some(21.0));
        assert_eq!(parse_number_words("one hundred and five"), Some(105.0));
        assert_eq!(
            parse_number_words("three thousand two hundred"),
            Some(3200.0)
        );
        assert_eq!(parse_number_words("negative seven"), Some(-7.0));
        assert_eq!(parse_number_words("one half"), Some(0.5));
        assert_eq!(parse_number_words("third"), Some(3.0));
        assert_eq!(parse_number_words("a third"), Some(1.0 / 3.0));
        assert_eq!(parse_number_words("three quarters"), Some(0.75));
        assert_eq!(parse_number_words("a dozen"), None);
        assert_eq!(parse_number_words("2.5 million"), Some(2.5e6));
        assert_eq!(parse_number_words("seven apples"), None);
    }
}
