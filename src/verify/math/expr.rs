//! Scalar expressions in "LaTeX-lite": a tokenizer, a recursive-descent
//! parser and a numeric evaluator.
//!
//! Two answers are equal when they evaluate to the same number; answers with
//! free variables (`2x+1`, `\frac{a}{2}`) are evaluated at a few fixed points
//! and must agree at all of them. This is not a computer algebra system, but it
//! decides every equivalence that a grader of final answers meets in practice
//! (`\frac12` = `0.5`, `2\sqrt{2}` = `\sqrt{8}`, `(x-1)(x+1)` = `x^2-1`).

use std::collections::BTreeSet;

/// A parsed scalar expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    /// A literal number.
    Num(f64),
    /// A free variable (`x`, `\theta`).
    Var(String),
    /// Negation.
    Neg(Box<Expr>),
    /// Sum.
    Add(Box<Expr>, Box<Expr>),
    /// Difference.
    Sub(Box<Expr>, Box<Expr>),
    /// Product.
    Mul(Box<Expr>, Box<Expr>),
    /// Quotient.
    Div(Box<Expr>, Box<Expr>),
    /// Power.
    Pow(Box<Expr>, Box<Expr>),
    /// A named function of one argument (`sqrt`, `sin`, `ln`...).
    Func(&'static str, Box<Expr>),
    /// n-th root: `\sqrt[n]{x}`.
    Root(Box<Expr>, Box<Expr>),
    /// Factorial.
    Fact(Box<Expr>),
    /// Binomial coefficient `\binom{n}{k}`.
    Binom(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Var(String),
    Plus,
    Minus,
    Star,
    Slash,
    Caret,
    Under,
    Bang,
    Open(char),
    Close(char),
    Frac,
    Binom,
    Sqrt,
    Const(f64),
    Func(&'static str),
}

/// Functions of one argument the parser knows, by LaTeX command name.
const FUNCS: &[&str] = &[
    "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "ln", "log", "exp",
];

/// Two-letter words that are units, never a product of two variables.
const UNITS: &[&str] = &[
    "cm", "mm", "km", "kg", "mg", "ft", "in", "yd", "mi", "lb", "oz", "ml", "hr", "am", "pm", "or",
    "of", "is", "to", "by", "on", "at", "it", "we", "so", "no", "an", "as", "be", "if",
];

/// Greek letters accepted as variable names.
const GREEK: &[&str] = &[
    "alpha", "beta", "gamma", "delta", "theta", "lambda", "mu", "phi", "omega", "sigma", "tau",
];

fn tokenize(s: &str) -> Option<Vec<Tok>> {
    let chars: Vec<char> = s.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    // After `\frac` / `\sqrt` without a brace, LaTeX takes single characters:
    // `\frac12` is 1/2 and `\sqrt23` is sqrt(2)*3.
    let mut single_digit = 0usize;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            if single_digit > 0 {
                i += 1;
                single_digit -= 1;
            } else {
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                // Scientific notation `1.5e3`, `2E-4` (not `2e` times something).
                if matches!(chars.get(i), Some('e' | 'E')) {
                    let mut j = i + 1;
                    if matches!(chars.get(j), Some('+' | '-')) {
                        j += 1;
                    }
                    let digits = j;
                    while j < chars.len() && chars[j].is_ascii_digit() {
                        j += 1;
                    }
                    if j > digits && !chars.get(j).is_some_and(|c| c.is_alphabetic()) {
                        i = j;
                    }
                }
            }
            let text: String = chars[start..i].iter().collect();
            toks.push(Tok::Num(text.parse().ok()?));
            continue;
        }
        if single_digit > 0 && c != '{' {
            single_digit -= 1;
        } else if c == '{' {
            single_digit = 0;
        }
        match c {
            '+' => toks.push(Tok::Plus),
            '-' => toks.push(Tok::Minus),
            '*' => toks.push(Tok::Star),
            '/' => toks.push(Tok::Slash),
            '^' => toks.push(Tok::Caret),
            '_' => toks.push(Tok::Under),
            '!' => toks.push(Tok::Bang),
            '(' | '[' | '{' => toks.push(Tok::Open(c)),
            ')' | ']' | '}' => toks.push(Tok::Close(c)),
            '\\' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && chars[j].is_ascii_alphabetic() {
                    j += 1;
                }
                let name: String = chars[start..j].iter().collect();
                i = j;
                match name.as_str() {
                    "frac" | "dfrac" | "tfrac" | "cfrac" => {
                        toks.push(Tok::Frac);
                        single_digit = 2;
                    }
                    "binom" | "dbinom" | "tbinom" | "choose" => {
                        toks.push(Tok::Binom);
                        single_digit = 2;
                    }
                    "sqrt" => {
                        toks.push(Tok::Sqrt);
                        single_digit = 1;
                    }
                    "pi" => toks.push(Tok::Const(std::f64::consts::PI)),
                    "infty" | "infin" => toks.push(Tok::Const(f64::INFINITY)),
                    "cdot" | "times" => toks.push(Tok::Star),
                    "div" => toks.push(Tok::Slash),
                    _ => {
                        if let Some(f) = FUNCS.iter().find(|f| **f == name) {
                            toks.push(Tok::Func(f));
                        } else if GREEK.contains(&name.as_str()) {
                            toks.push(Tok::Var(name));
                        } else {
                            return None;
                        }
                    }
                }
                continue;
            }
            _ if c.is_alphabetic() => {
                // A run of letters: a function name, `pi`, or one-letter
                // variables. Longer words are prose or units, not math.
                let mut j = i;
                while j < chars.len() && chars[j].is_alphabetic() {
                    j += 1;
                }
                let run: String = chars[i..j].iter().collect();
                if let Some(f) = FUNCS
                    .iter()
                    .filter(|f| run.starts_with(**f))
                    .max_by_key(|f| f.len())
                {
                    toks.push(Tok::Func(f));
                    i += f.len();
                    continue;
                }
                if run.starts_with("sqrt") {
                    toks.push(Tok::Sqrt);
                    single_digit = 1;
                    i += 4;
                    continue;
                }
                if run == "pi" {
                    toks.push(Tok::Const(std::f64::consts::PI));
                    i = j;
                    continue;
                }
                if run.chars().count() > 2 || UNITS.contains(&run.to_lowercase().as_str()) {
                    return None;
                }
                for v in run.chars() {
                    toks.push(Tok::Var(v.to_string()));
                }
                i = j;
                continue;
            }
            _ => return None,
        }
        i += 1;
    }
    Some(toks)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expr(&mut self) -> Option<Expr> {
        let mut lhs = self.term()?;
        loop {
            match self.peek() {
                Some(Tok::Plus) => {
                    self.pos += 1;
                    lhs = Expr::Add(Box::new(lhs), Box::new(self.term()?));
                }
                Some(Tok::Minus) => {
                    self.pos += 1;
                    lhs = Expr::Sub(Box::new(lhs), Box::new(self.term()?));
                }
                _ => return Some(lhs),
            }
        }
    }

    fn term(&mut self) -> Option<Expr> {
        let mut lhs = self.unary()?;
        loop {
            match self.peek() {
                Some(Tok::Star) => {
                    self.pos += 1;
                    lhs = Expr::Mul(Box::new(lhs), Box::new(self.unary()?));
                }
                Some(Tok::Slash) => {
                    self.pos += 1;
                    lhs = Expr::Div(Box::new(lhs), Box::new(self.unary()?));
                }
                Some(
                    Tok::Num(_)
                    | Tok::Var(_)
                    | Tok::Open(_)
                    | Tok::Frac
                    | Tok::Binom
                    | Tok::Sqrt
                    | Tok::Const(_)
                    | Tok::Func(_),
                ) => {
                    let mixed = matches!(lhs, Expr::Num(n) if n.fract() == 0.0)
                        && self.peek() == Some(&Tok::Frac);
                    let rhs = self.power()?;
                    // `2\frac{1}{3}` is the mixed number 2 1/3, not 2/3.
                    lhs = if mixed && is_literal_fraction(&rhs) {
                        Expr::Add(Box::new(lhs), Box::new(rhs))
                    } else {
                        Expr::Mul(Box::new(lhs), Box::new(rhs))
                    };
                }
                _ => return Some(lhs),
            }
        }
    }

    fn unary(&mut self) -> Option<Expr> {
        match self.peek() {
            Some(Tok::Minus) => {
                self.pos += 1;
                Some(Expr::Neg(Box::new(self.unary()?)))
            }
            Some(Tok::Plus) => {
                self.pos += 1;
                self.unary()
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Option<Expr> {
        let base = self.postfix()?;
        if self.peek() == Some(&Tok::Caret) {
            self.pos += 1;
            let exp = match self.peek() {
                Some(Tok::Minus) => {
                    self.pos += 1;
                    Expr::Neg(Box::new(self.power()?))
                }
                _ => self.power()?,
            };
            return Some(Expr::Pow(Box::new(base), Box::new(exp)));
        }
        Some(base)
    }

    fn postfix(&mut self) -> Option<Expr> {
        let mut e = self.primary()?;
        while self.peek() == Some(&Tok::Bang) {
            self.pos += 1;
            e = Expr::Fact(Box::new(e));
        }
        Some(e)
    }

    /// A braced group, or a single atom (`\frac12`, `\sqrt2`, `\sqrt x`).
    fn arg(&mut self) -> Option<Expr> {
        match self.peek()? {
            Tok::Open('{') => self.primary(),
            Tok::Num(_) | Tok::Var(_) | Tok::Const(_) => self.primary(),
            _ => None,
        }
    }

    fn primary(&mut self) -> Option<Expr> {
        match self.next()? {
            Tok::Num(n) => Some(Expr::Num(n)),
            Tok::Const(c) => Some(Expr::Num(c)),
            Tok::Var(v) => Some(Expr::Var(v)),
            Tok::Open(o) => {
                let e = self.expr()?;
                let want = match o {
                    '(' => ')',
                    '[' => ']',
                    _ => '}',
                };
                match self.next()? {
                    Tok::Close(c) if c == want => Some(e),
                    _ => None,
                }
            }
            Tok::Frac => {
                let num = self.arg()?;
                let den = self.arg()?;
                Some(Expr::Div(Box::new(num), Box::new(den)))
            }
            Tok::Binom => {
                let n = self.arg()?;
                let k = self.arg()?;
                Some(Expr::Binom(Box::new(n), Box::new(k)))
            }
            Tok::Sqrt => {
                if self.peek() == Some(&Tok::Open('[')) {
                    self.pos += 1;
                    let n = self.expr()?;
                    if self.next()? != Tok::Close(']') {
                        return None;
                    }
                    let x = self.arg()?;
                    return Some(Expr::Root(Box::new(n), Box::new(x)));
                }
                Some(Expr::Func("sqrt", Box::new(self.arg()?)))
            }
            Tok::Func(f) => {
                // `\log_2 8`, `\log_{10} x`: a base.
                let base = if f == "log" && self.peek() == Some(&Tok::Under) {
                    self.pos += 1;
                    Some(match self.arg()? {
                        Expr::Var(v) if v == "e" => Expr::Num(std::f64::consts::E),
                        b => b,
                    })
                } else {
                    None
                };
                // `\sin^2 x` is `(\sin x)^2`.
                let power = if self.peek() == Some(&Tok::Caret) {
                    self.pos += 1;
                    Some(self.arg()?)
                } else {
                    None
                };
                let a = match self.peek()? {
                    Tok::Open(_) => self.primary()?,
                    _ => self.power()?,
                };
                let f = match base {
                    // log_b(x) = ln x / ln b
                    Some(b) => Expr::Div(
                        Box::new(Expr::Func("ln", Box::new(a))),
                        Box::new(Expr::Func("ln", Box::new(b))),
                    ),
                    None => Expr::Func(f, Box::new(a)),
                };
                Some(match power {
                    Some(p) => Expr::Pow(Box::new(f), Box::new(p)),
                    None => f,
                })
            }
            _ => None,
        }
    }
}

fn is_literal_fraction(e: &Expr) -> bool {
    matches!(e, Expr::Div(a, b) if matches!(**a, Expr::Num(_)) && matches!(**b, Expr::Num(_)))
}

/// Parse a whole string as one scalar expression; `None` when it is not one.
pub(crate) fn parse_expr(s: &str) -> Option<Expr> {
    let toks = tokenize(s)?;
    if toks.is_empty() {
        return None;
    }
    let mut p = Parser { toks, pos: 0 };
    let e = p.expr()?;
    (p.pos == p.toks.len()).then_some(e)
}

impl Expr {
    /// Free variables, sorted.
    pub(crate) fn vars(&self, out: &mut BTreeSet<String>) {
        match self {
            Expr::Num(_) => {}
            Expr::Var(v) => {
                out.insert(v.clone());
            }
            Expr::Neg(a) | Expr::Func(_, a) | Expr::Fact(a) => a.vars(out),
            Expr::Add(a, b)
            | Expr::Sub(a, b)
            | Expr::Mul(a, b)
            | Expr::Div(a, b)
            | Expr::Pow(a, b)
            | Expr::Binom(a, b)
            | Expr::Root(a, b) => {
                a.vars(out);
                b.vars(out);
            }
        }
    }

    /// Numeric value with `env` giving each variable's value (missing = NaN).
    pub(crate) fn eval(&self, env: &[(String, f64)]) -> f64 {
        match self {
            Expr::Num(n) => *n,
            Expr::Var(v) => env
                .iter()
                .find(|(k, _)| k == v)
                .map_or(f64::NAN, |(_, x)| *x),
            Expr::Neg(a) => -a.eval(env),
            Expr::Add(a, b) => a.eval(env) + b.eval(env),
            Expr::Sub(a, b) => a.eval(env) - b.eval(env),
            Expr::Mul(a, b) => a.eval(env) * b.eval(env),
            Expr::Div(a, b) => a.eval(env) / b.eval(env),
            Expr::Pow(a, b) => a.eval(env).powf(b.eval(env)),
            Expr::Root(n, x) => x.eval(env).powf(1.0 / n.eval(env)),
            Expr::Binom(n, k) => {
                let (n, k) = (n.eval(env), k.eval(env));
                if n >= 0.0 && k >= 0.0 && k <= n && n.fract() == 0.0 && k.fract() == 0.0 {
                    (0..k as u64).fold(1.0, |acc, i| acc * (n - i as f64) / (i as f64 + 1.0))
                } else {
                    f64::NAN
                }
            }
            Expr::Fact(a) => {
                let n = a.eval(env);
                if n >= 0.0 && n.fract() == 0.0 && n <= 170.0 {
                    (1..=n as u64).map(|k| k as f64).product()
                } else {
                    f64::NAN
                }
            }
            Expr::Func(f, a) => {
                let x = a.eval(env);
                match *f {
                    "sqrt" => x.sqrt(),
                    "sin" => x.sin(),
                    "cos" => x.cos(),
                    "tan" => x.tan(),
                    "cot" => 1.0 / x.tan(),
                    "sec" => 1.0 / x.cos(),
                    "csc" => 1.0 / x.sin(),
                    "arcsin" => x.asin(),
                    "arccos" => x.acos(),
                    "arctan" => x.atan(),
                    "ln" => x.ln(),
                    "log" => x.log10(),
                    "exp" => x.exp(),
                    _ => f64::NAN,
                }
            }
        }
    }
}

/// Two numbers equal within a relative tolerance (absolute near zero).
pub(crate) fn close(a: f64, b: f64, rel_tol: f64) -> bool {
    if a.is_infinite() || b.is_infinite() {
        return a == b;
    }
    if a.is_nan() || b.is_nan() {
        return false;
    }
    let diff = (a - b).abs();
    diff <= rel_tol * a.abs().max(b.abs()) || diff <= 1e-12
}

/// Fixed evaluation points for expressions with free variables.
const PROBES: &[f64] = &[0.6180339, 1.3247179, 2.2360679, -0.7320508, 3.3166248];

/// Whether two expressions are equal as functions of their free variables.
pub(crate) fn expr_equal(a: &Expr, b: &Expr, rel_tol: f64) -> bool {
    let mut vars = BTreeSet::new();
    a.vars(&mut vars);
    b.vars(&mut vars);
    if vars.is_empty() {
        return close(a.eval(&[]), b.eval(&[]), rel_tol);
    }
    let mut agreed = 0;
    for (k, _) in PROBES.iter().enumerate() {
        let env: Vec<(String, f64)> = vars
            .iter()
            .enumerate()
            .map(|(i, v)| (v.clone(), PROBES[(k + i) % PROBES.len()] + i as f64 * 0.1))
            .collect();
        let (x, y) = (a.eval(&env), b.eval(&env));
        if x.is_nan() && y.is_nan() {
            continue;
        }
        if !close(x, y, rel_tol) {
            return false;
        }
        agreed += 1;
    }
    agreed > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(s: &str) -> f64 {
        parse_expr(s)
            .unwrap_or_else(|| panic!("parse {s}"))
            .eval(&[])
    }

    #[test]
    fn latex_fractions_roots_and_constants() {
        assert_eq!(val(r"\frac{1}{2}"), 0.5);
        assert_eq!(val(r"\frac12"), 0.5);
        assert_eq!(val(r"\dfrac{3}{4}"), 0.75);
        assert_eq!(val(r"2\frac{1}{2}"), 2.5); // mixed number
        assert!((val(r"2\sqrt{2}") - 8f64.sqrt()).abs() < 1e-12);
        assert!((val(r"\sqrt[3]{27}") - 3.0).abs() < 1e-12);
        assert!((val(r"\frac{\pi}{2}") - std::f64::consts::FRAC_PI_2).abs() < 1e-12);
        assert_eq!(val("2^-1"), 0.5);
        assert_eq!(val("-2^2"), -4.0);
        assert_eq!(val("5!"), 120.0);
        assert_eq!(val(r"1.5\times10^{3}"), 1500.0);
        assert_eq!(val("1.5e3"), 1500.0);
        assert_eq!(val(r"\binom{5}{2}"), 10.0);
        assert!((val(r"\sin^2 1 + \cos^2 1") - 1.0).abs() < 1e-12);
    }

    #[test]
    fn symbolic_equality_by_probing() {
        let a = parse_expr("(x-1)(x+1)").unwrap();
        let b = parse_expr("x^2-1").unwrap();
        let c = parse_expr("x^2+1").unwrap();
        assert!(expr_equal(&a, &b, 1e-6));
        assert!(!expr_equal(&a, &c, 1e-6));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_expr("3 +").is_none());
        assert!(parse_expr(r"\foo{2}").is_none());
        assert!(parse_expr("(2").is_none());
    }
}
