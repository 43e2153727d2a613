//! Charts (SVG and PNG through plotters) and the credit views: structure,
//! colours, escaping, errors.
//!
//! `RLSD_WRITE_DOCS=1 cargo test --test plot_svg` also refreshes the examples
//! in docs/ (docs/metrics-example.svg and .png, docs/credit-example.html).

use std::path::Path;

use anyhow::Result;
use rlsd::observe::credit_view::{render_credit_ansi, render_credit_html};
use rlsd::plot::{
    line_chart, line_chart_svg, metrics_chart, metrics_chart_with, metrics_panels, metrics_series,
    ChartOptions, ImageFormat, Series, PALETTE, PNG_SIGNATURE,
};
use serde_json::json;

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// The trimmed contents of every `<text>` element (plotters puts them on
/// their own line).
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|el| {
            let body = el.split_once('>')?.1;
            Some(body.split("</text>").next()?.trim().to_string())
        })
        .collect()
}

/// plotters writes colours as upper-case hex.
fn hex((r, g, b): (u8, u8, u8)) -> String {
    format!("#{r:02X}{g:02X}{b:02X}")
}

fn three_series() -> Vec<Series> {
    let a = Series {
        name: "reward_mean".into(),
        points: (1..=10).map(|s| (s as f64, s as f64 / 10.0)).collect(),
    };
    // A gap (NaN) splits the second series into two lines.
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
    vec![a, b, c]
}

/// `<polyline>` elements stroked in `colour`.
fn polylines_in(svg: &str, colour: (u8, u8, u8)) -> usize {
    let stroke = format!("stroke=\"{}\"", hex(colour));
    svg.split("<polyline")
        .skip(1)
        .filter(|el| el.split('>').next().unwrap().contains(&stroke))
        .count()
}

#[test]
fn svg_chart_has_a_line_per_unbroken_run_a_dot_per_point_and_a_legend() -> Result<()> {
    let svg = line_chart_svg(
        &three_series(),
        &ChartOptions {
            title: "t".into(),
            ..Default::default()
        },
    )?;
    assert!(svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    // Each series: its segments plus one legend sample line.
    assert_eq!(polylines_in(&svg, PALETTE[0]), 1 + 1);
    assert_eq!(polylines_in(&svg, PALETTE[1]), 2 + 1);
    assert_eq!(polylines_in(&svg, PALETTE[2]), 1 + 1);
    assert_eq!(count(&svg, "<circle"), 10 + 9 + 1);
    let t = texts(&svg);
    for name in ["reward_mean", "single", "accuracy &lt;a&amp;b&gt;"] {
        assert!(t.iter().any(|x| x == name), "legend lacks {name}: {t:?}");
    }
    assert!(!svg.contains("<a&b>"));
    Ok(())
}

#[test]
fn png_chart_is_a_png_with_the_lines_and_the_text_drawn() -> Result<()> {
    let opts = ChartOptions {
        title: "Reward by step".into(),
        ..Default::default()
    };
    let png = line_chart(&three_series(), &opts, ImageFormat::Png)?;
    assert_eq!(&png[..8], &PNG_SIGNATURE);
    let decoder = png::Decoder::new(std::io::Cursor::new(&png));
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf)?;
    assert_eq!((info.width, info.height), (800, 450));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let px = |x: u32, y: u32| {
        let i = ((y * info.width + x) * 3) as usize;
        (buf[i], buf[i + 1], buf[i + 2])
    };
    let mut of_colour = [0usize; 3];
    let mut dark_in_title = 0;
    for y in 0..info.height {
        for x in 0..info.width {
            let p = px(x, y);
            for (k, c) in PALETTE[..3].iter().enumerate() {
                of_colour[k] += usize::from(p == *c);
            }
            // The title sits in the top band; text pixels are dark.
            if y < 40 && p.0 < 100 && p.1 < 100 && p.2 < 100 {
                dark_in_title += 1;
            }
        }
    }
    assert!(
        of_colour.iter().all(|&n| n > 20),
        "each series is drawn: {of_colour:?}"
    );
    assert!(
        dark_in_title > 50,
        "the title is rendered with the bundled font: {dark_in_title}"
    );
    Ok(())
}

#[test]
fn empty_chart_says_no_data() -> Result<()> {
    let svg = line_chart_svg(&[], &ChartOptions::default())?;
    assert!(svg.contains("no data"));
    assert_eq!(count(&svg, "<polyline"), 0);
    let png = line_chart(&[], &ChartOptions::default(), ImageFormat::Png)?;
    assert_eq!(&png[..8], &PNG_SIGNATURE);
    Ok(())
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
fn metrics_charts_draw_the_chosen_keys_in_either_format() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let jsonl = dir.path().join("metrics.jsonl");
    example_metrics(&jsonl)?;
    // A torn last line is tolerated.
    let mut text = std::fs::read_to_string(&jsonl)?;
    text.push_str("{\"step\": 61, \"rew");
    std::fs::write(&jsonl, text)?;
    let keys = ["reward_mean", "accuracy", "lambda", "timings.generate"];
    let out = dir.path().join("plots/metrics.svg");
    metrics_chart(&jsonl, &out, &keys)?;
    let svg = std::fs::read_to_string(&out)?;
    let run = dir.path().canonicalize()?;
    let run = run.file_name().unwrap().to_string_lossy();
    assert!(
        svg.contains(&format!("{run}: metrics by step")),
        "title names the run folder"
    );
    for (i, k) in keys.iter().enumerate() {
        assert!(texts(&svg).iter().any(|x| x == k), "legend has {k}");
        assert_eq!(polylines_in(&svg, PALETTE[i]), 2, "{k}: one line + legend");
    }
    assert_eq!(count(&svg, "<circle"), 4 * 60);
    let png_out = dir.path().join("plots/metrics.png");
    metrics_chart(&jsonl, &png_out, &keys)?;
    let png = std::fs::read(&png_out)?;
    assert!(png.len() > 1000 && png[..8] == PNG_SIGNATURE);

    let err = metrics_chart(&jsonl, &out, &["reward_mean", "no_such_key"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no_such_key") && err.contains("metrics.jsonl"),
        "{err}"
    );
    let err = metrics_chart(&jsonl, &dir.path().join("m.gif"), &keys)
        .unwrap_err()
        .to_string();
    assert!(err.contains("m.gif"), "{err}");

    // Panels: one chart per group stacked, all series drawn.
    let out = dir.path().join("panels.svg");
    metrics_panels(
        &jsonl,
        &out,
        &[
            &["reward_mean", "accuracy", "lambda"],
            &["timings.generate"],
        ],
    )?;
    let svg = std::fs::read_to_string(&out)?;
    assert!(svg.contains("height=\"600\""), "two panels of 300 px");
    assert_eq!(
        polylines_in(&svg, PALETTE[0]),
        2 * 2,
        "first colour in both panels"
    );
    assert_eq!(
        polylines_in(&svg, PALETTE[2]),
        2,
        "lambda in the first panel only"
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
        metrics_chart_with(&jsonl, &docs.join("metrics-example.svg"), &keys, &opts)?;
        metrics_chart_with(&jsonl, &docs.join("metrics-example.png"), &keys, &opts)?;
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
