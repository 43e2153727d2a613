//! What a person reading the charts and the report needs (issue 24, item
//! 10), checked in the SVG and HTML the code writes: whole-number step ticks,
//! a y label on every single-run chart, `accuracy` visible when it equals
//! `reward_mean`, the token weight on its own panel, a legend that covers no
//! point, and every response of a logged group in `report.html`.

#[path = "common/timed.rs"]
mod timed;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use rlsd::observe::charts::{plot_run, run_panels};
use rlsd::plot::{line_chart_svg, ChartOptions, ImageFormat, Series, LEGEND_BORDER, PALETTE};
use serde_json::json;

/// A `<text>` element of an SVG: its position and its trimmed content.
#[derive(Debug)]
struct SvgText {
    x: f64,
    y: f64,
    text: String,
}

/// The value of attribute `name` in an element's opening tag.
fn attr(tag: &str, name: &str) -> Option<String> {
    // The first attribute follows the element name's space, which `tags`
    // cuts off: put one back.
    let tag = format!(" {tag}");
    let key = format!(" {name}=\"");
    let from = tag.find(&key)? + key.len();
    Some(tag[from..].split('"').next()?.to_string())
}

fn num_attr(tag: &str, name: &str) -> f64 {
    attr(tag, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Every `<text>` element (plotters writes one per label).
fn texts(svg: &str) -> Vec<SvgText> {
    svg.split("<text")
        .skip(1)
        .filter_map(|el| {
            let (tag, body) = el.split_once('>')?;
            Some(SvgText {
                x: num_attr(tag, "x"),
                y: num_attr(tag, "y"),
                text: body.split("</text>").next()?.trim().to_string(),
            })
        })
        .collect()
}

/// The opening tags of every `<name` element.
fn tags<'a>(svg: &'a str, name: &str) -> Vec<&'a str> {
    svg.split(&format!("<{name} "))
        .skip(1)
        .filter_map(|el| el.split('>').next())
        .collect()
}

/// plotters writes colours as upper-case hex.
fn hex((r, g, b): (u8, u8, u8)) -> String {
    format!("#{r:02X}{g:02X}{b:02X}")
}

/// The x tick labels: numeric texts on the lowest row of numeric texts.
fn x_tick_labels(svg: &str) -> Vec<String> {
    let numeric: Vec<SvgText> = texts(svg)
        .into_iter()
        .filter(|t| t.text.parse::<f64>().is_ok())
        .collect();
    let bottom = numeric.iter().map(|t| t.y).fold(f64::MIN, f64::max);
    numeric
        .into_iter()
        .filter(|t| (t.y - bottom).abs() < 0.5)
        .map(|t| t.text)
        .collect()
}

fn series(name: &str, pts: impl IntoIterator<Item = (f64, f64)>) -> Series {
    Series {
        name: name.into(),
        points: pts.into_iter().collect(),
    }
}

#[test]
fn step_ticks_are_whole_numbers() -> Result<()> {
    // Three steps: plotters alone ticks 1.0, 1.2, 1.4, ...
    let few = series("accuracy", [(1.0, 0.25), (2.0, 0.5), (3.0, 0.375)]);
    let svg = line_chart_svg(&[few], &ChartOptions::default())?;
    assert_eq!(x_tick_labels(&svg), vec!["1", "2", "3"]);
    // Sixty steps: whole numbers too, and more than two of them.
    let many = series("reward_mean", (1..=60).map(|s| (s as f64, s as f64 / 70.0)));
    let svg = line_chart_svg(&[many], &ChartOptions::default())?;
    let labels = x_tick_labels(&svg);
    assert!(labels.len() >= 3, "{labels:?}");
    for l in &labels {
        assert!(l.parse::<u64>().is_ok(), "tick `{l}` is not a whole step");
    }
    // A non-integer axis keeps its decimals.
    let frac = series("x", [(0.0, 1.0), (0.5, 2.0), (1.0, 3.0)]);
    let labels = x_tick_labels(&line_chart_svg(&[frac], &ChartOptions::default())?);
    assert!(labels.iter().any(|l| l.contains('.')), "{labels:?}");
    Ok(())
}

