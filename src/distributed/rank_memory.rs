//! The memory model ([`crate::memory`]) for one rank of a data-parallel job:
//! every actor of a rank shares the rank's device, and a rank holds only
//! its share of each step. A colocated rank samples, scores and trains its
//! share of the groups; a split learner scores and trains (no sampler); a
//! sampler only generates (one replica and its KV cache). Checked when a
//! rank starts, so a job that cannot fit stops before any group forms.

use super::split::Role;
use crate::config::RunConfig;
use crate::error::Result;
use crate::memory::{check_fits, device_memory, device_totals, model_shape, plan, MemoryPlan};
use crate::model::Config;

/// The plan of a rank in `role` on `device`, for a model of shape `model`
/// and prompts of `prompt_tokens`.
pub fn rank_plan(
    cfg: &RunConfig,
    model: &Config,
    prompt_tokens: usize,
    role: Role,
    device: &str,
) -> Result<MemoryPlan> {
    let (share_of, sampling, training) = match role {
        Role::Learner {
            learners, samplers, ..
        } => (learners, samplers == 0, true),
        Role::Sampler { samplers, .. } => (samplers, true, false),
    };
    let mut c = cfg.clone();
    // The largest share: contiguous groups, the first ranks one more.
    c.rollout.batch_prompts = cfg.rollout.batch_prompts.div_ceil(share_of.max(1)).max(1);
    c.runtime.sampler_device = device.into();
    c.runtime.teacher_device = device.into();
    // A sampler-only rank has no optimizer whose published snapshot its
    // replica could share (`memory::plan` counts no sampler weights when
    // both sit in host memory): plan its optimizer elsewhere, then drop it.
    c.runtime.optimizer_device = if training { device } else { "none" }.into();
    // No commit board here (it is the actor runtime's): no kept versions.
    c.runtime.max_staleness = 0;
    let mut p = plan(&c, model, prompt_tokens)?;
    p.actors.retain(|a| match a.actor {
        "sampler" => sampling,
        _ => training,
    });
    // A rank samples, scores and trains one after the other.
    p.devices = device_totals(&p.actors, 0);
    Ok(p)
}

/// Refuse, with the numbers, a rank whose plan cannot fit its device. On
/// the CPU the ranks of a node share its memory, so the plan is counted
/// `local_ranks` times against it. A model whose shape cannot be read is
/// left to the loader to report.
pub fn refuse_rank_if_too_big(
    cfg: &RunConfig,
    role: Role,
    device: &str,
    local_ranks: usize,
) -> Result<()> {
    let Ok(shape) = model_shape(cfg) else {
        return Ok(());
    };
    let p = rank_plan(
        cfg,
        &shape,
        crate::memory::DEFAULT_PROMPT_TOKENS,
        role,
        device,
    )?;
    check_rank(p, local_ranks, cfg.runtime.device_memory_gib)
}

/// Check a rank's plan against its device (`gib` overrides the detected
/// memory), counting it `local_ranks` times against a shared CPU.
fn check_rank(mut p: MemoryPlan, local_ranks: usize, gib: f64) -> Result<()> {
    for (device, bytes) in &mut p.devices {
        if device == "cpu" {
            *bytes *= local_ranks.max(1) as f64;
        }
    }
    check_fits(&p, |d| device_memory(d, gib))
}

