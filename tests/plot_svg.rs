//! SVG charts and the credit views: structure counts, escaping, errors.
//!
//! `RLSD_WRITE_DOCS=1 cargo test --test plot_svg` also refreshes the examples
//! in docs/ (docs/metrics-example.svg, docs/credit-example.html).

use std::path::Path;

use anyhow::Result;
use rlsd::inspect::{render_credit_ansi, render_credit_html};
use rlsd::plot::{
    line_chart_svg, metrics_panels_svg, metrics_series, metrics_svg, metrics_svg_with,
    ChartOptions, Series,
};
use serde_json::json;

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn chart_has_one_polyline_per_unbroken_run_and_a_dot_per_point() {
    let a = Series {
        name: "reward_mean".into(),
        points: (1..=10).map(|s| (s as f64, s as f64 / 10.0)).collect(),
    };
    // A gap (NaN) splits the second series into two polylines.
    let mut pts: Vec<(f64, f64)> = (1..=10)
        .map(|s| (s as f64, 1.0 - s as f64 / 20.0))
        .collect();
    pts[4].1 = f64::NAN;
    let b = Series {
        name: "accuracy <a&b>".into(),
        points: pts,
    };
    let c = Series {
        name: "single".into(),
        points: vec![(3.0, 0.5)],
    };
    let svg = line_chart_svg(
        &[a, b, c],
        &ChartOptions {
            title: "t".into(),
            ..Default::default()
        },
    );
    assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(count(&svg, "<polyline"), 1 + 2);
    assert_eq!(count(&svg, "<circle"), 10 + 9 + 1);
    assert_eq!(count(&svg, r#"class="legend""#), 3);
    assert!(svg.contains(r#"data-series="reward_mean" data-points="10""#));
    assert!(svg.contains(r#"data-series="accuracy &lt;a&amp;b&gt;" data-points="9""#));
    assert!(!svg.contains("<a&b>"), "names must be escaped");
    // Point coordinates stay inside the drawing.
    let first = svg
        .split(" points=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(first.split(' ').count(), 10);
    for xy in first.split(' ') {
        let (x, y) = xy.split_once(',').unwrap();
        let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
        assert!(
            (0.0..=800.0).contains(&x) && (0.0..=450.0).contains(&y),
            "{xy}"
        );
    }
}

#[test]
fn ticks_and_extremes_map_to_the_plot_edges() {
    // y from 0 to 1 exactly: the first point sits on the bottom edge, the last on the top.
    let s = Series {
        name: "y".into(),
        points: vec![(0.0, 0.0), (10.0, 1.0)],
    };
    let svg = line_chart_svg(&[s], &ChartOptions::default());
    let rect = svg.split("<rect x=\"").nth(1).unwrap();
    let nums: Vec<f64> = rect
        .split('"')
        .filter_map(|t| t.parse::<f64>().ok())
        .take(4)
        .collect();
    let (left, top, w, h) = (nums[0], nums[1], nums[2], nums[3]);
    let pts = svg
        .split(" points=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(
        pts,
        format!("{left:.2},{:.2} {:.2},{top:.2}", top + h, left + w)
    );
    for label in ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"] {
        assert!(
            svg.contains(&format!(">{label}</text>")),
            "missing y tick {label}"
        );
    }
    for label in ["0", "2", "4", "6", "8", "10"] {
        assert!(
            svg.contains(&format!(">{label}</text>")),
            "missing x tick {label}"
        );
    }
}

#[test]
fn empty_chart_says_no_data() {
    let svg = line_chart_svg(&[], &ChartOptions::default());
    assert!(svg.contains("no data"));
    assert_eq!(count(&svg, "<polyline"), 0);
}

fn example_metrics(path: &Path) -> Result<()> {
    let mut w = rlsd::metrics::MetricsWriter::create(path)?;
    for step in 1..=60u64 {
        let s = step as f64;
        // Deterministic wiggle standing in for sampling noise.
        let noise = ((s * 12.9898).sin() * 43758.5453).fract() * 0.08;
        let reward = 0.25 + 0.45 * (1.0 - (-s / 25.0).exp()) + noise;
        w.append(&json!({
            "step": step,
            "reward_mean": reward,
            "accuracy": (reward - 0.03).clamp(0.0, 1.0),
            "lambda": 0.5 * (1.0 - s / 50.0).max(0.0),
            "timings": {"generate": 1.5 + noise},
        }))?;
    }
    Ok(())
}

#[test]
fn metrics_svg_draws_the_chosen_keys() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let jsonl = dir.path().join("metrics.jsonl");
    example_metrics(&jsonl)?;
    // A torn last line is tolerated.
    let mut text = std::fs::read_to_string(&jsonl)?;
    text.push_str("{\"step\": 61, \"rew");
    std::fs::write(&jsonl, text)?;
    let out = dir.path().join("plots/metrics.svg");
    metrics_svg(
        &jsonl,
        &out,
        &["reward_mean", "accuracy", "lambda", "timings.generate"],
    )?;
    let svg = std::fs::read_to_string(&out)?;
    let run = dir.path().canonicalize()?;
    let run = run.file_name().unwrap().to_string_lossy();
    assert!(
        svg.contains(&format!("{run}: metrics by step")),
        "title names the run folder"
    );
    assert_eq!(count(&svg, "<polyline"), 4);
    assert_eq!(count(&svg, r#"data-points="60""#), 4);
    assert_eq!(count(&svg, "<circle"), 4 * 60);

    let err = metrics_svg(&jsonl, &out, &["reward_mean", "no_such_key"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no_such_key") && err.contains("metrics.jsonl"),
        "{err}"
    );

    // Panels: one chart per group, unique clip ids, all series drawn.
    let out = dir.path().join("panels.svg");
    metrics_panels_svg(
        &jsonl,
        &out,
        &[
            &["reward_mean", "accuracy", "lambda"],
            &["timings.generate"],
        ],
    )?;
    let svg = std::fs::read_to_string(&out)?;
    assert_eq!(count(&svg, "<polyline"), 4);
    assert_eq!(count(&svg, "<clipPath id=\"plot-area-0\""), 1);
    assert_eq!(count(&svg, "<clipPath id=\"plot-area-1\""), 1);
    assert!(
        svg.contains(r#"x="0" y="300""#),
        "second panel sits below the first"
    );

    // Records without the key are gaps, not zeros.
    let recs = vec![
        json!({"step": 1, "a": 1.0}),
        json!({"step": 2}),
        json!({"step": 3, "a": 3.0}),
    ];
    let s = &metrics_series(&recs, &["a"])[0];
    assert_eq!(s.points[0], (1.0, 1.0));
    assert!(s.points[1].1.is_nan());

    if std::env::var_os("RLSD_WRITE_DOCS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        let jsonl = docs.join("metrics-example.jsonl");
        example_metrics(&jsonl)?;
        let opts = ChartOptions {
            title: "Example (synthetic numbers): reward, accuracy and lambda by step".into(),
            ..Default::default()
        };
        let keys = ["reward_mean", "accuracy", "lambda"];
        metrics_svg_with(&jsonl, &docs.join("metrics-example.svg"), &keys, &opts)?;
    }
    Ok(())
}

/// The credit of a short arithmetic answer, computed with the spec's formula
/// (A = +0.8, lambda = 0.5, eps_w = 0.2).
fn example_credit(advantage: f32) -> (Vec<String>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let text = [
        "12", "+", "7", "*", "3", " =", " 12", "+", "21", " =", " 33", "\n", "<b>", "#", "###",
        " 33",
    ];
    let delta = [
        0.02, -0.01, 0.05, 0.0, 0.01, -0.02, 0.03, 0.0, 0.35, -0.05, 0.9, 0.0, -0.4, -0.1, 0.15,
        1.2,
    ];
    let (lambda, eps_w) = (0.5f32, 0.2f32);
    let w: Vec<f32> = delta
        .iter()
        .map(|d: &f32| (advantage.signum() * d).exp())
        .collect();
    let ahat = w
        .iter()
        .map(|w| advantage * ((1.0 - lambda) + lambda * w.clamp(1.0 - eps_w, 1.0 + eps_w)))
        .collect();
    (
        text.iter().map(|s| s.to_string()).collect(),
        ahat,
        w,
        delta.to_vec(),
    )
}

/// Background colour of the `i`-th token span.
fn bg_of(html: &str, i: usize) -> (u8, u8, u8) {
    let span = html
        .split("<span class=\"tok\" style=\"background:rgb(")
        .nth(i + 1)
        .unwrap();
    let nums: Vec<u8> = span
        .split(')')
        .next()
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    (nums[0], nums[1], nums[2])
}

#[test]
fn credit_html_escapes_tokens_and_colours_by_ratio() -> Result<()> {
    let (tokens, ahat, w, delta) = example_credit(0.8);
    let html = render_credit_html(&tokens, &ahat, &w, &delta, 0.8)?;
    assert_eq!(count(&html, "<span class=\"tok\""), tokens.len());
    assert!(html.contains("&lt;b&gt;"), "token text must be escaped");
    assert!(!html.contains("<b>#"), "raw token leaked into the page");
    assert!(html.contains("more credit") && html.contains("less credit"));
    // Largest delta (1.2 -> w clipped to 1.2, ratio 1.1) is the most saturated warm colour;
    // a zero delta (w = 1, ratio 1) is white.
    assert!(html.contains("Ahat / A = 1.1000"));
    let white = (255, 255, 255);
    assert_eq!(bg_of(&html, 3), white);
    let (r, g, b) = bg_of(&html, 15);
    assert!(
        r > 200 && b < 80 && g < 130,
        "saturated warm expected, got {:?}",
        (r, g, b)
    );
    // Both clipped at 1 + eps_w: the same, fully saturated colour.
    assert_eq!(bg_of(&html, 10), (r, g, b));
    // delta = -0.4 -> w clipped at 1 - eps_w: ratio 0.9, saturated cool.
    let (r, g, b) = bg_of(&html, 12);
    assert!(
        b > 150 && r < 100,
        "saturated cool expected, got {:?}",
        (r, g, b)
    );
    // A small deviation is a pale colour, between white and saturated.
    let (r, _, b) = bg_of(&html, 2);
    assert!(
        r >= 245 && b < 250 && b > 180,
        "pale warm expected, got {r} {b}"
    );
    // A wrong response talks about blame.
    let neg = render_credit_html(&tokens, &example_credit(-0.8).1, &w, &delta, -0.8)?;
    assert!(neg.contains("more blame"));
    // Mismatched lengths are an error, not a panic.
    let err = render_credit_html(&tokens, &ahat[1..], &w, &delta, 0.8)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ahat"), "{err}");

    let ansi = render_credit_ansi(&tokens, &ahat, &w, &delta, 0.8)?;
    let (r, g, b) = bg_of(&html, 15);
    assert!(ansi.contains(&format!("\x1b[48;2;{r};{g};{b}m")));
    assert!(ansi.contains("<b>"));
    // Control characters in a token never reach the terminal raw.
    let evil = vec!["\x1b[2J".to_string()];
    let ansi = render_credit_ansi(&evil, &[1.0], &[1.0], &[0.0], 1.0)?;
    assert!(!ansi.contains("\x1b[2J") && ansi.contains("\\u{1b}[2J"));

    if std::env::var_os("RLSD_WRITE_DOCS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::write(docs.join("credit-example.html"), html)?;
        let ansi = render_credit_ansi(&tokens, &ahat, &w, &delta, 0.8)?;
        std::fs::write(docs.join("credit-example.ansi.txt"), ansi)?;
    }
    Ok(())
}
