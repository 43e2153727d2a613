//! A sampler rank under split placement ([`super::split`]): every step it
//! draws the step's prompts like every rank, generates and verifies its
//! share of the groups with the seed a colocated rank of the same index
//! would use, sends them to the learners ([`super::split::exchange`]), and
//! receives the weights the learners trained (learner 0's broadcast). It
//! holds one policy replica: no optimizer state, no teacher.

use super::report::RankTotals;
use super::shard::group_range;
use super::split::{exchange, WireBatch};
use super::sync::broadcast_params;
use super::ProcessGroup;
use crate::config::RunConfig;
use crate::error::Result;
use crate::fault::RankFault;
use crate::model::LoadedModel;
use crate::pipeline::sample_and_verify;
use crate::pipeline::StepPlan;
use crate::run::source::PromptSource;
use crate::verify::Verifier;
use std::time::Instant;
use tch::{Device, Tensor};

/// Where a sampler rank sits in the job.
#[derive(Debug, Clone, Copy)]
pub struct SamplerSeat {
    /// This sampler, `0..samplers`.
    pub index: usize,
    /// Number of sampler ranks.
    pub samplers: usize,
    /// Number of learner ranks (ranks `0..learners`).
    pub learners: usize,
    /// The device collectives use.
    pub device: Device,
}

/// The trainable parameters of `model` in the optimizer's order
/// ([`crate::optim::trainable_by_name`]), so they pair with the learners'
/// in a broadcast.
pub fn ordered_params(model: &LoadedModel) -> Vec<Tensor> {
    crate::optim::trainable_by_name(&model.vs)
        .into_iter()
        .map(|(_, t)| t)
        .collect()
}

/// Whether split samplers run one step ahead of the learners
/// (`runtime.max_staleness >= 1`): step `k + 1` is generated with the
/// weights of step `k - 1` while the learners train step `k`.
pub fn samplers_ahead(cfg: &RunConfig) -> bool {
    cfg.runtime.max_staleness >= 1
}

/// Run steps `first..=cfg.runtime.steps` as sampler `seat` over the job's
/// group `world`, with `policy` (already equal to the learners' weights of
/// step `first - 1`). In lockstep the sampler generates step `k` after
/// receiving step `k - 1`'s weights; one step ahead
/// ([`samplers_ahead`]) it generates step `k + 1` right after sending step
/// `k`, then receives step `k`'s weights. Either way every rank issues the
/// same collectives in the same order: step `k`'s responses, then step
/// `k`'s weights.
#[allow(clippy::too_many_arguments)] // the loop's inputs, each used once
pub fn run_sampler(
    cfg: &RunConfig,
    seat: SamplerSeat,
    world: &dyn ProcessGroup,
    policy: &LoadedModel,
    verifier: &dyn Verifier,
    source: &mut dyn PromptSource,
    first: u64,
    fault: Option<&RankFault>,
) -> Result<RankTotals> {
    let params = ordered_params(policy);
    let mut totals = RankTotals::default();
    let first = first.max(1);
    // The policy version the replica holds.
    let mut version = first - 1;
    let mut ahead: Option<WireBatch> = None;
    let mut make = |step: u64, version: u64, totals: &mut RankTotals| {
        generate(
            cfg,
            seat,
            policy,
            version,
            verifier,
            &mut *source,
            step,
            totals,
        )
    };
    for step in first..=cfg.runtime.steps {
        RankFault::strike(fault, step, false);
        let wire = match ahead.take() {
            Some(w) => w,
            None => make(step, version, &mut totals)?,
        };
        let t = Instant::now();
        exchange(
            world,
            seat.learners,
            seat.samplers,
            Some(&wire),
            seat.device,
        )?;
        totals.exchange_s += t.elapsed().as_secs_f64();
        if samplers_ahead(cfg) && step < cfg.runtime.steps {
            ahead = Some(make(step + 1, version, &mut totals)?);
        }
        let t = Instant::now();
        broadcast_params(world, &params, 0)?;
        totals.weights_broadcast_s += t.elapsed().as_secs_f64();
        version = step;
    }
    Ok(totals)
}

/// Draw step `step`'s prompts, generate and verify this sampler's share
/// with `policy` (at `version`), ready to send.
#[allow(clippy::too_many_arguments)] // one step's inputs
fn generate(
    cfg: &RunConfig,
    seat: SamplerSeat,
    policy: &LoadedModel,
    version: u64,
    verifier: &dyn Verifier,
    source: &mut dyn PromptSource,
    step: u64,
    totals: &mut RankTotals,
) -> Result<WireBatch> {
    let all = source.next_batch(cfg.rollout.batch_prompts)?;
    let range = group_range(all.len(), seat.samplers, seat.index);
    // Seeds from each response's global position, as on a colocated rank.
    let plan = StepPlan::new(cfg, step, 0, all[range.clone()].to_vec(), source.cursor())
        .share_of(range.start, all.len());
    let scored = sample_and_verify(cfg, plan, policy, version, verifier)?;
    totals.add_stages(&scored.rollout.timings, true);
    totals.generated_tokens += scored
        .rollout
        .rollouts
        .iter()
        .map(|r| r.response_ids.len() as u64)
        .sum::<u64>();
    Ok(WireBatch::from_scored(&scored, range.start))
}
