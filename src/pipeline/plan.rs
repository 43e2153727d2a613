//! [`StepPlan`]: the one place that decides what a step is: its prompts,
//! lambda, learning rate, sampling seed, the policy and teacher versions it
//! may use, and whether it needs the teacher at all.

use crate::config::RunConfig;
use crate::data::Example;
use crate::rlsd::{
    lambda_at, lr_at, AdaptiveLambda, AdaptiveRule, Algo, AlgoConfig, LambdaSchedule, SignalInputs,
};
use crate::stats::StepStats;

/// The order for one step: which prompts, with which constants.
#[derive(Debug, Clone)]
pub struct StepPlan {
    /// Step number, counted from 1.
    pub step: u64,
    /// The `B` prompts of this step.
    pub examples: Vec<Example>,
    /// lambda of the RLSD schedule at this step.
    pub lambda: f64,
    /// Learning rate at this step.
    pub lr: f64,
    /// Oldest policy version the sampler may use (bounds staleness).
    pub min_version: u64,
    /// Seed of this step's sampling RNG (a function of the run seed and the step).
    pub seed: u64,
    /// The data cursor after these prompts were drawn (for checkpoints).
    pub cursor_after: serde_json::Value,
    /// Whether the teacher-scorer runs at this step ([`needs_teacher_pass`]).
    pub needs_teacher: bool,
    /// Teacher weights version this step must be scored with
    /// ([`required_teacher_version`] of `min_version`).
    pub teacher_version: u64,
    /// SDPO's feedback candidates per prompt sampled besides the group
    /// (`algo.sdpo_num_candidates` for `sdpo`, else 0).
    pub sdpo_candidates: usize,
    /// Where `examples` sit in the step's global batch: the index of the
    /// first among `global_prompts` prompts (a data-parallel rank's share;
    /// `0` and `examples.len()` for the whole batch). Each response's
    /// sampling seed comes from its global position ([`StepPlan::response_seed`]),
    /// so a job samples the same responses whatever its number of ranks.
    pub first_prompt: usize,
    /// Number of prompts in the step's global batch.
    pub global_prompts: usize,
}

impl StepPlan {
    /// The plan of step `step` (from 1) over `examples` for `cfg`, letting the
    /// sampler run up to `max_staleness` policy versions behind the optimizer
    /// (0 = strictly on-policy, as the sequential loop is). `cursor_after` is
    /// the data cursor after `examples` were drawn.
    pub fn new(
        cfg: &RunConfig,
        step: u64,
        max_staleness: u64,
        examples: Vec<Example>,
        cursor_after: serde_json::Value,
    ) -> StepPlan {
        let lambda = lambda_at(step, &cfg.algo);
        let min_version = step.saturating_sub(1).saturating_sub(max_staleness);
        StepPlan {
            step,
            lambda,
            lr: lr_at(step, &cfg.optim),
            min_version,
            seed: step_seed(cfg.runtime.seed, step),
            cursor_after,
            needs_teacher: needs_teacher_pass(&cfg.algo, lambda),
            teacher_version: required_teacher_version(
                min_version,
                cfg.algo
                    .teacher_sync_interval(cfg.runtime.teacher_sync_interval),
            ),
            sdpo_candidates: match cfg.algo.algo {
                Algo::Sdpo => cfg.algo.sdpo_num_candidates,
                _ => 0,
            },
            first_prompt: 0,
            global_prompts: examples.len(),
            examples,
        }
    }

    /// This plan as the share of a step whose global batch has
    /// `global_prompts` prompts, of which `examples` start at `first_prompt`
    /// (a data-parallel rank's contiguous groups).
    pub fn share_of(mut self, first_prompt: usize, global_prompts: usize) -> StepPlan {
        self.first_prompt = first_prompt;
        self.global_prompts = global_prompts;
        self
    }

    /// The sampling seed of response `sample` of the plan's prompt `prompt`,
    /// from its position in the step's global batch: `sample < group_size` is
    /// the group's `sample`-th response, `group_size + c` SDPO's `c`-th
    /// feedback candidate. The stream is `prompt_seed(seed, i)` with `i` the
    /// response's index in the whole step's rollout order (every group's
    /// responses prompt-major, then every prompt's candidates), so a one-process
    /// run keeps its seeds and a rank holding prompts `first_prompt..` samples
    /// exactly what the one-process run samples for them.
    pub fn response_seed(&self, group_size: usize, prompt: usize, sample: usize) -> u64 {
        let p = (self.first_prompt + prompt) as u64;
        let (g, s) = (group_size as u64, sample as u64);
        let index = if s < g {
            p * g + s
        } else {
            self.global_prompts as u64 * g + p * self.sdpo_candidates as u64 + (s - g)
        };
        crate::model::prompt_seed(self.seed, index)
    }
}

