//! The exact, regex and format verifiers, the `[verifier]` config section,
//! `extract_final_answer`, and a property test that no input makes the math
//! verifier panic.

use proptest::prelude::*;
use rlsd::data::Example;
use rlsd::verify::{
    build_verifier, extract_final_answer, Extraction, FormatConfig, MathConfig, MathVerifier,
    RegexConfig, Verifier, VerifierConfig, VerifierKind,
};

fn ex(answer: &str) -> Example {
    Example {
        id: "t".into(),
        prompt: "p".into(),
        answer: answer.into(),
        privileged: answer.into(),
        context: Vec::new(),
        extra: Default::default(),
        images: Vec::new(),
    }
}

/// The math verifier with every extraction heuristic (these tests judge
/// free-form responses; strict extraction is tested in src/verify/math).
fn lenient() -> MathVerifier {
    MathVerifier::new(MathConfig {
        extraction: Extraction::Lenient,
        ..MathConfig::default()
    })
    .unwrap()
}

fn build(toml_text: &str) -> Box<dyn Verifier> {
    let cfg: VerifierConfig = toml::from_str(toml_text).expect("parse verifier config");
    build_verifier(&cfg).expect("build verifier")
}

#[test]
fn verifiers_are_send_and_sync() {
    fn check<T: Send + Sync + ?Sized>() {}
    check::<dyn Verifier>();
    check::<MathVerifier>();
}

#[test]
fn default_config_is_math_without_format() {
    let cfg: VerifierConfig = toml::from_str("").unwrap();
    assert_eq!(cfg, VerifierConfig::default());
    assert_eq!(cfg.kind, VerifierKind::Math);
    assert_eq!(cfg.math, MathConfig::default());
    assert!(cfg.format.is_none());
    let v = build_verifier(&cfg).unwrap();
    assert!(v.verify(&ex("0.5"), r"so \boxed{\frac12}").correct);
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    for (text, key) in [
        ("kindd = \"math\"", "kindd"),
        ("[math]\nrel_toll = 0.1", "rel_toll"),
        ("[format]\nwieght = 1.0", "wieght"),
        ("[command]\nprogramm = \"x\"", "programm"),
    ] {
        let err = toml::from_str::<VerifierConfig>(text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown field") && err.contains(key),
            "{text}: {err}"
        );
    }
    let err = toml::from_str::<VerifierConfig>("kind = \"magic\"").unwrap_err();
    assert!(err.to_string().contains("magic"), "{err}");
}

#[test]
fn exact_verifier_normalises_case_space_and_period() {
    let v = build("kind = \"exact\"");
    assert!(v.verify(&ex("Paris"), "The answer is paris.").correct);
    assert!(v.verify(&ex("New York"), "new   york").correct);
    assert!(!v.verify(&ex("Paris"), "The answer is Lyon.").correct);
    let strict = build("kind = \"exact\"\n[exact]\ncase_sensitive = true\nextract = false");
    assert!(strict.verify(&ex("Paris"), " Paris ").correct);
    assert!(!strict.verify(&ex("Paris"), "paris").correct);
    assert!(!strict.verify(&ex("Paris"), "The answer is Paris").correct);
}

#[test]
fn regex_verifier_modes() {
    // Placeholder: the escaped gold answer inside the pattern.
    let v = build("kind = \"regex\"\n[regex]\npattern = 'ANSWER:\\s*{answer}\\b'");
    assert!(v.verify(&ex("3.5"), "work...\nANSWER: 3.5").correct);
    assert!(
        !v.verify(&ex("3.5"), "ANSWER: 335").correct,
        "the dot is escaped"
    );
    // Capture group compared with the gold, last match wins.
    let v = build("kind = \"regex\"\n[regex]\npattern = '<ans>(?P<answer>[^<]*)</ans>'");
    let verdict = v.verify(&ex("7"), "<ans>6</ans> no wait <ans> 7 </ans>");
    assert!(verdict.correct, "{}", verdict.reason);
    assert!(!v.verify(&ex("7"), "<ans>6</ans>").correct);
    assert!(!v.verify(&ex("7"), "no tags").correct);
    // Plain match.
    let v = build("kind = \"regex\"\n[regex]\npattern = '^\\d+$'");
    assert!(v.verify(&ex("ignored"), "123").correct);
    assert!(!v.verify(&ex("ignored"), "12a").correct);
}

#[test]
fn bad_regex_patterns_are_config_errors() {
    for pattern in ["", "(unclosed", "x{answer}("] {
        let cfg = VerifierConfig {
            kind: VerifierKind::Regex,
            regex: RegexConfig {
                pattern: pattern.into(),
                ignore_case: false,
            },
            ..VerifierConfig::default()
        };
        let err = build_verifier(&cfg).err().expect("error").to_string();
        assert!(err.contains("verifier.regex.pattern"), "{pattern}: {err}");
    }
}

#[test]
fn format_reward_is_weighted_and_does_not_change_correctness() {
    let v = build(
        "kind = \"math\"\nmath.extraction = \"lenient\"\n[format]\npattern = '\\\\boxed\\{'\nweight = 0.2\naccuracy_weight = 0.8",
    );
    let boxed_right = v.verify(&ex("4"), r"\boxed{4}");
    assert!((boxed_right.reward - 1.0).abs() < 1e-6);
    assert!(boxed_right.correct);
    let plain_right = v.verify(&ex("4"), "The answer is 4.");
    assert!((plain_right.reward - 0.8).abs() < 1e-6);
    assert!(plain_right.correct);
    let boxed_wrong = v.verify(&ex("4"), r"\boxed{5}");
    assert!((boxed_wrong.reward - 0.2).abs() < 1e-6);
    assert!(!boxed_wrong.correct);
    assert!(
        boxed_wrong.reason.ends_with("format ok"),
        "{}",
        boxed_wrong.reason
    );
    let defaults = FormatConfig::default();
    assert_eq!((defaults.weight, defaults.accuracy_weight), (0.1, 1.0));
    let bad = VerifierConfig {
        format: Some(FormatConfig {
            weight: f32::NAN,
            ..FormatConfig::default()
        }),
        ..VerifierConfig::default()
    };
    let err = build_verifier(&bad).err().expect("error").to_string();
    assert!(err.contains("verifier.format.weight"), "{err}");
}

