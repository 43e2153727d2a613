//! Batched, async rewards: a whole group of responses to one prompt at once.
//!
//! [`GroupReward`] scores the `G` responses of one prompt together, so a
//! reward can rank them, compare pairs, or send one request to a service for
//! the group. Any synchronous [`Verifier`] becomes one through
//! [`VerifierReward`] (it runs the group on a blocking thread, so nothing that
//! exists breaks). [`WeightedRewards`] sums several reward functions with
//! weights and keeps each function's scores for the metrics
//! (`reward/<name>`), as TRL and veRL log them.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::environment::BoxFuture;
use crate::data::Example;
use crate::error::{Error, Result};
use crate::verify::{Verdict, Verifier};

/// A reward over the group of responses to one example.
pub trait GroupReward: Send + Sync {
    /// A short name, used in metrics (`reward/<name>`).
    fn name(&self) -> &str;

    /// One verdict per response, in order. Must not fail: a response that
    /// cannot be judged scores 0 with a reason.
    fn score_group<'a>(
        &'a self,
        example: &'a Example,
        responses: &'a [String],
    ) -> BoxFuture<'a, Vec<Verdict>>;
}

/// Adapter: a synchronous [`Verifier`] as a [`GroupReward`], scoring the group
/// on one blocking thread. A verifier that panics scores 0 ("panicked").
#[derive(Clone)]
pub struct VerifierReward {
    name: String,
    verifier: Arc<dyn Verifier>,
}

impl std::fmt::Debug for VerifierReward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierReward")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl VerifierReward {
    /// Wrap `verifier` under `name`.
    pub fn new(name: impl Into<String>, verifier: Arc<dyn Verifier>) -> VerifierReward {
        VerifierReward {
            name: name.into(),
            verifier,
        }
    }
}

fn verify_guarded(v: &dyn Verifier, example: &Example, response: &str) -> Verdict {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| v.verify(example, response)))
        .unwrap_or_else(|_| Verdict::wrong("verifier panicked"))
}

impl GroupReward for VerifierReward {
    fn name(&self) -> &str {
        &self.name
    }

    fn score_group<'a>(
        &'a self,
        example: &'a Example,
        responses: &'a [String],
    ) -> BoxFuture<'a, Vec<Verdict>> {
        let verifier = Arc::clone(&self.verifier);
        let example = example.clone();
        let owned = responses.to_vec();
        let n = responses.len();
        Box::pin(async move {
            let job = tokio::task::spawn_blocking(move || {
                owned
                    .iter()
                    .map(|r| verify_guarded(verifier.as_ref(), &example, r))
                    .collect::<Vec<_>>()
            });
            match job.await {
                Ok(v) => v,
                Err(e) => vec![Verdict::wrong(format!("verifier task failed: {e}")); n],
            }
        })
    }
}

/// The command verifier scores a group natively: with `worker = true`, every
/// response of the group is in flight to the worker at once.
impl GroupReward for crate::verify::CommandVerifier {
    fn name(&self) -> &str {
        "command"
    }

    fn score_group<'a>(
        &'a self,
        example: &'a Example,
        responses: &'a [String],
    ) -> BoxFuture<'a, Vec<Verdict>> {
        Box::pin(self.verify_group(example, responses))
    }
}

/// The group reward a `[verifier]` section describes: the command verifier
/// scores groups natively (without a format reward); any other verifier goes
/// through [`VerifierReward`] under the name `accuracy`.
pub fn build_group_reward(cfg: &crate::verify::VerifierConfig) -> Result<Box<dyn GroupReward>> {
    if cfg.kind == crate::verify::VerifierKind::Command && cfg.format.is_none() {
        return Ok(Box::new(crate::verify::CommandVerifier::new(
            cfg.command.clone(),
        )?));
    }
    let v: Arc<dyn Verifier> = Arc::from(crate::verify::build_verifier(cfg)?);
    Ok(Box::new(VerifierReward::new("accuracy", v)))
}

/// The scores of one group under [`WeightedRewards`].
#[derive(Debug, Clone, PartialEq)]
pub struct GroupScores {
    /// The combined verdict of each response: `reward = sum_k w_k * r_k`;
    /// `correct` and `reason` come from the first (accuracy) function.
    pub verdicts: Vec<Verdict>,
    /// Each function's unweighted rewards, by name, aligned with `verdicts`.
    pub per_function: BTreeMap<String, Vec<f32>>,
}

impl GroupScores {
    /// Mean unweighted reward of each function over the group, as
    /// `reward/<name>` metrics.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        self.per_function
            .iter()
            .map(|(name, r)| {
                let mean = if r.is_empty() {
                    0.0
                } else {
                    r.iter().map(|&x| f64::from(x)).sum::<f64>() / r.len() as f64
                };
                (format!("reward/{name}"), mean)
            })
            .collect()
    }
}

/// A weighted sum of reward functions.
pub struct WeightedRewards {
    parts: Vec<(f32, Box<dyn GroupReward>)>,
}

impl std::fmt::Debug for WeightedRewards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<_> = self.parts.iter().map(|(w, r)| (r.name(), *w)).collect();
        f.debug_struct("WeightedRewards")
            .field("parts", &parts)
            .finish()
    }
}