impl StepPlan {
    /// This plan under `algo.lambda_schedule`: unchanged for `"fixed"`; for
    /// `"adaptive"`, lambda is `state.lambda` (the adaptive schedule's state
    /// after the steps it has observed), and the teacher pass follows it.
    ///
    /// The callers hand the state after step `min_version`: with
    /// `max_staleness = 0` step `step - 1` (sequential loop and actor
    /// runtime alike); with staleness `s >= 1` step `step - 1 - s`, which
    /// the scheduler reads from the commit board, so lambda does not depend
    /// on how far the optimizer has got when the step is issued.
    pub fn with_schedule(mut self, algo: &AlgoConfig, state: &AdaptiveLambda) -> StepPlan {
        if algo.lambda_schedule == LambdaSchedule::Adaptive {
            self.lambda = state.lambda;
            self.needs_teacher = needs_teacher_pass(algo, state.lambda);
        }
        self
    }
}

/// Feed committed step `stats` to the adaptive lambda schedule's `state`
/// (`AdaptiveLambda::observe` on the logged values its signals read).
pub fn observe_step(state: &mut AdaptiveLambda, rule: &AdaptiveRule, stats: &StepStats) {
    state.observe(
        rule,
        &SignalInputs {
            step: stats.step,
            skipped: stats.skipped,
            num_tokens: stats.num_tokens,
            lambda: stats.lambda,
            accuracy: stats.accuracy,
            delta_mean_correct: stats.delta_mean_correct,
            weight_clip_frac: stats.weight_clip_frac,
        },
    );
}

