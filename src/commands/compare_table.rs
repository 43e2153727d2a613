//! The numbers of `rlsd compare`: accuracy curves aggregated over seeds, and
//! the Markdown table written to `results.md`.

use crate::config::RunConfig;
use crate::rlsd::Algo;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::PathBuf;

/// What `rlsd compare` runs.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Algorithms, in table order (the first `grpo` is the reference row).
    pub algos: Vec<Algo>,
    /// Seeds; each algorithm runs once per seed.
    pub seeds: Vec<u64>,
    /// Training steps of every run.
    pub steps: u64,
    /// Validate before step 1 and every this many steps.
    pub val_every: u64,
    /// Runs at a time (threads; each uses one libtorch thread).
    pub jobs: usize,
    /// Output folder.
    pub out: PathBuf,
}

/// One finished (or failed) run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    /// Algorithm name.
    pub algo: String,
    /// Seed.
    pub seed: u64,
    /// Why it failed (None when it finished).
    pub error: Option<String>,
    /// `(step, pass@1 sampled, pass@1 greedy, pass@K)` of every validation.
    pub validation: Vec<(u64, f64, f64, f64)>,
    /// Mean training reward of the last 10% of steps.
    pub final_train_reward: f64,
    /// Mean weight-clip fraction below `1 - eps_w` over steps.
    pub weight_clip_low_frac: f64,
    /// Mean weight-clip fraction above `1 + eps_w` over steps.
    pub weight_clip_high_frac: f64,
    /// Mean PPO ratio-clip fraction over steps.
    pub ratio_clip_frac: f64,
    /// Wall seconds of the run (validation included).
    pub wall_s: f64,
}

/// One validation step of an algorithm, over its finished seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct CurvePoint {
    /// The step the validation followed (0 = before training).
    pub step: u64,
    /// Mean over seeds of pass@1 (sampled).
    pub mean: f64,
    /// Sample standard deviation over seeds (0 with one seed).
    pub sd: f64,
    /// Lowest seed.
    pub min: f64,
    /// Highest seed.
    pub max: f64,
    /// Mean over seeds of greedy pass@1.
    pub greedy: f64,
    /// Mean over seeds of pass@K.
    pub pass_k: f64,
}

/// An algorithm's held-out accuracy against the step.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Algorithm name.
    pub algo: String,
    /// Finished seeds the points average over.
    pub seeds: usize,
    /// Points in step order (steps every finished seed validated at).
    pub points: Vec<CurvePoint>,
}

impl Curve {
    /// The last point (the final accuracy).
    pub fn last(&self) -> Option<&CurvePoint> {
        self.points.last()
    }

    /// The first step whose mean reaches `target` (within 1e-12).
    pub fn steps_to_reach(&self, target: f64) -> Option<u64> {
        self.points
            .iter()
            .find(|p| p.mean + 1e-12 >= target)
            .map(|p| p.step)
    }

    /// The highest mean and its step.
    pub fn peak(&self) -> Option<&CurvePoint> {
        self.points
            .iter()
            .fold(None, |best: Option<&CurvePoint>, p| match best {
                Some(b) if b.mean >= p.mean => Some(b),
                _ => Some(p),
            })
    }

