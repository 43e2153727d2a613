//! The one place that assembles a step's [`StepStats`]: the train step's
//! numbers plus what the earlier stages know (rewards, accuracy, lengths,
//! versions, stage timings, sampled completions).

use super::batch::CreditBatch;
use super::batch::Rollout;
use crate::model::Tokenizer;
use crate::rlsd::AlgoConfig;
use crate::stats::{EpisodeStats, StepStats};
use crate::train::TrainBatch;

/// The full stats of a trained step: `trained` is what [`crate::train::train_step`]
/// returned for `tb`, which was built from `batch`; `completions` responses
/// are sampled for the completions log (`observe.completions_per_step`).
pub fn step_stats(
    batch: &CreditBatch,
    tb: &TrainBatch,
    mut trained: StepStats,
    algo: &AlgoConfig,
    tokenizer: Option<&Tokenizer>,
    completions: usize,
) -> StepStats {
    let rollouts = batch.rollouts();
    let scores = batch.scores();
    let plan = batch.plan();
    let n = rollouts.len().max(1) as f64;
    let s = &mut trained;
    s.step = plan.step;
    s.reward_mean = scores.iter().map(|x| x.reward as f64).sum::<f64>() / n;
    s.accuracy = scores.iter().filter(|x| x.correct).count() as f64 / n;
    s.response_len_mean = rollouts
        .iter()
        .map(|r| r.response_ids.len() as f64)
        .sum::<f64>()
        / n;
    s.truncation_rate = rollouts
        .iter()
        .filter(|r| !r.stopped_on_eos && !r.stopped_on_stop_string)
        .count() as f64
        / n;
    s.leakage_rate = super::leakage::leakage_rate(
        rollouts
            .iter()
            .map(|r| (&plan.examples[r.group], r.response_text.as_str())),
    );
    s.policy_version = batch.policy_version();
    s.teacher_version = batch.taught.teacher.version;
    // A timed-out score is the verifier's, or for an episode its environment's.
    let (env, verifier): (Vec<_>, Vec<_>) = rollouts
        .iter()
        .zip(scores)
        .filter(|(_, x)| x.timed_out)
        .partition(|(r, _)| r.episode.is_some());
    s.verifier_timeouts = verifier.len() as u64;
    s.env_failures = env.len() as u64;
    s.episodes = episode_stats(rollouts);
    s.version_lag = (plan.step - 1).saturating_sub(batch.policy_version());
    let t = batch.timings();
    s.timings.generate_s = t.generate_s;
    s.timings.verify_s = t.verify_s;
    s.timings.teacher_s = t.teacher_s;
    s.timings.credit_s = t.credit_s;
    s.completions = super::records::sample_completions(batch, tb, algo, tokenizer, completions);
    trained
}

/// Tool use and turns over the step's episodes (`None` without episodes).
fn episode_stats(rollouts: &[Rollout]) -> Option<EpisodeStats> {
    let episodes: Vec<_> = rollouts.iter().filter_map(|r| r.episode.as_ref()).collect();
    if episodes.is_empty() {
        return None;
    }
    let n = episodes.len() as f64;
    let mean = |f: &dyn Fn(&super::batch::EpisodeRollout) -> f64| {
        episodes.iter().map(|e| f(e)).sum::<f64>() / n
    };
    Some(EpisodeStats {
        tool_call_rate: mean(&|e| f64::from(u8::from(e.tool_calls > 0))),
        tool_calls_mean: mean(&|e| e.tool_calls as f64),
        turns_mean: mean(&|e| e.turns as f64),
    })
}
