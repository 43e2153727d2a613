//! What `rlsd train` shows while it runs: a progress bar with the step,
//! reward, accuracy, tokens/s and ETA when both stdout and stderr are a
//! terminal, and plain table lines (one per step, no escape codes) when
//! either is piped: `rlsd train | tee log` shows what the log holds, with no
//! bar frames left between the lines. The table's header is printed with the
//! first step, so a run refused at start-up prints none.
//!
//! Log lines written through [`crate::logging`] while the bar is up are
//! printed above it rather than through it.

use crate::rlsd::Algo;
use crate::stats::StepStats;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::{Duration, Instant};

/// Which columns a run's lines have: lambda and the weight-clip fraction
/// only for algorithms whose token credit uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    /// Show `lambda` (RLSD and CEPO mix the teacher's credit in by lambda).
    pub lambda: bool,
    /// Show `w_clip` (every algorithm with a teacher clips a token weight).
    pub weight_clip: bool,
}

impl Columns {
    /// The columns that mean something for `algo`.
    pub fn for_algo(algo: Algo) -> Self {
        Columns {
            lambda: matches!(algo, Algo::Rlsd | Algo::Cepo),
            weight_clip: algo.needs_teacher(),
        }
    }

    /// The header line of the table.
    pub fn header(&self) -> String {
        let mut s = format!("{:>5} {:>8} {:>8}", "step", "reward", "acc");
        if self.lambda {
            s.push_str(&format!(" {:>7}", "lambda"));
        }
        s.push_str(&format!(" {:>7}", "len"));
        if self.weight_clip {
            s.push_str(&format!(" {:>8}", "w_clip"));
        }
        s.push_str(&format!(
            " {:>7} {:>7} {:>8} {:>8}",
            "gnorm", "sec", "tok/s", "eta"
        ));
        s
    }

    /// One step's line of the table; `step_s` is the step's wall time.
    pub fn line(&self, s: &StepStats, step_s: f64, eta: Option<Duration>) -> String {
        let mut out = format!("{:>5} {:>8.3} {:>8.3}", s.step, s.reward_mean, s.accuracy);
        if self.lambda {
            out.push_str(&format!(" {:>7.3}", s.lambda));
        }
        out.push_str(&format!(" {:>7.1}", s.response_len_mean));
        if self.weight_clip {
            out.push_str(&format!(" {:>8.3}", s.weight_clip_frac));
        }
        out.push_str(&format!(
            " {:>7.3} {:>7.2} {:>8.0} {:>8}",
            s.grad_norm,
            step_s,
            tokens_per_s(s, step_s),
            eta.map_or_else(|| "-".to_string(), format_duration)
        ));
        out
    }
}

/// Generated tokens per second of wall time.
fn tokens_per_s(s: &StepStats, step_s: f64) -> f64 {
    if step_s > 0.0 {
        s.num_tokens as f64 / step_s
    } else {
        0.0
    }
}

/// `1h02m`, `3m07s`, `42s`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Whether the live bar is drawn: only when stderr (where it is drawn) and
/// stdout (where the table goes) are both a terminal.
pub fn draws_bar(stderr_terminal: bool, stdout_terminal: bool) -> bool {
    stderr_terminal && stdout_terminal
}

/// The live display of a training run.
#[derive(Debug)]
pub struct TrainProgress {
    /// Columns of the table.
    columns: Columns,
    /// The bar, when stdout and stderr are both a terminal; table lines then
    /// go above it instead of through it.
    bar: Option<ProgressBar>,
    /// Whether the header line was printed (with the first step).
    header_printed: bool,
    /// Steps the run ends at.
    total_steps: u64,
    /// When the previous step finished (or the display started).
    last: Instant,
    /// The step before the first one seen, and when that first step began:
    /// the ETA is the mean pace since then, so a resumed run does not count
    /// the steps it skipped.
    first: Option<(u64, Instant)>,
}