    /// Mean of the means over every validation after step 0.
    pub fn average_after_start(&self) -> f64 {
        let v: Vec<f64> = self
            .points
            .iter()
            .filter(|p| p.step > 0)
            .map(|p| p.mean)
            .collect();
        mean(&v)
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample standard deviation (n - 1); 0 for fewer than two values.
pub fn sample_sd(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// Aggregate the finished runs of each algorithm over seeds, at the steps
/// every one of them validated at.
pub fn curves(runs: &[RunSummary], algos: &[Algo]) -> Vec<Curve> {
    algos
        .iter()
        .map(|a| {
            let mine: Vec<&RunSummary> = runs
                .iter()
                .filter(|r| r.algo == a.name() && r.error.is_none() && !r.validation.is_empty())
                .collect();
            let steps: Vec<u64> = mine
                .first()
                .map(|r| r.validation.iter().map(|v| v.0).collect())
                .unwrap_or_default();
            let points = steps
                .into_iter()
                .filter_map(|step| {
                    let at: Vec<(f64, f64, f64)> = mine
                        .iter()
                        .filter_map(|r| r.validation.iter().find(|v| v.0 == step))
                        .map(|v| (v.1, v.2, v.3))
                        .collect();
                    if at.len() != mine.len() {
                        return None;
                    }
                    let acc: Vec<f64> = at.iter().map(|x| x.0).collect();
                    Some(CurvePoint {
                        step,
                        mean: mean(&acc),
                        sd: sample_sd(&acc),
                        min: acc.iter().copied().fold(f64::INFINITY, f64::min),
                        max: acc.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                        greedy: mean(&at.iter().map(|x| x.1).collect::<Vec<_>>()),
                        pass_k: mean(&at.iter().map(|x| x.2).collect::<Vec<_>>()),
                    })
                })
                .collect();
            Curve {
                algo: a.name().to_string(),
                seeds: mine.len(),
                points,
            }
        })
        .collect()
}

/// At most `n` of `steps`, evenly spaced, always keeping the first and last.
pub fn pick_steps(steps: &[u64], n: usize) -> Vec<u64> {
    if steps.len() <= n || n < 2 {
        return steps.to_vec();
    }
    let mut out: Vec<u64> = (0..n)
        .map(|i| steps[i * (steps.len() - 1) / (n - 1)])
        .collect();
    out.dedup();
    out
}

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.1}", 100.0 * x)
    } else {
        "-".into()
    }
}

