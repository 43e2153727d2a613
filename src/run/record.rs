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
    /// Every step recorded, in order.
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