impl TrainProgress {
    /// Start the display: table lines on stdout, and a bar on stderr below
    /// them only when both are a terminal (with either piped, a bar on the
    /// other would leave its frames between the piped lines, e.g. under
    /// `| tee`). Nothing is printed until the first step.
    pub fn new(algo: Algo, total_steps: u64, stderr_terminal: bool, stdout_terminal: bool) -> Self {
        let columns = Columns::for_algo(algo);
        let bar = draws_bar(stderr_terminal, stdout_terminal).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total_steps), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} step {pos}/{len} [{bar:30}] {msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            crate::logging::set_progress_bar(Some(bar.clone()));
            bar
        });
        TrainProgress {
            columns,
            bar,
            header_printed: false,
            total_steps,
            last: Instant::now(),
            first: None,
        }
    }

    /// Show a finished step: a table line (above the bar on a terminal) and
    /// the bar's position and message.
    pub fn step(&mut self, s: &StepStats) {
        let now = Instant::now();
        let step_s = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        let started = now - Duration::from_secs_f64(step_s);
        let (step0, t0) = *self
            .first
            .get_or_insert((s.step.saturating_sub(1), started));
        let eta = self.eta_from(step0, t0, s.step, now);
        if !self.header_printed {
            self.header_printed = true;
            self.print_line(&self.columns.header());
        }
        self.print_line(&self.columns.line(s, step_s, eta));
        for v in &s.validation {
            let line = format!(
                "validation after step {}: pass@1 greedy {:.3}, sampled {:.3}, pass@{k} {:.3}, maj@{k} {:.3} ({} prompts)",
                v.after_step,
                v.pass1_greedy,
                v.pass1_sampled,
                v.pass_at_k,
                v.maj_at_k,
                v.n,
                k = v.samples
            );
            self.print_line(&line);
        }
        if let Some(bar) = &self.bar {
            bar.set_position(s.step);
            let mut msg = format!("reward {:.3} acc {:.3}", s.reward_mean, s.accuracy);
            if self.columns.lambda {
                msg.push_str(&format!(" lambda {:.3}", s.lambda));
            }
            msg.push_str(&format!(
                " | {:.0} tok/s | eta {}",
                tokens_per_s(s, step_s),
                eta.map_or_else(|| "-".to_string(), format_duration)
            ));
            bar.set_message(msg);
        }
    }

    /// One line of the table: above the bar when there is one.
    fn print_line(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
    }

    /// Remaining time at the mean pace of steps `from+1..=to` over `t0..now`.
    fn eta_from(&self, from: u64, t0: Instant, to: u64, now: Instant) -> Option<Duration> {
        let done = to.checked_sub(from).filter(|&d| d > 0)?;
        let per_step = now.duration_since(t0).as_secs_f64() / done as f64;
        let left = self.total_steps.saturating_sub(to);
        Some(Duration::from_secs_f64(per_step * left as f64))
    }

    /// Take the bar down (log lines go straight to stderr again).
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            crate::logging::set_progress_bar(None);
            bar.finish_and_clear();
        }
    }
}

impl Drop for TrainProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpo_has_no_lambda_or_weight_columns() {
        let grpo = Columns::for_algo(Algo::Grpo);
        assert!(!grpo.header().contains("lambda") && !grpo.header().contains("w_clip"));
        let rlsd = Columns::for_algo(Algo::Rlsd);
        assert!(rlsd.header().contains("lambda") && rlsd.header().contains("w_clip"));
        let s = StepStats {
            step: 3,
            reward_mean: 0.5,
            num_tokens: 200,
            ..StepStats::default()
        };
        // 200 tokens in 2 s = 100 tok/s; 7 steps left at 2 s each = 14 s.
        let line = grpo.line(&s, 2.0, Some(Duration::from_secs(14)));
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>()[6..],
            ["100", "14s"]
        );
        assert_eq!(
            line.split_whitespace().count(),
            grpo.header().split_whitespace().count()
        );
        assert_eq!(format_duration(Duration::from_secs(3725)), "1h02m");
        assert_eq!(format_duration(Duration::from_secs(187)), "3m07s");
    }
}
