//! One rank of a data-parallel run: the sequential step loop
//! ([`crate::run::sequential::run_steps`]) with rank hooks: each step's
//! prompt groups split across ranks ([`super::shard`]), a per-rank sampling
//! seed, [`super::DataParallel`] installed as the trainer's gradient sync,
//! rollout statistics summed over ranks, and checkpoints committed for all
//! ranks or none ([`super::rank_checkpoint`]). Every rank draws the same prompts
//! (same data, same seed), keeps its groups, rolls out, verifies, scores
//! with the teacher and computes advantages on them (groups never straddle
//! ranks), then takes the same AdamW step. Rank 0 writes the run folder
//! (`config.toml`, `metrics.jsonl` with global batch statistics,
//! `checkpoints/`, `final/`); every rank writes `ranks/rank<r>.json` with a
//! digest of its weights, its stage seconds, tokens/s and peak memory.
//!
//! This file joins the groups, loads the model or checkpoint and hands
//! over to the rank's role: a learner (`learner.rs`, the loop above) or,
//! under split placement ([`super::split`]), a sampler
//! ([`super::sampler_loop`]); the learners then train over their own
//! sub-group, receive the step's responses instead of generating them,
//! and broadcast the new weights to the samplers after every step.

use super::learner::{Learner, SplitLink};
use super::rank_checkpoint::load_resume;
use super::report::{write_report, RankTotals};
use super::sampler_loop::{ordered_params, run_sampler, SamplerSeat};
use super::split::Role;
use super::sync::{broadcast_params, DataParallel};
use super::{DistEnv, GlooGroup, ProcessGroup, Store};
use crate::config::RunConfig;
use crate::device::parse_device;
use crate::error::{Error, Result};
use crate::fault::RankFault;
use crate::model::LoadedModel;
use crate::run::folder::{prepare_fresh, resolve_resume, RunLock};
use crate::run::resume::check_same_shape;
use std::path::Path;
use std::time::{Duration, Instant};
use tch::Device;

pub use super::rank_checkpoint::weights_digest;

pub use super::report::RankReport;

/// The device a rank trains on: `RLSD_DIST_DEVICE` (set by `--gpus`) or
/// `runtime.optimizer_device`.
fn rank_device(cfg: &RunConfig) -> Result<Device> {
    match std::env::var("RLSD_DIST_DEVICE") {
        Ok(d) => parse_device(&d),
        Err(_) => parse_device(&cfg.runtime.optimizer_device),
    }
}

/// Connect to the job's store (hosting it where `env` says so); the
/// rendezvous fails after `timeout`.
pub fn connect_store(env: &DistEnv, timeout: Duration) -> Result<Store> {
    if env.host_store {
        Store::server(&env.master_addr, env.master_port, timeout)
    } else {
        Store::client(&env.master_addr, env.master_port, timeout)
    }
}

/// Join a process group named `name` over `store` as `rank` of `world`:
/// Gloo on CPU, NCCL on CUDA (`gpu` feature); every collective fails after
/// `timeout`. Groups of different names are independent (a sub-group of
/// some ranks beside the job's whole group).
pub fn new_group(
    store: &Store,
    name: &str,
    env: &DistEnv,
    device: Device,
    rank: usize,
    world: usize,
    timeout: Duration,
) -> Result<Box<dyn ProcessGroup>> {
    Ok(match device {
        Device::Cpu => Box::new(GlooGroup::new(
            store,
            &format!("rlsd/gloo{name}/"),
            &env.bind,
            rank,
            world,
            timeout,
        )?),
        #[cfg(feature = "gpu")]
        Device::Cuda(_) => Box::new(super::nccl::NcclGroup::new(
            store,
            &format!("rlsd/nccl{name}/"),
            device,
            rank,
            world,
            timeout,
        )?),
        other => {
            return Err(Error::Distributed(format!(
            "no process group for device {other:?} (CUDA ranks need a build with --features gpu)"
        )))
        }
    })
}