#[test]
fn extract_final_answer_for_negative_teacher_context() {
    assert_eq!(
        extract_final_answer(r"... so \boxed{x = 3}."),
        Some("x = 3".into())
    );
    assert_eq!(extract_final_answer("3 + 4 = 7\n#### 7"), Some("7".into()));
    assert_eq!(
        extract_final_answer("The answer is 12 apples."),
        Some("12 apples".into())
    );
    assert_eq!(
        extract_final_answer("We end with 5, then add 6 to get 11."),
        Some("11".into())
    );
    assert_eq!(extract_final_answer(""), None);
}

#[test]
fn math_verifier_reason_says_what_it_compared() {
    let v = lenient();
    let verdict = v.judge("7", r"\boxed{8}");
    assert_eq!(verdict.reason, "boxed: `8` != gold `7`");
    let verdict = v.judge("7", "#### 7");
    assert_eq!(verdict.reason, "####: `7` equals gold");
    assert_eq!(v.judge("7", "").reason, "no final answer found");
}

fn latexish() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "\\boxed{",
        "\\frac",
        "{",
        "}",
        "(",
        ")",
        "[",
        "]",
        "\\{",
        "\\}",
        "$",
        "\\sqrt",
        "^",
        "_",
        "-",
        "\u{2212}",
        ",",
        ".",
        " ",
        "1",
        "23",
        "0.5",
        "x",
        "\\pi",
        "\\infty",
        "\\in",
        "\\cup",
        "%",
        "=",
        "\\le",
        "<",
        "\\text{",
        "or",
        "and",
        "five",
        "The answer is",
        "####",
        "\n",
        "é",
        "\u{221a}",
        "\u{2009}",
        "\\overline{",
        "\\binom",
        "\\log_",
        "!",
        "\\pm",
        "(C)",
        "\\left(",
        "\\right)",
        "\\begin{pmatrix}",
        "\\\\",
        "&",
        "1e",
        "9999999999999999999999",
    ]);
    prop::collection::vec(pieces, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn math_verifier_never_panics(gold in latexish(), response in latexish()) {
        let v = lenient();
        let verdict = v.judge(&gold, &response);
        prop_assert!(verdict.reward == 0.0 || verdict.reward == 1.0);
        let _ = extract_final_answer(&response);
    }

    #[test]
    fn math_verifier_never_panics_on_any_unicode(gold in "\\PC{0,40}", response in "\\PC{0,80}") {
        let v = lenient();
        let _ = v.judge(&gold, &response);
    }

    #[test]
    fn an_answer_equals_itself(n in -1_000_000i64..1_000_000, d in 1i64..1000) {
        let v = lenient();
        let frac = format!("\\frac{{{n}}}{{{d}}}");
        let verdict = v.judge(&frac, &format!("The answer is ${frac}$."));
        prop_assert!(verdict.correct, "{}", verdict.reason);
        let dec = n as f64 / d as f64;
        let verdict = v.judge(&frac, &format!("\\boxed{{{dec}}}"));
        prop_assert!(verdict.correct, "{frac} vs {dec}: {}", verdict.reason);
        let verdict = v.judge(&frac, &format!("\\boxed{{{}}}", dec + 1.0));
        prop_assert!(!verdict.correct, "{frac} vs {}: {}", dec + 1.0, verdict.reason);
    }
}

#[test]
fn huge_or_deeply_nested_answers_are_handled() {
    let v = lenient();
    let deep = format!("\\boxed{{{}1{}}}", "(".repeat(5000), ")".repeat(5000));
    assert!(!v.judge("1", &deep).correct);
    let long = "1+".repeat(20_000) + "1";
    assert!(!v.judge("5", &long).correct);
    let shallow = format!("\\boxed{{{}1{}}}", "(".repeat(10), ")".repeat(10));
    assert!(v.judge("1", &shallow).correct);
}

#[test]
fn choice_answers_use_the_options_in_the_prompt() {
    let v = build("math.extraction = \"lenient\"");
    let mc = |answer: &str| Example {
        id: "mc".into(),
        prompt: "What is 6 * 3?\n(A) 12 (B) 15 (C) 18 (D) 21".into(),
        answer: answer.into(),
        privileged: answer.into(),
        context: Vec::new(),
        extra: Default::default(),
        images: Vec::new(),
    };
    // Gold letter, response gives the content.
    assert!(v.verify(&mc("C"), "6 * 3 = 18").correct);
    assert!(!v.verify(&mc("C"), "6 * 3 = 15").correct);
    assert!(!v.verify(&mc("C"), "6 * 3 = 19").correct);
    // Gold content, response gives the letter.
    assert!(v.verify(&mc("18"), "The answer is (C).").correct);
    assert!(!v.verify(&mc("18"), "The answer is (B).").correct);
    // A response that lists every option without choosing earns nothing.
    assert!(
        !v.verify(&mc("C"), "It could be (A), (B), (C) or (D).")
            .correct
    );
    // Without options in the prompt a bare letter stays a letter.
    assert!(!v.verify(&ex("18"), "C").correct);
}