/// The `results.md` text.
pub fn markdown(
    base: &RunConfig,
    opts: &CompareOptions,
    runs: &[RunSummary],
    curves: &[Curve],
    wall_s: f64,
    hardware: &str,
) -> String {
    let mut s = String::new();
    let r = &base.rollout;
    let _ = writeln!(s, "# rlsd compare\n");
    let _ = writeln!(
        s,
        "{} algorithms x {} seeds ({:?}), {} steps each, on-policy (sequential loop), \
         {} prompts x {} responses a step, lr {}, max {} new tokens; held-out validation \
         of {} prompts x {} samples at T={} before step 1 and every {} steps. \
         Accuracy = held-out pass@1 of sampling (mean over the samples), in percent.\n",
        opts.algos.len(),
        opts.seeds.len(),
        opts.seeds,
        opts.steps,
        r.batch_prompts,
        r.group_size,
        base.optim.lr,
        r.max_new_tokens,
        base.validation.num_prompts,
        base.validation.samples,
        base.validation.temperature,
        opts.val_every,
    );
    let _ = writeln!(
        s,
        "Wall time {:.0} s for everything, {} runs at a time; {hardware}.\n",
        wall_s, opts.jobs
    );
    let steps: Vec<u64> = curves
        .iter()
        .find(|c| !c.points.is_empty())
        .map(|c| c.points.iter().map(|p| p.step).collect())
        .unwrap_or_default();
    let shown = pick_steps(&steps, 7);
    let _ = writeln!(s, "## Accuracy at fixed steps (mean over seeds)\n");
    let _ = write!(s, "| algo |");
    for st in &shown {
        let _ = write!(s, " step {st} |");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "|---|{}", "---|".repeat(shown.len()));
    for c in curves {
        let _ = write!(s, "| {} |", c.algo);
        for st in &shown {
            let v = c
                .points
                .iter()
                .find(|p| p.step == *st)
                .map_or(f64::NAN, |p| p.mean);
            let _ = write!(s, " {} |", pct(v));
        }
        let _ = writeln!(s);
    }
    let grpo_final = curves
        .iter()
        .find(|c| c.algo == "grpo")
        .and_then(Curve::last)
        .map(|p| p.mean);
    let _ = writeln!(s, "\n## Summary\n");
    let _ = writeln!(
        s,
        "| algo | seeds | final (sd; min-max) | final greedy | final pass@K | peak (step) | mean after step 0 | steps to GRPO's final | w clip low | w clip high | ratio clip | wall s / run |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for c in curves {
        let mine: Vec<&RunSummary> = runs
            .iter()
            .filter(|r| r.algo == c.algo && r.error.is_none())
            .collect();
        let avg =
            |f: &dyn Fn(&RunSummary) -> f64| mean(&mine.iter().map(|r| f(r)).collect::<Vec<_>>());
        let (fin, greedy, pk) = c.last().map_or(("-".into(), "-".into(), "-".into()), |p| {
            (
                format!(
                    "{} ({}; {}-{})",
                    pct(p.mean),
                    pct(p.sd),
                    pct(p.min),
                    pct(p.max)
                ),
                pct(p.greedy),
                pct(p.pass_k),
            )
        });
        let peak = c
            .peak()
            .map_or("-".into(), |p| format!("{} ({})", pct(p.mean), p.step));
        let reach = match grpo_final.and_then(|g| c.steps_to_reach(g)) {
            Some(st) => st.to_string(),
            None => "never".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {fin} | {greedy} | {pk} | {peak} | {} | {reach} | {:.3} | {:.3} | {:.3} | {:.0} |",
            c.algo,
            c.seeds,
            pct(c.average_after_start()),
            avg(&|r| r.weight_clip_low_frac),
            avg(&|r| r.weight_clip_high_frac),
            avg(&|r| r.ratio_clip_frac),
            avg(&|r| r.wall_s),
        );
    }
    let failed: Vec<&RunSummary> = runs.iter().filter(|r| r.error.is_some()).collect();
    if !failed.is_empty() {
        let _ = writeln!(s, "\n## Failed runs\n");
        for r in failed {
            let _ = writeln!(
                s,
                "- {}-seed{}: {}",
                r.algo,
                r.seed,
                r.error.as_deref().unwrap_or("")
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(algo: &str, seed: u64, acc: &[(u64, f64)]) -> RunSummary {
        RunSummary {
            algo: algo.into(),
            seed,
            error: None,
            validation: acc.iter().map(|&(s, a)| (s, a, a / 2.0, a * 2.0)).collect(),
            final_train_reward: 0.0,
            weight_clip_low_frac: 0.0,
            weight_clip_high_frac: 0.0,
            ratio_clip_frac: 0.0,
            wall_s: 1.0,
        }
    }

    #[test]
    fn curves_average_over_seeds_with_spread() {
        let runs = vec![
            run("grpo", 0, &[(0, 0.2), (5, 0.3)]),
            run("grpo", 1, &[(0, 0.2), (5, 0.5)]),
            run("rlsd", 0, &[(0, 0.2), (5, 0.45)]),
        ];
        let c = curves(&runs, &[Algo::Grpo, Algo::Rlsd]);
        assert_eq!(c[0].seeds, 2);
        let p = &c[0].points[1];
        assert_eq!(p.step, 5);
        assert!((p.mean - 0.4).abs() < 1e-12);
        // sd of {0.3, 0.5} with n - 1: sqrt(0.02) = 0.141421...
        assert!((p.sd - 0.02f64.sqrt()).abs() < 1e-12);
        assert_eq!((p.min, p.max), (0.3, 0.5));
        assert!((p.greedy - 0.2).abs() < 1e-12);
        // GRPO's final mean is 0.4: RLSD reaches it at step 5, not at 0.
        assert_eq!(c[1].steps_to_reach(0.4), Some(5));
        assert_eq!(c[1].steps_to_reach(0.5), None);
        assert!((c[1].average_after_start() - 0.45).abs() < 1e-12);
        assert_eq!(c[0].peak().map(|p| p.step), Some(5));
    }

    #[test]
    fn pick_steps_keeps_both_ends() {
        let steps: Vec<u64> = (0..=20).map(|i| i * 5).collect();
        assert_eq!(pick_steps(&steps, 5), vec![0, 25, 50, 75, 100]);
        assert_eq!(pick_steps(&[0, 5], 5), vec![0, 5]);
    }

    #[test]
    fn failed_runs_are_left_out_of_curves() {
        let mut bad = run("grpo", 1, &[]);
        bad.error = Some("boom".into());
        let runs = vec![run("grpo", 0, &[(0, 0.1)]), bad];
        let c = curves(&runs, &[Algo::Grpo]);
        assert_eq!(c[0].seeds, 1);
        assert_eq!(c[0].points.len(), 1);
    }
}
