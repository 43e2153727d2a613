//! Where each committed step's stats go, exactly once and in step order.

use crate::error::Result;
use crate::metrics::MetricsWriter;
use crate::stats::{ResponseRecord, StepStats};

/// The embedding program's per-step callback ([`crate::actors::runtime::RuntimeBuilder::on_step`]).
pub type StepCallback = Box<dyn FnMut(&StepStats) + Send>;

/// The embedding program's per-step callback with every response of the
/// step ([`crate::actors::runtime::RuntimeBuilder::on_step_responses`]).
pub type ResponsesCallback = Box<dyn FnMut(&StepStats, &[ResponseRecord]) + Send>;

/// Where every committed step's [`StepStats`] goes, in step order, exactly
/// once: the metrics log, the caller's `on_step`, and the report.
pub struct StepRecorder {
    /// The run's `metrics.jsonl`.
    pub metrics: MetricsWriter,
    /// TensorBoard events, completions.jsonl and the end-of-run report.
    pub observer: crate::observe::Observer,
    /// The embedding program's callback.
    pub on_step: Option<StepCallback>,
    /// Its callback with the step's responses (`StepStats::responses`).
    pub on_responses: Option<ResponsesCallback>,
    /// Every step recorded, in order, without its completions and responses
    /// (those go to the logs and callbacks only).
    pub steps: Vec<StepStats>,
    /// The first failed write of a step's record; nothing is recorded after
    /// it (the log must not skip a step), and the run ends failed with it.
    pub write_error: Option<String>,
}

impl StepRecorder {
    /// Record one committed step (the one place that does).
    pub fn record(&mut self, mut stats: StepStats) -> Result<()> {
        if self.write_error.is_some() || self.steps.last().is_some_and(|l| l.step >= stats.step) {
            return Ok(()); // already recorded, or recording has stopped
        }
        let written = self
            .metrics
            .append(&stats)
            .and_then(|()| self.observer.on_step(&stats));
        if let Err(e) = written {
            self.write_error = Some(format!("could not record step {}: {e}", stats.step));
            return Err(e);
        }
        // The responses go to their callback only, not into the report.
        let responses = std::mem::take(&mut stats.responses);
        if let Some(f) = self.on_step.as_mut() {
            f(&stats);
        }
        if let Some(f) = self.on_responses.as_mut() {
            f(&stats, &responses);
        }
        // The sampled completions (a few responses with their per-token
        // credit) are in the completions log and TensorBoard by now; kept in
        // `steps` they grew the heap by ~30 kB a step for the whole run
        // (issue 24, item 7; docs/benchmarks/recovery.md).
        stats.completions = Vec::new();
        self.steps.push(stats);
        crate::malloc::trim();
        Ok(())
    }
}

impl std::fmt::Debug for StepRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepRecorder")
            .field("steps", &self.steps.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;
    use crate::stats::ResponseRecord;
    use std::sync::{Arc, Mutex};

    fn response(tokens: usize) -> ResponseRecord {
        ResponseRecord {
            group: 0,
            example_id: "ex-1".into(),
            prompt: "1+1".into(),
            answer: "2".into(),
            response: "2".repeat(tokens),
            response_ids: vec![7; tokens],
            tokens: vec!["2".into(); tokens],
            reward: 1.0,
            correct: true,
            reason: String::new(),
            advantage: 0.5,
            ahat: vec![0.5; tokens],
            weights: Some(vec![1.0; tokens]),
            delta: Some(vec![0.0; tokens]),
            trained: None,
        }
    }

    /// The report keeps every step's numbers, but not its completions: they
    /// reach the completions log and the callback, then are dropped, so a
    /// long run's heap does not grow with them (issue 24, item 7).
    #[test]
    fn recorded_steps_keep_no_completions() {
        let tmp = tempfile::tempdir().unwrap();
        let set = vec![
            format!("runtime.out_dir=\"{}\"", tmp.path().display()),
            "observe.report=false".to_string(),
            "observe.tensorboard=false".to_string(),
        ];
        let cfg = RunConfig::load(None, &set).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_cb = Arc::clone(&seen);
        let mut rec = StepRecorder {
            metrics: MetricsWriter::create(&tmp.path().join("metrics.jsonl")).unwrap(),
            observer: crate::observe::Observer::open(&cfg, 0).unwrap(),
            on_step: Some(Box::new(move |s: &StepStats| {
                seen_cb.lock().unwrap().push(s.completions.len());
            })),
            on_responses: None,
            steps: Vec::new(),
            write_error: None,
        };
        for step in 1..=3 {
            rec.record(StepStats {
                step,
                loss: step as f64,
                completions: vec![response(40), response(12)],
                ..StepStats::default()
            })
            .unwrap();
        }
        assert_eq!(rec.steps.len(), 3);
        assert!(rec.steps.iter().all(|s| s.completions.is_empty()));
        assert_eq!(rec.steps[2].loss, 3.0);
        assert_eq!(*seen.lock().unwrap(), vec![2, 2, 2]);
        let log = std::fs::read_to_string(tmp.path().join("completions.jsonl")).unwrap();
        assert_eq!(log.lines().count(), 3);
        assert!(log.contains("\"ex-1\""), "{log}");
    }
}