/// Run `cfg.runtime.steps` data-parallel steps as rank `env.rank`, or, with
/// `resume` (`latest`, a run folder, a checkpoint root or one checkpoint
/// folder, as for `rlsd train --resume`), continue from the newest complete
/// checkpoint: every rank loads the same one (the ranks agree on its step
/// and weights before training).
pub fn train_rank(
    cfg: &RunConfig,
    env: &DistEnv,
    overwrite: bool,
    resume: Option<&Path>,
) -> Result<RankReport> {
    let started = Instant::now();
    // The one-process run's start-up checks of the verifier and the
    // prompts, on every rank and before the run folder is locked: a refused job
    // writes nothing, and no rank waits at the rendezvous for one that quit.
    crate::run::preflight::check_inputs(cfg, true, true)?;
    let device = rank_device(cfg)?;
    let role = Role::of(cfg, env.rank, env.world)?;
    let out = cfg.runtime.out_dir.clone();
    let ckpt_root = out.join(&cfg.checkpoint.dir);
    let resume_dir = resume
        .map(|arg| resolve_resume(arg, &ckpt_root, &cfg.checkpoint.dir))
        .transpose()?;
    // Rank 0 owns the run folder for the whole job.
    let fresh = resume_dir.is_none();
    let _lock = (env.rank == 0)
        .then(|| own_run_folder(cfg, &out, &ckpt_root, overwrite, fresh))
        .transpose()?;
    refuse_if_rank_too_big(cfg, role, device)?;
    let timeout = env
        .timeout
        .unwrap_or_else(|| cfg.runtime.collective_timeout());
    let store = connect_store(env, timeout)?;
    let world_pg = new_group(&store, "", env, device, env.rank, env.world, timeout)?;
    let verifier = crate::verify::build_verifier(&cfg.verifier)?;
    let mut source = crate::run::source::from_config(cfg)?;
    let resumed = resume_dir.as_deref().map(load_resume).transpose()?;
    let policy = rank_policy(cfg, resumed.as_ref(), &mut *source, device)?;
    let fault = RankFault::from_env(env.rank)?;
    let finish = |report: &mut RankReport, totals: &RankTotals| -> Result<()> {
        totals.fill(report);
        report.wall_s = started.elapsed().as_secs_f64();
        write_report(&out, report)
    };
    match role {
        Role::Sampler {
            index,
            samplers,
            learners,
        } => {
            let seat = SamplerSeat {
                index,
                samplers,
                learners,
                device,
            };
            let ctx = SamplerRank {
                cfg,
                env,
                role,
                started,
                resumed_from: resumed.as_ref().map(|r| r.step),
                fault: fault.as_ref(),
            };
            ctx.run(
                seat,
                world_pg.as_ref(),
                &policy,
                &*verifier,
                &mut *source,
                &finish,
            )
        }
        Role::Learner {
            index,
            learners,
            samplers,
        } => {
            let (dp_pg, split) = learner_groups(&store, env, role, world_pg, device, timeout)?;
            let learner = Learner {
                cfg,
                env,
                index,
                learners,
                out: &out,
                device,
                policy,
                resumed: resumed.as_ref(),
                dp: DataParallel::new(dp_pg, device),
                split: split.map(|world| SplitLink {
                    world,
                    samplers,
                    device,
                    range: 0..0,
                    groups: 0,
                }),
                fault,
                verifier: &*verifier,
                source: &mut *source,
            };
            learner.run(started, &finish)
        }
    }
}

/// The rank's policy: the resumed checkpoint's (whose shape must match
/// `[model]`; the prompt source moves to its cursor), or `[model]`'s with
/// its adapter.
fn rank_policy(
    cfg: &RunConfig,
    resumed: Option<&super::rank_checkpoint::Resume>,
    source: &mut dyn crate::run::PromptSource,
    device: Device,
) -> Result<LoadedModel> {
    let kind = crate::model::parse_kind(&cfg.model.dtype)?;
    if let Some(r) = resumed {
        check_same_shape(&cfg.model.resolved_path(), &r.checkpoint.model_dir)?;
        source.restore(&r.cursor)?;
        return LoadedModel::load(&r.checkpoint.model_dir, device, kind);
    }
    let mut p = LoadedModel::load(&cfg.model.resolve()?, device, kind)?;
    cfg.model.attach_adapter(&mut p, true)?;
    Ok(p)
}