impl WeightedRewards {
    /// `(weight, function)` pairs; the first is the accuracy reward. Names
    /// must be distinct and weights finite.
    pub fn new(parts: Vec<(f32, Box<dyn GroupReward>)>) -> Result<WeightedRewards> {
        if parts.is_empty() {
            return Err(Error::config("reward", "no reward functions"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (w, r) in &parts {
            if !w.is_finite() {
                return Err(Error::config(
                    format!("reward.{}.weight", r.name()),
                    format!("{w} is not finite"),
                ));
            }
            if !seen.insert(r.name().to_string()) {
                return Err(Error::config(
                    format!("reward.{}", r.name()),
                    "two reward functions with this name",
                ));
            }
        }
        Ok(WeightedRewards { parts })
    }

    /// Score one group with every function (in order) and combine.
    pub async fn score_group(&self, example: &Example, responses: &[String]) -> GroupScores {
        let n = responses.len();
        let mut verdicts: Vec<Verdict> = Vec::new();
        let mut per_function = BTreeMap::new();
        for (k, (w, f)) in self.parts.iter().enumerate() {
            let mut got = f.score_group(example, responses).await;
            if got.len() != n {
                got = vec![
                    Verdict::wrong(format!(
                        "reward `{}` returned {} verdicts for {n} responses",
                        f.name(),
                        got.len()
                    ));
                    n
                ];
            }
            let rewards: Vec<f32> = got
                .iter()
                .map(|v| if v.reward.is_finite() { v.reward } else { 0.0 })
                .collect();
            if k == 0 {
                verdicts = got
                    .into_iter()
                    .zip(&rewards)
                    .map(|(v, &r)| Verdict { reward: w * r, ..v })
                    .collect();
            } else {
                for (v, &r) in verdicts.iter_mut().zip(&rewards) {
                    v.reward += w * r;
                }
            }
            per_function.insert(f.name().to_string(), rewards);
        }
        GroupScores {
            verdicts,
            per_function,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Contains(&'static str);
    impl Verifier for Contains {
        fn verify(&self, _: &Example, response: &str) -> Verdict {
            if response.contains(self.0) {
                Verdict::correct(format!("has {}", self.0))
            } else {
                Verdict::wrong(format!("no {}", self.0))
            }
        }
    }

    struct Panics;
    impl Verifier for Panics {
        fn verify(&self, _: &Example, _: &str) -> Verdict {
            panic!("on purpose")
        }
    }

    /// Ranks the group: the shortest response gets 1, the others 0.
    struct Shortest;
    impl GroupReward for Shortest {
        fn name(&self) -> &str {
            "shortest"
        }
        fn score_group<'a>(
            &'a self,
            _: &'a Example,
            responses: &'a [String],
        ) -> BoxFuture<'a, Vec<Verdict>> {
            Box::pin(async move {
                let min = responses.iter().map(String::len).min().unwrap_or(0);
                responses
                    .iter()
                    .map(|r| {
                        if r.len() == min {
                            Verdict::correct("shortest")
                        } else {
                            Verdict::wrong("longer")
                        }
                    })
                    .collect()
            })
        }
    }

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn weighted_sum_keeps_each_functions_scores() {
        let ex = Example::new("q", "p", "42", "42");
        let rewards = WeightedRewards::new(vec![
            (
                1.0,
                Box::new(VerifierReward::new("accuracy", Arc::new(Contains("42")))),
            ),
            (0.5, Box::new(Shortest)),
        ])
        .unwrap();
        let responses: Vec<String> = ["42", "it is 42", "41"].map(String::from).to_vec();
        let s = block(rewards.score_group(&ex, &responses));
        // accuracy [1, 1, 0]; shortest ("42" and "41" have length 2) [1, 0, 1]
        let total: Vec<f32> = s.verdicts.iter().map(|v| v.reward).collect();
        assert_eq!(total, vec![1.5, 1.0, 0.5]);
        assert!(!s.verdicts[2].correct);
        assert_eq!(s.verdicts[0].reason, "has 42");
        assert_eq!(s.per_function["shortest"], vec![1.0, 0.0, 1.0]);
        let m = s.metrics();
        assert!((m["reward/accuracy"] - 2.0 / 3.0).abs() < 1e-12);
        assert!((m["reward/shortest"] - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn a_panicking_verifier_scores_zero() {
        let ex = Example::new("q", "p", "42", "42");
        let r = VerifierReward::new("bad", Arc::new(Panics));
        let v = block(async {
            // spawn_blocking needs a multi-thread-capable runtime handle; the
            // current-thread runtime provides a blocking pool too.
            r.score_group(&ex, &["x".to_string(), "y".to_string()])
                .await
        });
        assert_eq!(v.len(), 2);
        assert!(v
            .iter()
            .all(|v| v.reward == 0.0 && v.reason == "verifier panicked"));
    }

    #[test]
    fn duplicate_names_and_bad_weights_are_refused() {
        let a = || -> Box<dyn GroupReward> { Box::new(Shortest) };
        let e = WeightedRewards::new(vec![(1.0, a()), (1.0, a())]).unwrap_err();
        assert!(e.to_string().contains("reward.shortest"), "{e}");
        let e = WeightedRewards::new(vec![(f32::NAN, a())]).unwrap_err();
        assert!(e.to_string().contains("reward.shortest.weight"), "{e}");
        assert!(WeightedRewards::new(vec![]).is_err());
    }
}
