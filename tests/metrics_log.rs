//! metrics.jsonl: per-line flushing, truncation on resume, torn lines.

use anyhow::Result;
use rlsd::metrics::{read_metrics, read_metrics_counted, MetricsWriter};
use serde::Serialize;
use serde_json::json;

#[derive(Serialize)]
struct Rec {
    step: u64,
    reward_mean: f32,
}

#[test]
fn every_line_is_visible_immediately() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("run/metrics.jsonl");
    let mut w = MetricsWriter::create(&path)?;
    for step in 1..=3 {
        w.append(&Rec {
            step,
            reward_mean: step as f32 / 4.0,
        })?;
        // Read while the writer is still open: the line must already be there.
        assert_eq!(read_metrics(&path)?.len(), step as usize);
    }
    assert_eq!(
        std::fs::read_to_string(&path)?.lines().nth(1),
        Some(r#"{"step":2,"reward_mean":0.5}"#)
    );
    Ok(())
}

#[test]
fn resume_drops_later_steps_and_torn_line_but_keeps_the_rest() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("metrics.jsonl");
    {
        let mut w = MetricsWriter::create(&path)?;
        w.append(&json!({"event": "start", "seed": 1}))?;
        for step in 1..=4 {
            w.append(&json!({"step": step, "reward_mean": 0.1 * step as f64}))?;
        }
        // A step written as a float still counts as a step.
        w.append(&json!({"step": 5.0, "note": "float step"}))?;
    }
    // The crash tore the line of step 6.
    let mut text = std::fs::read_to_string(&path)?;
    let before_crash = text.clone();
    text.push_str(r#"{"step": 6, "reward_me"#);
    std::fs::write(&path, &text)?;

    let log = read_metrics_counted(&path)?;
    assert_eq!(log.records.len(), 6);
    assert_eq!(log.skipped_lines, [7]);

    // Resume from the checkpoint at step 3: steps 4, 5 and the torn 6 go.
    let mut w = MetricsWriter::resume(&path, 3)?;
    let kept = std::fs::read_to_string(&path)?;
    let expected: String = before_crash
        .lines()
        .take(4)
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(kept, expected, "earlier lines must survive byte for byte");
    w.append(&json!({"step": 4, "reward_mean": 0.45}))?;
    drop(w);
    let steps: Vec<u64> = read_metrics(&path)?
        .iter()
        .filter_map(|r| r["step"].as_u64())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4]);
    assert_eq!(read_metrics(&path)?[0]["event"], "start");
    Ok(())
}

#[test]
fn resume_with_nothing_to_drop_leaves_file_untouched() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("metrics.jsonl");
    // A damaged line in the middle is kept as it is (never lose lines).
    let original = "{\"step\":1}\nnot json\n{\"step\":2}\n";
    std::fs::write(&path, original)?;
    let mut w = MetricsWriter::resume(&path, 2)?;
    assert_eq!(std::fs::read_to_string(&path)?, original);
    w.append(&json!({"step": 3}))?;
    w.sync()?;
    assert_eq!(
        std::fs::read_to_string(&path)?,
        format!("{original}{{\"step\":3}}\n")
    );
    let log = read_metrics_counted(&path)?;
    assert_eq!(log.records.len(), 3);
    assert_eq!(log.skipped_lines, [2]);
    Ok(())
}

#[test]
fn resume_creates_a_missing_log_and_reading_a_missing_log_names_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("new/metrics.jsonl");
    let err = read_metrics(&path).unwrap_err().to_string();
    assert!(err.contains("metrics.jsonl"), "{err}");
    let mut w = MetricsWriter::resume(&path, 10)?;
    w.append(&json!({"step": 11}))?;
    assert_eq!(read_metrics(&path)?, [json!({"step": 11})]);
    Ok(())
}

#[test]
fn a_torn_line_without_newline_after_a_kept_step_is_dropped_on_resume() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("metrics.jsonl");
    std::fs::write(&path, "{\"step\":1}\n{\"step\":2}\n{\"st")?;
    let _w = MetricsWriter::resume(&path, 2)?;
    assert_eq!(
        std::fs::read_to_string(&path)?,
        "{\"step\":1}\n{\"step\":2}\n"
    );
    Ok(())
}