/// What a sampler rank runs with, besides its models and data.
struct SamplerRank<'a> {
    cfg: &'a RunConfig,
    env: &'a DistEnv,
    role: Role,
    started: Instant,
    /// The step of the resumed checkpoint, if any.
    resumed_from: Option<u64>,
    fault: Option<&'a RankFault>,
}

impl SamplerRank<'_> {
    /// Receive learner 0's weights, generate and verify every step's share
    /// for the learners, then write the rank's report.
    fn run(
        &self,
        seat: SamplerSeat,
        world_pg: &dyn ProcessGroup,
        policy: &LoadedModel,
        verifier: &dyn crate::verify::Verifier,
        source: &mut dyn crate::run::PromptSource,
        finish: &dyn Fn(&mut RankReport, &RankTotals) -> Result<()>,
    ) -> Result<RankReport> {
        let (cfg, env) = (self.cfg, self.env);
        // Learner 0's weights, whether fresh or resumed.
        broadcast_params(world_pg, &ordered_params(policy), 0)?;
        let setup_s = self.started.elapsed().as_secs_f64();
        let first_step = self.resumed_from.unwrap_or(0) + 1;
        let totals = run_sampler(
            cfg, seat, world_pg, policy, verifier, source, first_step, self.fault,
        )?;
        let mut report = RankReport {
            rank: env.rank,
            world: env.world,
            role: self.role.name().into(),
            steps: cfg.runtime.steps,
            resumed_from: self.resumed_from,
            weights_sha256: weights_digest(&ordered_params(policy))?,
            setup_s,
            ..RankReport::default()
        };
        finish(&mut report, &totals)?;
        // Nobody leaves before everyone has written its report.
        world_pg.barrier()?;
        Ok(report)
    }
}

/// Rank 0's hold on the run folder: locked for the whole job, prepared for
/// a fresh run (`fresh`), with the `ranks/` folder and the resolved config.
fn own_run_folder(
    cfg: &RunConfig,
    out: &Path,
    ckpt_root: &Path,
    overwrite: bool,
    fresh: bool,
) -> Result<RunLock> {
    let lock = RunLock::acquire(out)?;
    if fresh {
        prepare_fresh(out, ckpt_root, overwrite)?;
    }
    std::fs::create_dir_all(out.join("ranks")).map_err(|e| Error::io(out, e))?;
    std::fs::write(out.join("config.toml"), cfg.to_toml())
        .map_err(|e| Error::io(out.join("config.toml"), e))?;
    Ok(lock)
}

/// Refuse a rank whose memory plan does not fit its device (the ranks of a
/// node share its RAM: the launcher and torchrun say how many there are).
fn refuse_if_rank_too_big(cfg: &RunConfig, role: Role, device: Device) -> Result<()> {
    let device_name = match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    };
    let local_ranks = std::env::var("LOCAL_WORLD_SIZE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1);
    super::rank_memory::refuse_rank_if_too_big(cfg, role, &device_name, local_ranks)
}

/// A learner's data-parallel group (the learners' own group under split
/// placement, else the job's) and, under split placement, the job's group
/// it shares with the samplers.
#[allow(clippy::type_complexity)]
fn learner_groups(
    store: &Store,
    env: &DistEnv,
    role: Role,
    world_pg: Box<dyn ProcessGroup>,
    device: Device,
    timeout: std::time::Duration,
) -> Result<(Box<dyn ProcessGroup>, Option<Box<dyn ProcessGroup>>)> {
    let Role::Learner {
        index, learners, ..
    } = role
    else {
        return Ok((world_pg, None));
    };
    if !role.is_split() {
        return Ok((world_pg, None));
    }
    let pg = new_group(store, "-learners", env, device, index, learners, timeout)?;
    Ok((pg, Some(world_pg)))
}