#[test]
fn a_series_equal_to_an_earlier_one_stays_visible() -> Result<()> {
    // A 0/1 verifier: reward_mean == accuracy at every step.
    let ys = [0.25, 0.5, 0.5, 0.75, 0.625];
    let pts = || ys.iter().enumerate().map(|(i, &y)| (i as f64 + 1.0, y));
    let svg = line_chart_svg(
        &[series("reward_mean", pts()), series("accuracy", pts())],
        &ChartOptions::default(),
    )?;
    let stroked = |c: (u8, u8, u8)| {
        tags(&svg, "polyline")
            .into_iter()
            .filter(|t| attr(t, "stroke").as_deref() == Some(hex(c).as_str()))
            .count()
    };
    // reward_mean: one solid line and its legend sample; accuracy: dashes
    // (many short lines) on top of it.
    assert_eq!(stroked(PALETTE[0]), 2);
    assert!(stroked(PALETTE[1]) > 10, "accuracy is dashed");
    // Hollow rings around reward_mean's dots, one per point.
    let rings = tags(&svg, "circle")
        .into_iter()
        .filter(|t| attr(t, "stroke").as_deref() == Some(hex(PALETTE[1]).as_str()))
        .count();
    assert_eq!(rings, ys.len());
    assert!(
        texts(&svg)
            .iter()
            .any(|t| t.text == "accuracy (= reward_mean)"),
        "the legend says the two are equal"
    );
    Ok(())
}

#[test]
fn the_legend_covers_no_point() -> Result<()> {
    // Points in every corner, the upper left (where legends sit) included.
    let a = series(
        "reward_mean",
        [(1.0, 1.0), (2.0, 0.0), (9.0, 1.0), (10.0, 0.0)],
    );
    let b = series("a rather long series name", [(1.0, 0.9), (10.0, 0.1)]);
    let svg = line_chart_svg(&[a, b], &ChartOptions::default())?;
    let boxes: Vec<(f64, f64, f64, f64)> = tags(&svg, "rect")
        .into_iter()
        .filter(|t| attr(t, "stroke").as_deref() == Some(hex(LEGEND_BORDER).as_str()))
        .map(|t| {
            let (x, y) = (num_attr(t, "x"), num_attr(t, "y"));
            (x, y, x + num_attr(t, "width"), y + num_attr(t, "height"))
        })
        .collect();
    assert_eq!(boxes.len(), 1, "one legend box");
    let (x0, y0, x1, y1) = boxes[0];
    let dots: Vec<(f64, f64)> = tags(&svg, "circle")
        .into_iter()
        .map(|t| (num_attr(t, "cx"), num_attr(t, "cy")))
        .collect();
    assert_eq!(dots.len(), 6);
    for (cx, cy) in dots {
        let inside = cx >= x0 - 2.0 && cx <= x1 + 2.0 && cy >= y0 - 2.0 && cy <= y1 + 2.0;
        assert!(
            !inside,
            "point ({cx}, {cy}) under the legend {:?}",
            boxes[0]
        );
        assert!(
            cx < x0,
            "the legend sits right of the plot: ({cx}, {cy}) vs {:?}",
            boxes[0]
        );
    }
    // The labels are inside the box and within the image.
    for name in ["reward_mean", "a rather long series name"] {
        let t = texts(&svg).into_iter().find(|t| t.text == name).unwrap();
        assert!(t.x > x0 && t.x < x1 && t.y > y0 && t.y < y1, "{t:?}");
    }
    assert!(x1 <= 800.0);
    Ok(())
}

