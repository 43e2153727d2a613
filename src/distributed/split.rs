//! Split placement (`runtime.placement = "split"`): the last
//! `runtime.sampler_ranks` ranks of a data-parallel job only generate and
//! verify; the others (the learners, ranks `0..L`) score with the teacher,
//! assign credit and train, all-reducing gradients among themselves. Every
//! step, on the job's whole group and in this order:
//!
//! 1. each sampler generates the groups `group_range(B, S, s)` of the step's
//!    `B` prompts with the seed a colocated rank `s` would use, verifies
//!    them, and broadcasts them ([`exchange`]: a length, then the bytes of a
//!    [`WireBatch`]; one broadcast per sampler, so every rank learns every
//!    sampler's responses through the engine's own collective);
//! 2. each learner keeps the groups `group_range(B, L, l)` of the step
//!    ([`learner_batch`]) and trains on them (the learners' sub-group);
//! 3. learner 0 broadcasts the new weights to every rank
//!    ([`super::sync::broadcast_params`]), so the samplers generate the next
//!    step with them (strictly on-policy).
//!
//! With `S` samplers and `L` learners the run computes what a colocated run
//! of `S` ranks samples and of `L` ranks trains; with `S = L` it equals a
//! colocated run of that many ranks (tests/dist_split.rs).

use super::ProcessGroup;
use crate::config::{Placement, RunConfig};
use crate::error::{Error, Result};
use crate::pipeline::{step_seed, Rollout, RolloutBatch, Score, ScoredBatch, StepPlan};
use crate::stats::StageTimings;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use tch::{Device, Kind, Tensor};

/// What one rank of a data-parallel job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Scores, assigns credit and trains: learner `index` of `learners`
    /// (ranks `0..learners`). Under colocated placement every rank is a
    /// learner that also samples its own share.
    Learner {
        /// This learner, `0..learners` (its rank).
        index: usize,
        /// Number of learner ranks.
        learners: usize,
        /// Sampler ranks after the learners (0: colocated).
        samplers: usize,
    },
    /// Generates and verifies: sampler `index` of `samplers` (rank
    /// `learners + index`).
    Sampler {
        /// This sampler, `0..samplers`.
        index: usize,
        /// Number of sampler ranks.
        samplers: usize,
        /// Number of learner ranks before them.
        learners: usize,
    },
}

impl Role {
    /// The role of `rank` in a job of `world` ranks under `cfg`'s placement.
    pub fn of(cfg: &RunConfig, rank: usize, world: usize) -> Result<Role> {
        if cfg.runtime.placement == Placement::Colocated {
            return Ok(Role::Learner {
                index: rank,
                learners: world,
                samplers: 0,
            });
        }
        let samplers = cfg.runtime.sampler_ranks;
        if samplers == 0 || samplers >= world {
            return Err(Error::config(
                "runtime.sampler_ranks",
                format!(
                    "{samplers} sampler rank(s) in a job of {world} leave no learner \
                     (split placement needs at least one of each: --nproc {})",
                    samplers + 1
                ),
            ));
        }
        let learners = world - samplers;
        Ok(if rank < learners {
            Role::Learner {
                index: rank,
                learners,
                samplers,
            }
        } else {
            Role::Sampler {
                index: rank - learners,
                samplers,
                learners,
            }
        })
    }

    /// Whether responses come from sampler ranks.
    pub fn is_split(&self) -> bool {
        !matches!(self, Role::Learner { samplers: 0, .. })
    }

    /// `learner` or `sampler`, for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Learner { .. } => "learner",
            Role::Sampler { .. } => "sampler",
        }
    }
}

/// The sampling seed of step `step` for the rank that samples share
/// `index` (a colocated rank, or a sampler): the same on both placements,
/// so a split run samples what a colocated run does.
pub fn share_seed(cfg: &RunConfig, index: usize, step: u64) -> u64 {
    step_seed(
        cfg.runtime.seed ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407),
        step,
    )
}

/// One response and its score, as a sampler sends it. Floats travel as
/// their bits so the learner sees exactly what was sampled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireRollout {
    /// Index of the response's group among the step's `B` prompts.
    group: usize,
    prompt_ids: Vec<i64>,
    response_ids: Vec<i64>,
    response_text: String,
    logprob_bits: Vec<u32>,
    stopped_on_eos: bool,
    stopped_on_stop_string: bool,
    reward_bits: u32,
    correct: bool,
    reason: String,
    timed_out: bool,
}

/// One sampler's share of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireBatch {
    /// The step.
    step: u64,
    /// Policy version that generated the responses.
    policy_version: u64,
    /// Seconds the sampler spent generating and verifying.
    generate_s: f64,
    verify_s: f64,
    rollouts: Vec<WireRollout>,
}

