//! What a run shows a person while and after it trains: TensorBoard event
//! files, the completions log, charts and a one-file HTML report.
//!
//! The run loop owns one [`Observer`]: [`Observer::open`] when the run
//! starts, [`Observer::on_step`] for each finished step (next to the
//! `metrics.jsonl` line), [`Observer::finish`] at the end. Everything it
//! writes goes into the run folder (`runtime.out_dir`):
//!
//! - `events.out.tfevents.<time>.<host>` ([`tfevents`]): every numeric field of
//!   each step's record as a scalar (nested fields as `timings/generate_s`),
//!   and the step's sampled completions as text;
//! - `completions.jsonl` ([`completions`]): prompts, responses, rewards,
//!   advantages and per-token credit of a few responses per step;
//! - `config.toml`: the resolved configuration;
//! - at the end, `reward.svg`/`.png`, `panels.svg`/`.png` and `report.html`
//!   ([`report`], drawn by [`charts`]).
//!
//! It also holds what `rlsd inspect` and `rlsd plot` show: [`inspection`]
//! (one step's per-token credit, fresh or from the log), [`credit_view`]
//! (that credit as HTML or ANSI text) and [`charts`] (metrics as charts).

pub mod charts;
pub mod completions;
pub mod credit_view;
pub mod inspection;
pub mod report;
pub mod tfevents;

use std::path::{Path, PathBuf};

pub use crate::config::ObserveConfig;
use crate::config::RunConfig;
use crate::metrics::MetricsWriter;
use crate::stats::StepStats;
use crate::{Error, Result};

pub use crate::pipeline::sample_completions;
pub use completions::{
    read_completions, read_step, CompletionSample, StepCompletions, COMPLETIONS_FILE,
};
use tfevents::{EventBody, EventWriter, SummaryValue};

/// The resolved configuration's file name inside a run folder.
pub const CONFIG_FILE: &str = "config.toml";

/// Writes a run's TensorBoard events, completions log, charts and report.
#[derive(Debug)]
pub struct Observer {
    dir: PathBuf,
    cfg: ObserveConfig,
    /// `algo.eps_w`, recorded with each step's completions.
    eps_w: f64,
    events: Option<EventWriter>,
    completions: Option<MetricsWriter>,
}

impl Observer {
    /// Start observing the run of `cfg` in `cfg.runtime.out_dir`, resuming
    /// after `start_step` (0 for a fresh run): the completions log is cut
    /// back to that step, and a new event file starts with a session-start
    /// marker so TensorBoard hides the old files' events after it.
    pub fn open(cfg: &RunConfig, start_step: u64) -> Result<Self> {
        let dir = cfg.runtime.out_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let config_path = dir.join(CONFIG_FILE);
        std::fs::write(&config_path, cfg.to_toml()).map_err(|e| Error::io(&config_path, e))?;
        let ocfg = cfg.observe.clone();
        let events = if ocfg.tensorboard {
            let mut w = EventWriter::create(&dir)?;
            if start_step > 0 {
                w.event(start_step + 1, &EventBody::SessionStart)?;
            }
            Some(w)
        } else {
            None
        };
        let completions = if ocfg.completions_per_step > 0 {
            Some(MetricsWriter::resume(
                &dir.join(COMPLETIONS_FILE),
                start_step,
            )?)
        } else {
            None
        };
        Ok(Self {
            dir,
            cfg: ocfg,
            eps_w: cfg.algo.eps_w,
            events,
            completions,
        })
    }

    /// The run folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The TensorBoard event file, when one is written.
    pub fn event_file(&self) -> Option<&Path> {
        self.events.as_ref().map(EventWriter::path)
    }

    /// Record one finished step: its numbers as TensorBoard scalars, its
    /// sampled completions as TensorBoard text and a `completions.jsonl` line.
    pub fn on_step(&mut self, stats: &StepStats) -> Result<()> {
        let record = serde_json::to_value(stats).map_err(|e| {
            Error::Runtime(format!("step {} stats do not serialize: {e}", stats.step))
        })?;
        let mut values = scalars(&record, "");
        if !stats.completions.is_empty() {
            values.push(SummaryValue::Text {
                tag: "completions".into(),
                text: completions_markdown(&stats.completions),
            });
        }
        if let Some(w) = self.events.as_mut() {
            w.summary(stats.step, &values)?;
            // Validations are a list in the record (skipped above): each is
            // tagged `validation/...` at the step it followed.
            for v in &stats.validation {
                w.summary(v.after_step, &validation_scalars(v))?;
            }
        }
        if let (Some(w), false) = (self.completions.as_mut(), stats.completions.is_empty()) {
            w.append(&StepCompletions {
                step: stats.step,
                algo: stats.algo.clone(),
                lambda: stats.lambda,
                eps_w: self.eps_w,
                samples: stats.completions.clone(),
            })?;
        }
        Ok(())
    }

    /// Record any other numeric record at `step` (validation results, for
    /// example): every number in it becomes a scalar tagged `prefix/...`.
    pub fn on_record(&mut self, step: u64, prefix: &str, record: &serde_json::Value) -> Result<()> {
        match self.events.as_mut() {
            Some(w) => w.summary(step, &scalars(record, prefix)),
            None => Ok(()),
        }
    }

