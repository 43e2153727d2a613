//! Relations as answers: equations between expressions with variables
//! (`y = 2x + 3`, compared up to a constant factor) and inequalities, read as
//! the interval they describe (`0 \le x < 1` is `[0, 1)`).

use std::collections::BTreeSet;

use super::expr::{close, parse_expr, Expr};
use super::value::{parse_clean, split_top, Value};

/// A lone variable name: `x`, `y_1`, `\theta`.
fn is_variable(s: &str) -> bool {
    let s = s.trim();
    let base = s.split('_').next().unwrap_or("");
    let one_letter = base.chars().count() == 1 && base.chars().all(char::is_alphabetic);
    one_letter || matches!(base, "\\theta" | "\\alpha" | "\\beta" | "\\lambda")
}

/// `y = 2x + 3`, `x^2 + y^2 = 9`: an equation between expressions with
/// variables. `x = 5` and `2 + 3 = 5` are not (their answer is the last side).
pub(crate) fn equation(s: &str) -> Option<Value> {
    let sides = split_top(s, "=");
    let [lhs, rhs] = sides.as_slice() else {
        return None;
    };
    let (l, r) = (parse_expr(lhs.trim())?, parse_expr(rhs.trim())?);
    let mut lv = BTreeSet::new();
    let mut rv = BTreeSet::new();
    l.vars(&mut lv);
    r.vars(&mut rv);
    let lone = is_variable(lhs);
    // `P(A) = 3/5`, `AB = 5`, `f(2) = 7`: a named quantity, not an equation
    // to solve (unlike `2x = 10` or `x^2 = 4`).
    let lhs_t = lhs.trim();
    let named = !lhs_t.starts_with(|c: char| c.is_ascii_digit())
        && !lhs_t.contains(['+', '-', '*', '/', '^', '\\']);
    if rv.is_empty() && (lone || named || lv.is_empty()) {
        return None;
    }
    let solved = (lone && !rv.contains(lhs.trim())).then(|| r.clone());
    Some(Value::Equation {
        diff: Expr::Sub(Box::new(l), Box::new(r)),
        solved,
    })
}

/// `0 \le x < 1`, `x > 2`, `3 \ge x`: the interval an inequality describes.
pub(crate) fn inequality(s: &str) -> Option<Value> {
    let t = s
        .replace("\\le", "\u{2264}")
        .replace("<=", "\u{2264}")
        .replace("\\lt", "<")
        .replace("\\ge", "\u{2265}")
        .replace(">=", "\u{2265}")
        .replace("\\gt", ">");
    let mut parts = vec![String::new()];
    let mut ops = Vec::new();
    let mut depth = 0i32;
    for c in t.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
        if depth == 0 && matches!(c, '<' | '>' | '\u{2264}' | '\u{2265}') {
            ops.push(c);
            parts.push(String::new());
        } else if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    let is_var = |p: &str| {
        let p = p.trim();
        p.chars().count() == 1 && p.chars().all(char::is_alphabetic)
            || matches!(p, "\\theta" | "\\alpha")
    };
    let less = |c: char| matches!(c, '<' | '\u{2264}');
    let closed = |c: char| matches!(c, '\u{2264}' | '\u{2265}');
    let bound = |p: &str| match parse_clean(p) {
        Value::Scalar { expr, .. } => Some(expr),
        _ => None,
    };
    let interval = |lo: Expr, lo_closed: bool, hi: Expr, hi_closed: bool| Value::Seq {
        open: if lo_closed { '[' } else { '(' },
        close: if hi_closed { ']' } else { ')' },
        items: vec![
            Value::Scalar {
                expr: lo,
                percent: false,
            },
            Value::Scalar {
                expr: hi,
                percent: false,
            },
        ],
    };
    let inf = || Expr::Num(f64::INFINITY);
    let neg_inf = || Expr::Neg(Box::new(Expr::Num(f64::INFINITY)));
    match (parts.as_slice(), ops.as_slice()) {
        ([a, b], [op]) if is_var(a) => Some(if less(*op) {
            interval(neg_inf(), false, bound(b)?, closed(*op))
        } else {
            interval(bound(b)?, closed(*op), inf(), false)
        }),
        ([a, b], [op]) if is_var(b) => Some(if less(*op) {
            interval(bound(a)?, closed(*op), inf(), false)
        } else {
            interval(neg_inf(), false, bound(a)?, closed(*op))
        }),
        ([lo, x, hi], [o1, o2]) if is_var(x) && less(*o1) && less(*o2) => {
            Some(interval(bound(lo)?, closed(*o1), bound(hi)?, closed(*o2)))
        }
        ([hi, x, lo], [o1, o2]) if is_var(x) && !less(*o1) && !less(*o2) => {
            Some(interval(bound(lo)?, closed(*o2), bound(hi)?, closed(*o1)))
        }
        _ => None,
    }
}

/// Whether `g = k p` for one non-zero constant `k` (the same equation).
pub(crate) fn proportional(g: &Expr, p: &Expr, rel_tol: f64) -> bool {
    let mut vars = BTreeSet::new();
    g.vars(&mut vars);
    p.vars(&mut vars);
    let mut ratio: Option<f64> = None;
    for k in 0..7 {
        let env: Vec<(String, f64)> = vars
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    v.clone(),
                    0.37 + 0.61 * k as f64 + 1.13 * i as f64 * (k as f64 - 2.5),
                )
            })
            .collect();
        let (a, b) = (g.eval(&env), p.eval(&env));
        if !a.is_finite() || !b.is_finite() {
            continue;
        }
        if b.abs() < 1e-12 || a.abs() < 1e-12 {
            if a.abs() < 1e-12 && b.abs() < 1e-12 {
                continue;
            }
            return false;
        }
        let r = a / b;
        match ratio {
            None => ratio = Some(r),
            Some(r0) if close(r0, r, rel_tol.max(1e-9)) => {}
            Some(_) => return false,
        }
    }
    ratio.is_some()
}