/// A run folder's metrics: a 0/1 verifier (reward == accuracy), RLSD with a
/// token weight in the thousands.
fn write_run(dir: &Path) -> Result<()> {
    let mut w = rlsd::metrics::MetricsWriter::create(&dir.join("metrics.jsonl"))?;
    for step in 1..=4u64 {
        let acc = [0.25, 0.5, 0.375, 0.625][step as usize - 1];
        w.append(&json!({
            "step": step, "algo": "rlsd", "reward_mean": acc, "accuracy": acc,
            "lambda": 0.5 - 0.01 * step as f64, "delta_abs_mean": 0.3, "ahat_abs_mean": 0.7,
            "weight_mean": 2500.0 * step as f64, "weight_clip_frac": 0.05,
            "loss": 0.01, "grad_norm": 40.0, "response_len_mean": 20.0,
            "timings": {"generate_s": 1.0, "train_s": 0.5},
        }))?;
    }
    Ok(())
}

#[test]
fn single_run_charts_have_y_labels_and_weight_mean_has_its_own_panel() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    write_run(tmp.path())?;
    let files = plot_run(tmp.path(), ImageFormat::Svg)?;
    let reward = std::fs::read_to_string(&files[0])?;
    let panels = std::fs::read_to_string(&files[1])?;
    let has = |svg: &str, s: &str| texts(svg).iter().any(|t| t.text == s);
    assert!(
        has(&reward, "reward, accuracy, lambda"),
        "reward chart y label"
    );
    for label in [
        "reward, accuracy",
        "lambda, |delta|, |Ahat|",
        "w_t",
        "loss",
        "norm",
        "seconds",
    ] {
        assert!(has(&panels, label), "panel y label `{label}`");
    }
    assert_eq!(x_tick_labels(&reward), vec!["1", "2", "3", "4"]);

    let recs = rlsd::metrics::read_metrics(&tmp.path().join("metrics.jsonl"))?;
    let p = run_panels(&recs);
    let with = |key: &str| {
        p.iter()
            .filter(|(_, s)| s.iter().any(|s| s.name == key))
            .map(|(o, s)| (o.title.clone(), s.len()))
            .collect::<Vec<_>>()
    };
    let w = with("weight_mean");
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].1, 1, "weight_mean alone on its panel: {w:?}");
    let lambda = with("lambda");
    assert_eq!(lambda.len(), 1);
    assert_ne!(lambda[0].0, w[0].0, "lambda and weight_mean share a panel");
    assert_eq!(with("grad_norm")[0].1, 1, "grad_norm alone on its panel");
    Ok(())
}

/// `rlsd train` on the built-in model, one prompt of 16 responses: the
/// report shows all 16 (observe.completions_per_step = 8 is rounded up to
/// the whole group), and the run's charts carry their y labels.
#[test]
fn report_of_a_real_run_shows_the_whole_group() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let sets = [
        "runtime.steps=1".to_string(),
        "rollout.batch_prompts=1".into(),
        "rollout.group_size=16".into(),
        "rollout.max_new_tokens=8".into(),
        "observe.completions_per_step=8".into(),
        "observe.png=false".into(),
        "validation.every=0".into(),
        "runtime.sampler_device=\"cpu\"".into(),
        "runtime.teacher_device=\"cpu\"".into(),
        "runtime.optimizer_device=\"cpu\"".into(),
        format!("runtime.out_dir=\"{}\"", out.display()),
    ];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlsd"));
    cmd.arg("train").env("NO_COLOR", "1");
    for s in &sets {
        cmd.args(["--set", s]);
    }
    let o = timed::output_within(&mut cmd, Duration::from_secs(300));
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(
        html.matches("<div class=\"response ").count(),
        16,
        "every response of the group"
    );
    assert!(html.contains(": 16 responses,"), "the step's summary line");
    let reward = std::fs::read_to_string(out.join("reward.svg")).unwrap();
    assert!(
        texts(&reward)
            .iter()
            .any(|t| t.text.starts_with("reward, accuracy")),
        "y label"
    );
}
