//! What each rank of a data-parallel job reports at the end
//! (`ranks/rank<r>.json` in the run folder): its role, the digest of its
//! weights, and where its time and memory went.

use crate::error::{Error, Result};
use crate::stats::StageTimings;
use std::path::{Path, PathBuf};

/// What a rank reports at the end.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RankReport {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
    /// `learner` (scores and trains; under colocated placement it also
    /// samples) or `sampler` (split placement: generates and verifies).
    #[serde(default = "learner")]
    pub role: String,
    /// Steps trained.
    pub steps: u64,
    /// The checkpoint step this run resumed from, if it did.
    #[serde(default)]
    pub resumed_from: Option<u64>,
    /// SHA-256 of every trainable parameter's bytes, in name order.
    pub weights_sha256: String,
    /// Seconds in collectives over the run (learners: loss agreement,
    /// gradient and stats all-reduces; split placement adds the response
    /// exchange and the weight broadcast on every rank).
    pub collective_s: f64,
    /// Seconds this rank spent in each stage over the run (its own work:
    /// a split learner does not generate, a sampler does not train).
    #[serde(default)]
    pub stage_s: StageTimings,
    /// Split placement: seconds in the response exchange (a learner
    /// mostly waits there for the samplers).
    #[serde(default)]
    pub exchange_s: f64,
    /// Split placement: seconds in the weight broadcast after each step.
    #[serde(default)]
    pub weights_broadcast_s: f64,
    /// Response tokens this rank generated.
    #[serde(default)]
    pub generated_tokens: u64,
    /// Response tokens this rank trained on.
    #[serde(default)]
    pub trained_tokens: u64,
    /// `generated_tokens / stage_s.generate_s`.
    #[serde(default)]
    pub generate_tokens_per_s: f64,
    /// `trained_tokens / stage_s.train_s`.
    #[serde(default)]
    pub train_tokens_per_s: f64,
    /// Peak resident memory of the process (`VmHWM`), bytes; on CUDA the
    /// device's memory is not included.
    #[serde(default)]
    pub peak_rss_bytes: u64,
    /// Seconds from start to the first step (group, model, checkpoint load).
    #[serde(default)]
    pub setup_s: f64,
    /// Seconds of each checkpoint commit (agreement, write, acknowledgement).
    #[serde(default)]
    pub checkpoint_s: Vec<f64>,
    /// The last committed checkpoint.
    #[serde(default)]
    pub last_checkpoint: Option<PathBuf>,
    /// Seconds of the whole loop.
    pub wall_s: f64,
}

fn learner() -> String {
    "learner".into()
}

/// A rank's running totals, turned into its report at the end.
#[derive(Debug, Default, Clone)]
pub struct RankTotals {
    /// Stage seconds (own work; `collective_s` the learners' collectives).
    pub stages: StageTimings,
    /// Response exchange seconds (split).
    pub exchange_s: f64,
    /// Weight broadcast seconds (split).
    pub weights_broadcast_s: f64,
    /// Response tokens generated here.
    pub generated_tokens: u64,
    /// Response tokens trained on here.
    pub trained_tokens: u64,
}

impl RankTotals {
    /// Add one step's stage seconds; `sampled`: whether this rank generated
    /// and verified the step's responses itself.
    pub fn add_stages(&mut self, t: &StageTimings, sampled: bool) {
        let s = &mut self.stages;
        if sampled {
            s.generate_s += t.generate_s;
            s.verify_s += t.verify_s;
        }
        s.teacher_s += t.teacher_s;
        s.credit_s += t.credit_s;
        s.train_s += t.train_s;
        s.collective_s += t.collective_s;
    }

    /// Fill the report's time, token and memory fields from these totals.
    pub fn fill(&self, r: &mut RankReport) {
        r.collective_s = self.stages.collective_s + self.exchange_s + self.weights_broadcast_s;
        r.stage_s = self.stages.clone();
        r.exchange_s = self.exchange_s;
        r.weights_broadcast_s = self.weights_broadcast_s;
        r.generated_tokens = self.generated_tokens;
        r.trained_tokens = self.trained_tokens;
        let rate = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        r.generate_tokens_per_s = rate(self.generated_tokens, self.stages.generate_s);
        r.train_tokens_per_s = rate(self.trained_tokens, self.stages.train_s);
        r.peak_rss_bytes = crate::process::status_bytes("VmHWM:").unwrap_or(0);
    }
}

/// Write `ranks/rank<r>.json` under the run folder `out`.
pub fn write_report(out: &Path, r: &RankReport) -> Result<()> {
    let dir = out.join("ranks");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = dir.join(format!("rank{}.json", r.rank));
    let text = serde_json::to_string_pretty(r)
        .map_err(|e| Error::Distributed(format!("{}: {e}", path.display())))?;
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_fill_rates_and_split_own_work() {
        let mut t = RankTotals::default();
        let step = StageTimings {
            generate_s: 2.0,
            verify_s: 1.0,
            train_s: 4.0,
            collective_s: 0.5,
            ..StageTimings::default()
        };
        t.add_stages(&step, true);
        t.add_stages(&step, false);
        t.generated_tokens = 100;
        t.trained_tokens = 400;
        t.exchange_s = 0.25;
        let mut r: RankReport = serde_json::from_str(
            r#"{"rank":0,"world":2,"steps":2,"weights_sha256":"x","collective_s":0,"wall_s":1}"#,
        )
        .unwrap();
        assert_eq!(r.role, "learner");
        t.fill(&mut r);
        assert_eq!(r.stage_s.generate_s, 2.0);
        assert_eq!(r.stage_s.train_s, 8.0);
        assert_eq!(r.generate_tokens_per_s, 50.0);
        assert_eq!(r.train_tokens_per_s, 50.0);
        assert_eq!(r.collective_s, 1.25);
        assert!(r.peak_rss_bytes > 0);
    }
}