impl WireBatch {
    /// A sampler's verified share whose first group is group `first` of
    /// the step.
    pub fn from_scored(scored: &ScoredBatch, first: usize) -> WireBatch {
        let r = &scored.rollout;
        let rollouts = r
            .rollouts
            .iter()
            .zip(&scored.scores)
            .map(|(x, s)| WireRollout {
                group: first + x.group,
                prompt_ids: x.prompt_ids.clone(),
                response_ids: x.response_ids.clone(),
                response_text: x.response_text.clone(),
                logprob_bits: x.sampling_logprobs.iter().map(|v| v.to_bits()).collect(),
                stopped_on_eos: x.stopped_on_eos,
                stopped_on_stop_string: x.stopped_on_stop_string,
                reward_bits: s.reward.to_bits(),
                correct: s.correct,
                reason: s.reason.clone(),
                timed_out: s.timed_out,
            })
            .collect();
        WireBatch {
            step: r.plan.step,
            policy_version: r.policy_version,
            generate_s: r.timings.generate_s,
            verify_s: r.timings.verify_s,
            rollouts,
        }
    }

    fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| {
            Error::Distributed(format!("encoding step {}'s responses: {e}", self.step))
        })
    }

    fn decode(bytes: &[u8], from_rank: usize) -> Result<WireBatch> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::Distributed(format!(
                "responses from sampler rank {from_rank} are garbled: {e}"
            ))
        })
    }
}

/// Step 1 on every rank of the job's group `world`: sampler `s` (rank
/// `learners + s`) sends `mine`, every rank receives every sampler's batch,
/// in sampler order. Learners pass `None`. Tensors travel on `device`
/// (NCCL moves only device memory).
pub fn exchange(
    world: &dyn ProcessGroup,
    learners: usize,
    samplers: usize,
    mine: Option<&WireBatch>,
    device: Device,
) -> Result<Vec<WireBatch>> {
    let me = world.rank();
    let bytes = mine.map(WireBatch::encode).transpose()?;
    let mut out = Vec::with_capacity(samplers);
    for s in 0..samplers {
        let root = learners + s;
        let sending = me == root;
        let own = if sending {
            Some(bytes.as_deref().ok_or_else(|| {
                Error::Distributed(format!("sampler rank {root} has no responses to send"))
            })?)
        } else {
            None
        };
        let len = Tensor::from_slice(&[own.map_or(0, |b| b.len() as i64)]).f_to_device(device)?;
        world.broadcast(std::slice::from_ref(&len), root)?;
        let n = len.f_to_device(Device::Cpu)?.f_int64_value(&[0])?;
        let n = usize::try_from(n)
            .map_err(|_| Error::Distributed(format!("sampler rank {root} announced {n} bytes")))?;
        let buf = match own {
            Some(b) => Tensor::from_slice(b).f_to_device(device)?,
            None => Tensor::f_zeros([n as i64], (Kind::Uint8, device))?,
        };
        world.broadcast(std::slice::from_ref(&buf), root)?;
        if sending {
            out.push(
                mine.cloned()
                    .unwrap_or_else(|| unreachable!("checked above")),
            );
        } else {
            let got = Vec::<u8>::try_from(buf.f_to_device(Device::Cpu)?)?;
            out.push(WireBatch::decode(&got, root)?);
        }
    }
    Ok(out)
}