/// Seed of step `step`'s sampling RNG: a SplitMix64 mix of the run seed and the step,
/// so a re-issued step samples exactly what the first attempt did.
pub fn step_seed(run_seed: u64, step: u64) -> u64 {
    let mut z = run_seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Whether a step needs the teacher at all: every algorithm but GRPO does,
/// except RLSD once lambda has decayed to 0 (then it is exactly GRPO, and the
/// teacher forward is skipped).
pub fn needs_teacher_pass(algo: &AlgoConfig, lambda: f64) -> bool {
    algo.algo.at_lambda(lambda).needs_teacher()
}

/// Teacher weights version a step whose policy is at least `min_version`
/// requires: the latest multiple of the sync interval (with
/// `max_staleness = 0`, exactly the version a sequential loop would use).
pub fn required_teacher_version(min_version: u64, interval: u64) -> u64 {
    (min_version / interval.max(1)) * interval.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn teacher_pass_is_skipped_only_when_it_cannot_matter() {
        let cfg = |a| AlgoConfig::with_algo(a);
        assert!(needs_teacher_pass(&cfg(Algo::Rlsd), 0.3));
        assert!(!needs_teacher_pass(&cfg(Algo::Rlsd), 0.0));
        assert!(!needs_teacher_pass(&cfg(Algo::Grpo), 0.3));
        assert!(needs_teacher_pass(&cfg(Algo::Opsd), 0.0));
        assert!(needs_teacher_pass(&cfg(Algo::Cepo), 0.0));
    }

    #[test]
    fn step_seeds_differ_and_repeat() {
        assert_eq!(step_seed(7, 3), step_seed(7, 3));
        assert_ne!(step_seed(7, 3), step_seed(7, 4));
        assert_ne!(step_seed(7, 3), step_seed(8, 3));
    }

    #[test]
    fn teacher_version_is_latest_multiple_of_interval() {
        // interval 10: steps 1..=10 use version 0, steps 11..=20 version 10.
        assert_eq!(required_teacher_version(0, 10), 0);
        assert_eq!(required_teacher_version(9, 10), 0);
        assert_eq!(required_teacher_version(10, 10), 10);
        // interval 1 is the live policy.
        assert_eq!(required_teacher_version(7, 1), 7);
    }

    #[test]
    fn plan_bounds_versions_by_staleness() {
        let mut cfg = RunConfig::default();
        cfg.runtime.teacher_sync_interval = 2;
        // Step 5 on-policy: policy 4, teacher 4; one version stale: policy 3, teacher 2.
        let p = StepPlan::new(&cfg, 5, 0, Vec::new(), serde_json::Value::Null);
        assert_eq!((p.min_version, p.teacher_version), (4, 4));
        let p = StepPlan::new(&cfg, 5, 1, Vec::new(), serde_json::Value::Null);
        assert_eq!((p.min_version, p.teacher_version), (3, 2));
        // Step 1 never underflows.
        let p = StepPlan::new(&cfg, 1, 3, Vec::new(), serde_json::Value::Null);
        assert_eq!((p.min_version, p.teacher_version), (0, 0));
        assert_eq!(p.seed, step_seed(cfg.runtime.seed, 1));
    }

    /// The seeds of every response of a plan, in the rollout's order
    /// (groups prompt-major, then the candidates).
    fn rollout_seeds(p: &StepPlan, g: usize) -> Vec<u64> {
        let n = p.examples.len();
        let mut seeds: Vec<u64> = (0..n)
            .flat_map(|i| (0..g).map(move |j| (i, j)))
            .map(|(i, j)| p.response_seed(g, i, j))
            .collect();
        for i in 0..n {
            seeds.extend((0..p.sdpo_candidates).map(|c| p.response_seed(g, i, g + c)));
        }
        seeds
    }

    #[test]
    fn response_seeds_follow_the_global_position_whatever_the_shares() {
        let mut cfg = RunConfig::default();
        cfg.algo.algo = Algo::Sdpo;
        cfg.algo.sdpo_num_candidates = 2;
        let g = 4;
        let ex = |i: usize| Example::new(format!("p{i}"), "q", "a", "a");
        let whole = StepPlan::new(&cfg, 3, 0, (0..5).map(ex).collect(), Value::Null);
        // One process: response i of the rollout keeps the stream
        // prompt_seed(step seed, i), as before shares existed.
        let seeds = rollout_seeds(&whole, g);
        assert_eq!(seeds, crate::model::prompt_seeds(whole.seed, 5 * (g + 2)));
        // Ranks holding prompts 0..3 and 3..5: each response has the seed
        // of the same prompt and sample in the whole batch.
        for (start, end) in [(0, 3), (3, 5)] {
            let share = StepPlan::new(&cfg, 3, 0, (start..end).map(ex).collect(), Value::Null)
                .share_of(start, 5);
            for i in 0..end - start {
                for j in 0..g + 2 {
                    assert_eq!(
                        share.response_seed(g, i, j),
                        whole.response_seed(g, start + i, j),
                        "prompt {} sample {j}",
                        start + i
                    );
                }
            }
        }
        // All distinct within the step; another step gets other streams.
        let mut sorted = seeds.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), seeds.len());
        let next = StepPlan::new(&cfg, 4, 0, (0..5).map(ex).collect(), Value::Null);
        assert_ne!(next.response_seed(g, 0, 0), whole.response_seed(g, 0, 0));
    }

    #[test]
    fn adaptive_schedule_takes_lambda_from_the_state() {
        let mut cfg = RunConfig::default();
        let state = AdaptiveLambda {
            lambda: 0.0,
            streak: 0,
            observed_through: 4,
        };
        // Fixed: the state is ignored (step 5 of a 50-step decay from 0.5).
        let p = StepPlan::new(&cfg, 5, 0, Vec::new(), serde_json::Value::Null)
            .with_schedule(&cfg.algo, &state);
        assert_eq!(
            (p.lambda, p.needs_teacher),
            (0.5 * (1.0 - 5.0 / 50.0), true)
        );
        // Adaptive: lambda 0 from the state, so the teacher pass is skipped.
        cfg.algo.lambda_schedule = LambdaSchedule::Adaptive;
        let p = StepPlan::new(&cfg, 5, 0, Vec::new(), serde_json::Value::Null)
            .with_schedule(&cfg.algo, &state);
        assert_eq!((p.lambda, p.needs_teacher), (0.0, false));
        let p = StepPlan::new(&cfg, 5, 0, Vec::new(), serde_json::Value::Null).with_schedule(
            &cfg.algo,
            &AdaptiveLambda {
                lambda: 0.25,
                ..state
            },
        );
        assert_eq!((p.lambda, p.needs_teacher), (0.25, true));
    }
}
