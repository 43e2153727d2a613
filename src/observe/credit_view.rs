//! Per-token credit for a person: where did RLSD put more or less weight?
//!
//! Under RLSD every token of a response gets `Ahat_t = A * ((1 - lambda) +
//! lambda * w_clip_t)`: the verifier's advantage `A` sets the direction, the
//! teacher's clipped weight the magnitude. These renderers colour each token
//! by the ratio `Ahat_t / A`:
//!
//! - ratio > 1 (warm, orange): the token gets *more* than the sequence-level
//!   advantage: more credit in a correct response (`A > 0`), more blame in a
//!   wrong one (`A < 0`);
//! - ratio < 1 (cool, blue): less credit / less blame;
//! - ratio = 1 (white): plain GRPO credit.
//!
//! Colour intensity is `|ratio - 1|` relative to the largest deviation in
//! the response (at least 0.001, so numeric noise stays white). The HTML page
//! shows every token's numbers in a tooltip and a legend; the ANSI version
//! uses 24-bit background colours for a terminal.

use std::fmt::Write as _;

use crate::plot::xml_escape;
use crate::{Error, Result};

/// Base colour for tokens whose `|Ahat|` exceeds `|A|`.
const WARM: (f32, f32, f32) = (230.0, 85.0, 13.0);
/// Base colour for tokens whose `|Ahat|` is below `|A|`.
const COOL: (f32, f32, f32) = (49.0, 130.0, 189.0);
/// Colour of tokens whose numbers are not finite.
const INVALID: (u8, u8, u8) = (200, 200, 200);
/// Smallest deviation `|ratio - 1|` that can saturate the colour scale.
const MIN_SCALE: f32 = 1e-3;

/// One token's credit, checked and derived from the caller's slices.
struct TokenCredit<'a> {
    text: &'a str,
    ahat: f32,
    weight: f32,
    delta: f32,
    /// `Ahat / A`, `None` when `A == 0` or a value is not finite.
    ratio: Option<f32>,
}

fn collect<'a>(
    tokens: &'a [String],
    ahat: &[f32],
    weights: &[f32],
    teacher_minus_student: &[f32],
    advantage: f32,
) -> Result<(Vec<TokenCredit<'a>>, f32)> {
    let n = tokens.len();
    for (name, len) in [
        ("ahat", ahat.len()),
        ("weights", weights.len()),
        ("teacher_minus_student", teacher_minus_student.len()),
    ] {
        if len != n {
            return Err(Error::InvalidInput(format!(
                "credit rendering: {n} tokens but {len} values in `{name}`"
            )));
        }
    }
    let out: Vec<TokenCredit<'a>> = (0..n)
        .map(|i| {
            let ratio = (advantage != 0.0 && advantage.is_finite() && ahat[i].is_finite())
                .then(|| ahat[i] / advantage);
            TokenCredit {
                text: &tokens[i],
                ahat: ahat[i],
                weight: weights[i],
                delta: teacher_minus_student[i],
                ratio,
            }
        })
        .collect();
    let scale = out
        .iter()
        .filter_map(|t| t.ratio)
        .map(|r| (r - 1.0).abs())
        .fold(MIN_SCALE, f32::max);
    Ok((out, scale))
}

/// Background colour for a token: white blended toward warm or cool.
fn colour(ratio: Option<f32>, scale: f32) -> (u8, u8, u8) {
    let Some(r) = ratio else {
        return INVALID;
    };
    let dev = r - 1.0;
    let base = if dev >= 0.0 { WARM } else { COOL };
    let t = 0.85 * (dev.abs() / scale).min(1.0);
    let mix = |c: f32| (255.0 + (c - 255.0) * t).round() as u8;
    (mix(base.0), mix(base.1), mix(base.2))
}

/// What "more" and "less" mean for this response's sign of `A`.
fn meaning(advantage: f32) -> (&'static str, &'static str, &'static str) {
    if advantage > 0.0 {
        (
            "correct or better than its group (A > 0)",
            "more credit",
            "less credit",
        )
    } else if advantage < 0.0 {
        (
            "wrong or worse than its group (A < 0)",
            "more blame",
            "less blame",
        )
    } else {
        ("equal to its group (A = 0): no update", "-", "-")
    }
}