    /// End of the run: draw the charts and write `report.html` (when
    /// `observe.report`). Drawing never fails a finished run: problems are
    /// logged. Returns the files written.
    pub fn finish(&mut self) -> Vec<PathBuf> {
        if !self.cfg.report {
            return Vec::new();
        }
        let mut written = Vec::new();
        let formats: &[crate::plot::ImageFormat] = if self.cfg.png {
            &[crate::plot::ImageFormat::Svg, crate::plot::ImageFormat::Png]
        } else {
            &[crate::plot::ImageFormat::Svg]
        };
        for &f in formats {
            match charts::plot_run(&self.dir, f) {
                Ok(paths) => written.extend(paths),
                Err(e) => tracing::warn!(error = %e, "could not draw the run's charts"),
            }
        }
        match report::write_report(&self.dir, &self.dir.join(report::REPORT_FILE)) {
            Ok(p) => written.push(p),
            Err(e) => tracing::warn!(error = %e, "could not write the run report"),
        }
        written
    }
}

/// A validation's numbers as `validation/<field>` scalars (`after_step`,
/// which is the event's step, left out).
pub fn validation_scalars(v: &crate::stats::ValidationStats) -> Vec<SummaryValue> {
    let mut record = serde_json::to_value(v).unwrap_or_default();
    if let Some(map) = record.as_object_mut() {
        map.remove("after_step");
    }
    scalars(&record, "validation")
}

/// Every number in `record` (booleans as 0/1) as a scalar, nested objects
/// joined with `/` (`timings/generate_s`), under `prefix/` when given. The
/// `step` key is the event's step, not a scalar; strings, arrays and nulls
/// are skipped.
pub fn scalars(record: &serde_json::Value, prefix: &str) -> Vec<SummaryValue> {
    let mut out = Vec::new();
    flatten(record, prefix, true, &mut out);
    out
}

fn flatten(v: &serde_json::Value, tag: &str, top: bool, out: &mut Vec<SummaryValue>) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                if top && k == crate::metrics::STEP_KEY {
                    continue;
                }
                let t = if tag.is_empty() {
                    k.clone()
                } else {
                    format!("{tag}/{k}")
                };
                flatten(x, &t, false, out);
            }
        }
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push(SummaryValue::Scalar {
                    tag: tag.to_string(),
                    value: x as f32,
                });
            }
        }
        Value::Bool(b) => out.push(SummaryValue::Scalar {
            tag: tag.to_string(),
            value: f32::from(u8::from(*b)),
        }),
        _ => {}
    }
}

/// Longest text of a prompt or response shown in TensorBoard.
const TEXT_LIMIT: usize = 2000;

fn clip(s: &str) -> String {
    if s.chars().count() <= TEXT_LIMIT {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(TEXT_LIMIT).collect();
        c.push_str(" …");
        c
    }
}

/// The sampled completions as Markdown for TensorBoard's Text tab: per
/// prompt a heading and the prompt, per response its verdict and text.
fn completions_markdown(samples: &[CompletionSample]) -> String {
    let mut md = String::new();
    let mut last_group = None;
    for s in samples {
        if last_group != Some(s.group) {
            last_group = Some(s.group);
            md.push_str(&format!(
                "### prompt {} ({})\n\n```\n{}\n```\n\nreference answer: `{}`\n\n",
                s.group + 1,
                s.example_id,
                clip(&s.prompt),
                s.answer
            ));
        }
        let ahat_mean = if s.ahat.is_empty() {
            0.0
        } else {
            s.ahat.iter().sum::<f32>() / s.ahat.len() as f32
        };
        md.push_str(&format!(
            "**reward {:.3}** ({}), A = {:+.4}, mean Ahat = {:+.4}, {} tokens\n\n```\n{}\n```\n\n",
            s.reward,
            if s.correct { "correct" } else { "wrong" },
            s.advantage,
            ahat_mean,
            s.tokens.len(),
            clip(&s.response)
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validations_become_validation_tags() {
        let v = crate::stats::ValidationStats {
            after_step: 5,
            pass1_greedy: 0.25,
            ..Default::default()
        };
        let tags: Vec<(String, f32)> = validation_scalars(&v)
            .into_iter()
            .filter_map(|s| match s {
                SummaryValue::Scalar { tag, value } => Some((tag, value)),
                _ => None,
            })
            .collect();
        assert!(
            tags.contains(&("validation/pass1_greedy".to_string(), 0.25)),
            "{tags:?}"
        );
        assert!(
            tags.iter().all(|(t, _)| t != "validation/after_step"),
            "{tags:?}"
        );
    }

    #[test]
    fn scalars_flatten_nested_numbers_and_skip_the_rest() {
        let r = json!({
            "step": 3, "algo": "rlsd", "loss": 0.5, "skipped": false,
            "timings": {"generate_s": 1.25, "deep": {"x": 2}},
            "skip_reason": null, "list": [1, 2]
        });
        let mut got: Vec<(String, f32)> = scalars(&r, "")
            .into_iter()
            .map(|v| match v {
                SummaryValue::Scalar { tag, value } => (tag, value),
                SummaryValue::Text { .. } => unreachable!(),
            })
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("loss".to_string(), 0.5),
                ("skipped".to_string(), 0.0),
                ("timings/deep/x".to_string(), 2.0),
                ("timings/generate_s".to_string(), 1.25),
            ]
        );
        let v = scalars(&json!({"step": 1, "accuracy": 1}), "val");
        assert_eq!(
            v,
            vec![SummaryValue::Scalar {
                tag: "val/accuracy".into(),
                value: 1.0
            }]
        );
    }
}