/// `rlsd plan --nproc N`: the plan of each kind of rank of a job of `world`
/// ranks on one node, each on `runtime.optimizer_device` (the device every
/// rank of `--gpus` gets), assuming prompts of `prompt_tokens`; fails when
/// one cannot fit (`device_memory_gib` overrides the detected memory).
pub fn plan_job_command(
    cfg: &RunConfig,
    world: usize,
    prompt_tokens: usize,
    device_memory_gib: Option<f64>,
) -> Result<()> {
    let shape = model_shape(cfg)?;
    let device = cfg.runtime.optimizer_device.trim().to_string();
    let gib = device_memory_gib.unwrap_or(cfg.runtime.device_memory_gib);
    let mut shown: Vec<(&'static str, usize)> = Vec::new();
    for rank in 0..world.max(1) {
        let role = Role::of(cfg, rank, world.max(1))?;
        let (of, index) = match role {
            Role::Learner {
                index, learners, ..
            } => (learners, index),
            Role::Sampler {
                index, samplers, ..
            } => (samplers, index),
        };
        let groups = super::shard::group_range(cfg.rollout.batch_prompts, of, index).len();
        if shown.contains(&(role.name(), groups)) {
            continue;
        }
        shown.push((role.name(), groups));
        let p = rank_plan(cfg, &shape, prompt_tokens, role, &device)?;
        println!(
            "rank {rank} ({}, {groups} of {} prompt groups):",
            role.name(),
            cfg.rollout.batch_prompts
        );
        print!("{}", crate::memory::render(&p));
        if let Some((_, bytes)) = p.devices.iter().find(|(d, _)| d == "cpu") {
            println!(
                "  {world} ranks share this node's memory: {:.2} GiB on cpu",
                bytes * world as f64 / crate::memory::GIB
            );
        }
        check_rank(p, world, gib)?;
    }
    println!("fits");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{known_shape, total, GIB};

    fn actors(p: &MemoryPlan) -> Vec<&'static str> {
        p.actors.iter().map(|a| a.actor).collect()
    }

    #[test]
    fn a_rank_plans_its_own_share_and_role() {
        let model = known_shape("qwen2.5-1.5b").unwrap();
        let mut cfg = RunConfig::default();
        cfg.rollout.batch_prompts = 9;
        let one = Role::Learner {
            index: 0,
            learners: 1,
            samplers: 0,
        };
        let whole = rank_plan(&cfg, &model, 512, one, "cuda:0").unwrap();
        assert_eq!(actors(&whole), vec!["optimizer", "sampler", "teacher"]);
        // Three colocated ranks: 3 of the 9 groups each, less activation and KV cache.
        let third = Role::Learner {
            index: 0,
            learners: 3,
            samplers: 0,
        };
        let p = rank_plan(&cfg, &model, 512, third, "cuda:0").unwrap();
        // A rank works one stage at a time, so only its largest transient
        // counts; the KV cache it may need shrinks with its share.
        assert!(p.devices[0].1 <= whole.devices[0].1);
        let kv = |p: &MemoryPlan| {
            p.actors
                .iter()
                .find(|a| a.actor == "sampler")
                .and_then(|a| a.items.iter().find(|i| i.what == "KV cache"))
                .unwrap()
                .bytes
        };
        assert!(kv(&p) < kv(&whole));
        // ...exactly a one-process run of 3 prompts with every actor on the
        // device, less the commit board's kept versions (a rank has no board).
        let mut three = cfg.clone();
        three.rollout.batch_prompts = 3;
        three.runtime.max_staleness = 0;
        three.runtime.sampler_device = "cuda:0".into();
        three.runtime.teacher_device = "cuda:0".into();
        three.runtime.optimizer_device = "cuda:0".into();
        let same = crate::memory::plan(&three, &model, 512).unwrap();
        assert_eq!(p.devices, same.devices);
        // A split learner holds no sampler; a sampler only its replica and cache.
        let learner = Role::Learner {
            index: 0,
            learners: 1,
            samplers: 1,
        };
        let l = rank_plan(&cfg, &model, 512, learner, "cuda:0").unwrap();
        assert_eq!(actors(&l), vec!["optimizer", "teacher"]);
        let sampler = Role::Sampler {
            index: 0,
            samplers: 1,
            learners: 1,
        };
        let s = rank_plan(&cfg, &model, 512, sampler, "cuda:1").unwrap();
        assert_eq!(actors(&s), vec!["sampler"]);
        assert_eq!(s.devices[0].0, "cuda:1");
        let sum = |p: &MemoryPlan| p.actors.iter().map(|a| total(&a.items)).sum::<f64>();
        // Both together hold what the colocated rank holds (one overhead each).
        assert!((sum(&l) + sum(&s) - sum(&whole)).abs() < 1e-3 * GIB);
    }

    #[test]
    fn a_job_plan_checks_every_kind_of_rank() {
        let mut cfg = RunConfig::default();
        cfg.model.path = "qwen2.5-0.5b".into();
        cfg.runtime.optimizer_device = "cuda:0".into();
        cfg.runtime.placement = crate::config::Placement::Split;
        // 80 GiB per GPU: fits; 1 GiB: the first rank's plan is refused by number.
        plan_job_command(&cfg, 3, 512, Some(80.0)).unwrap();
        let err = plan_job_command(&cfg, 3, 512, Some(1.0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("predicted peak"), "{err}");
        cfg.runtime.sampler_ranks = 3;
        let err = plan_job_command(&cfg, 3, 512, Some(80.0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("runtime.sampler_ranks"), "{err}");
    }

    #[test]
    fn a_rank_that_cannot_fit_is_refused_with_the_numbers() {
        let mut cfg = RunConfig::default();
        cfg.model.path = "qwen2.5-7b".into();
        cfg.runtime.device_memory_gib = 1.0;
        let role = Role::Sampler {
            index: 0,
            samplers: 1,
            learners: 1,
        };
        let err = refuse_rank_if_too_big(&cfg, role, "cpu", 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("predicted peak"), "{err}");
        assert!(err.contains("sampler"), "{err}");
    }
}