/// Step 2 on learner `l` of `learners`: its share of the step from every
/// sampler's batch, as a verified batch over `plan` (whose examples are the
/// learner's groups, `range` of the step's `groups`). Responses must come for
/// exactly those groups, `group_size` each.
pub fn learner_batch(
    plan: StepPlan,
    range: Range<usize>,
    groups: usize,
    group_size: usize,
    batches: Vec<WireBatch>,
) -> Result<ScoredBatch> {
    let step = plan.step;
    let mut timings = StageTimings::default();
    let mut version = None;
    let mut rollouts = Vec::with_capacity(range.len() * group_size);
    let mut scores = Vec::with_capacity(rollouts.capacity());
    let mut counts = vec![0usize; groups];
    for b in batches {
        if b.step != step {
            return Err(Error::Distributed(format!(
                "a sampler sent step {}'s responses during step {step}",
                b.step
            )));
        }
        timings.generate_s = timings.generate_s.max(b.generate_s);
        timings.verify_s = timings.verify_s.max(b.verify_s);
        for r in b.rollouts {
            let Some(count) = counts.get_mut(r.group) else {
                return Err(Error::Distributed(format!(
                    "step {step}: a sampler sent group {} of {groups}",
                    r.group
                )));
            };
            *count += 1;
            version = Some(b.policy_version);
            if !range.contains(&r.group) {
                continue;
            }
            rollouts.push(Rollout {
                group: r.group - range.start,
                prompt_ids: r.prompt_ids,
                response_ids: r.response_ids,
                response_text: r.response_text,
                sampling_logprobs: r.logprob_bits.into_iter().map(f32::from_bits).collect(),
                stopped_on_eos: r.stopped_on_eos,
                stopped_on_stop_string: r.stopped_on_stop_string,
                episode: None,
            });
            scores.push(Score {
                reward: f32::from_bits(r.reward_bits),
                correct: r.correct,
                reason: r.reason,
                timed_out: r.timed_out,
            });
        }
    }
    if let Some(g) = counts.iter().position(|&c| c != group_size) {
        return Err(Error::Distributed(format!(
            "step {step}: the samplers sent {} responses for group {g}, expected {group_size}",
            counts[g]
        )));
    }
    let rolled = RolloutBatch {
        plan,
        policy_version: version.unwrap_or(step.saturating_sub(1)),
        rollouts,
        timings,
    };
    ScoredBatch::new(rolled, scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(split: bool, samplers: usize) -> RunConfig {
        let mut c = RunConfig::default();
        if split {
            c.runtime.placement = Placement::Split;
            c.runtime.sampler_ranks = samplers;
        }
        c
    }

    #[test]
    fn roles_put_learners_first_and_samplers_last() {
        let c = cfg(true, 2);
        assert_eq!(
            Role::of(&c, 1, 4).unwrap(),
            Role::Learner {
                index: 1,
                learners: 2,
                samplers: 2
            }
        );
        assert_eq!(
            Role::of(&c, 3, 4).unwrap(),
            Role::Sampler {
                index: 1,
                samplers: 2,
                learners: 2
            }
        );
        assert!(Role::of(&c, 3, 4).unwrap().is_split());
        let co = Role::of(&cfg(false, 2), 3, 4).unwrap();
        assert!(!co.is_split());
        assert_eq!(co.name(), "learner");
    }

    #[test]
    fn split_without_a_learner_is_refused_by_key() {
        let err = Role::of(&cfg(true, 2), 0, 2).unwrap_err().to_string();
        assert!(err.contains("runtime.sampler_ranks"), "{err}");
        assert!(err.contains("leave no learner"), "{err}");
    }

    fn scored(step: u64, groups: usize, g: usize) -> ScoredBatch {
        let plan = StepPlan::new(
            &RunConfig::default(),
            step,
            0,
            Vec::new(),
            serde_json::json!(0),
        );
        let mut rollouts = Vec::new();
        let mut scores = Vec::new();
        for group in 0..groups {
            for i in 0..g {
                rollouts.push(Rollout {
                    group,
                    prompt_ids: vec![1, 2, group as i64],
                    response_ids: vec![5, i as i64],
                    response_text: format!("r{group}.{i}"),
                    // Values that a decimal round trip could blur.
                    sampling_logprobs: vec![-0.1f32 / 3.0, f32::MIN_POSITIVE, -1e-38],
                    stopped_on_eos: i % 2 == 0,
                    stopped_on_stop_string: false,
                    episode: None,
                });
                scores.push(Score {
                    reward: 1.0 / 3.0,
                    correct: i == 0,
                    reason: "ok".into(),
                    timed_out: false,
                });
            }
        }
        let rb = RolloutBatch {
            plan,
            policy_version: step - 1,
            rollouts,
            timings: StageTimings::default(),
        };
        ScoredBatch::new(rb, scores).unwrap()
    }

    #[test]
    fn a_learner_gets_exactly_its_groups_bit_for_bit() {
        // Two samplers: groups 0..2 and 2..3 of 3; learner 1 of 2 owns 2..3.
        let a = WireBatch::from_scored(&scored(4, 2, 2), 0);
        let b = WireBatch::from_scored(&scored(4, 1, 2), 2);
        let a = WireBatch::decode(&a.encode().unwrap(), 9).unwrap();
        let plan = StepPlan::new(
            &RunConfig::default(),
            4,
            0,
            Vec::new(),
            serde_json::json!(0),
        );
        let got = learner_batch(plan.clone(), 2..3, 3, 2, vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(got.rollout.rollouts.len(), 2);
        assert!(got.rollout.rollouts.iter().all(|r| r.group == 0));
        assert_eq!(got.rollout.rollouts[0].prompt_ids, vec![1, 2, 0]);
        let want = scored(1, 1, 2);
        for (x, y) in got.rollout.rollouts.iter().zip(&want.rollout.rollouts) {
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&x.sampling_logprobs), bits(&y.sampling_logprobs));
        }
        assert_eq!(got.scores, want.scores);
        assert_eq!(got.rollout.policy_version, 3);
        // Learner 0 owns groups 0..2 (of sampler 0).
        let got0 = learner_batch(plan.clone(), 0..2, 3, 2, vec![a.clone(), b.clone()]).unwrap();
        let groups: Vec<usize> = got0.rollout.rollouts.iter().map(|r| r.group).collect();
        assert_eq!(groups, vec![0, 0, 1, 1]);
        // A missing group or a wrong step is an error, not a smaller batch.
        let err = learner_batch(plan.clone(), 0..2, 3, 2, vec![a.clone()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("0 responses for group 2"), "{err}");
        let late = WireBatch::from_scored(&scored(5, 1, 2), 2);
        let err = learner_batch(plan, 0..2, 3, 2, vec![a, late])
            .unwrap_err()
            .to_string();
        assert!(err.contains("step 5's responses during step 4"), "{err}");
        // Bytes that are not a sampler's batch name the sampler's rank.
        let err = WireBatch::decode(b"{\"step\": 4", 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sampler rank 3 are garbled"), "{err}");
    }
}