/// Show a token's whitespace and control characters visibly.
fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\u{21b5}\n"),
            '\t' => out.push('\u{21e5}'),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        out.push('\u{2205}');
    }
    out
}

/// A standalone HTML page showing each token coloured by `Ahat_t / A`, with
/// its numbers (Ahat, weight w, delta = logp_T - logp_S, ratio) in a tooltip
/// and a legend. Token text is HTML-escaped. Slices must be the same length.
pub fn render_credit_html(
    tokens: &[String],
    ahat: &[f32],
    weights: &[f32],
    teacher_minus_student: &[f32],
    advantage: f32,
) -> Result<String> {
    let (toks, scale) = collect(tokens, ahat, weights, teacher_minus_student, advantage)?;
    let (what, more, less) = meaning(advantage);
    let mut h = String::new();
    h.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <title>RLSD token credit</title>\n<style>\n\
         body{font-family:system-ui,sans-serif;margin:24px;max-width:960px;color:#222}\n\
         .resp{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:15px;line-height:1.9;\
         white-space:pre-wrap;border:1px solid #ccc;padding:12px;border-radius:6px}\n\
         .tok{padding:1px 0;border-radius:3px;cursor:default;box-shadow:inset -1px 0 rgba(0,0,0,.12)}\n\
         h3{font-size:15px;margin:18px 0 6px}.num{text-align:right;font-variant-numeric:tabular-nums}\n\
         .tok:hover{outline:2px solid #222}\n\
         .legend{display:flex;flex-wrap:wrap;gap:6px 22px;align-items:center;margin:10px 0 14px;font-size:14px}\n\
         .legend>span{white-space:nowrap}.note{color:#555;font-size:13px;flex-basis:100%}\n\
         .sw{display:inline-block;width:90px;height:14px;vertical-align:middle;border:1px solid #aaa}\n\
         table{border-collapse:collapse;font-size:14px}td{padding:2px 12px 2px 0}\n\
         </style></head><body>\n<h2>Token credit</h2>\n",
    );
    let ratios: Vec<f32> = toks.iter().filter_map(|t| t.ratio).collect();
    let (rmin, rmax) = ratios
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &r| {
            (a.min(r), b.max(r))
        });
    let _ = writeln!(
        h,
        "<table><tr><td>sequence advantage A</td><td><b>{advantage:+.4}</b> &mdash; {}</td></tr>\
         <tr><td>tokens</td><td>{}</td></tr>",
        xml_escape(what),
        toks.len()
    );
    if !ratios.is_empty() {
        let _ = writeln!(
            h,
            "<tr><td>Ahat / A</td><td>min {rmin:.4}, max {rmax:.4}</td></tr>"
        );
    }
    h.push_str("</table>\n");
    let (w0, c0) = (
        colour(Some(1.0 + scale), scale),
        colour(Some(1.0 - scale), scale),
    );
    let _ = writeln!(
        h,
        "<div class=\"legend\"><span><span class=\"sw\" style=\"background:linear-gradient(90deg,rgb({},{},{}),#fff)\"></span> \
         Ahat/A &lt; 1: {less}</span><span>white: Ahat = A (plain GRPO)</span>\
         <span><span class=\"sw\" style=\"background:linear-gradient(90deg,#fff,rgb({},{},{}))\"></span> Ahat/A &gt; 1: {more}</span>\
         <span class=\"note\">full colour = |Ahat/A &minus; 1| of {scale:.3}; grey: not finite. Hover a token for its numbers.</span></div>",
        c0.0, c0.1, c0.2, w0.0, w0.1, w0.2
    );
    h.push_str("<div class=\"resp\">");
    for (i, t) in toks.iter().enumerate() {
        let (r, g, b) = colour(t.ratio, scale);
        let ratio = t.ratio.map_or("n/a".to_string(), |r| format!("{r:.4}"));
        let tip = format!(
            "#{i} {:?}\nAhat = {:+.5}\nw = {:.5}\ndelta = logp_T - logp_S = {:+.5}\nAhat / A = {ratio}",
            t.text, t.ahat, t.weight, t.delta
        );
        let _ = write!(
            h,
            "<span class=\"tok\" style=\"background:rgb({r},{g},{b})\" title=\"{}\">{}</span>",
            xml_escape(&tip),
            xml_escape(&visible(t.text))
        );
    }
    h.push_str("</div>\n");
    top_tokens_table(&mut h, &toks);
    h.push_str("</body></html>\n");
    Ok(h)
}

/// How many tokens the "largest shifts" table lists.
const TOP_N: usize = 8;

/// A table of the tokens whose `Ahat / A` is furthest from 1, so the page
/// says where the teacher moved credit without hovering.
fn top_tokens_table(h: &mut String, toks: &[TokenCredit<'_>]) {
    let mut idx: Vec<usize> = (0..toks.len())
        .filter(|&i| toks[i].ratio.is_some_and(|r| r != 1.0))
        .collect();
    if idx.is_empty() {
        return;
    }
    let dev = |i: usize| toks[i].ratio.map_or(0.0, |r| (r - 1.0).abs());
    idx.sort_by(|&a, &b| dev(b).total_cmp(&dev(a)).then(a.cmp(&b)));
    idx.truncate(TOP_N);
    h.push_str(
        "<h3>Largest shifts from the sequence advantage</h3>\n<table><tr><th>#</th><th>token</th>\
         <th class=\"num\">Ahat</th><th class=\"num\">Ahat/A</th><th class=\"num\">w</th>\
         <th class=\"num\">delta</th></tr>\n",
    );
    for i in idx {
        let t = &toks[i];
        let _ = writeln!(
            h,
            "<tr><td>{i}</td><td><code>{}</code></td><td class=\"num\">{:+.4}</td><td class=\"num\">{:.4}</td>\
             <td class=\"num\">{:.4}</td><td class=\"num\">{:+.4}</td></tr>",
            xml_escape(&visible(t.text)),
            t.ahat,
            t.ratio.unwrap_or(f32::NAN),
            t.weight,
            t.delta
        );
    }
    h.push_str("</table>\n");
}

/// `text` without its ANSI SGR sequences (`ESC [ ... m`): what
/// [`render_credit_ansi`] prints when stdout is piped or `NO_COLOR` is set.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The same view for a terminal: 24-bit background colours, a legend line
/// and the numbers summary. Control characters in tokens are shown escaped,
/// never sent to the terminal.
pub fn render_credit_ansi(
    tokens: &[String],
    ahat: &[f32],
    weights: &[f32],
    teacher_minus_student: &[f32],
    advantage: f32,
) -> Result<String> {
    let (toks, scale) = collect(tokens, ahat, weights, teacher_minus_student, advantage)?;
    let (what, more, less) = meaning(advantage);
    let bg = |(r, g, b): (u8, u8, u8)| format!("\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m");
    let reset = "\x1b[0m";
    let mut s = String::new();
    let _ = writeln!(s, "A = {advantage:+.4} ({what}), {} tokens", toks.len());
    let _ = writeln!(
        s,
        "{} Ahat/A<1: {less} {reset}  {} Ahat=A {reset}  {} Ahat/A>1: {more} {reset}  (full colour = |Ahat/A-1| of {scale:.3})",
        bg(colour(Some(1.0 - scale), scale)),
        bg((255, 255, 255)),
        bg(colour(Some(1.0 + scale), scale)),
    );
    for t in &toks {
        // Keep line breaks as real breaks outside the coloured span.
        let shown = visible(t.text);
        for (j, part) in shown.split('\n').enumerate() {
            if j > 0 {
                s.push('\n');
            }
            if !part.is_empty() {
                let _ = write!(s, "{}{part}{reset}", bg(colour(t.ratio, scale)));
            }
        }
    }
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod strip_tests {
    use super::*;

    #[test]
    fn the_coloured_view_strips_to_its_plain_text() {
        let coloured = render_credit_ansi(
            &["a".into(), "b\n".into(), "c".into()],
            &[1.0, 2.0, 0.5],
            &[1.0, 2.0, 0.5],
            &[0.0, 0.1, -0.1],
            1.0,
        )
        .unwrap();
        assert!(coloured.contains("\x1b[48;2;"));
        let plain = strip_ansi(&coloured);
        assert!(!plain.contains('\x1b'), "{plain:?}");
        assert!(plain.contains("ab↵\nc"), "{plain:?}");
    }
}
