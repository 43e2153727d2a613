//! One rank of a data-parallel run: the sequential training loop
//! ([`crate::actors::sequential`]) with each step's prompt groups split
//! across ranks ([`super::shard`]) and [`super::DataParallel`] installed as
//! the trainer's gradient sync. Every rank draws the same prompts (same
//! data, same seed), keeps its groups, rolls out, verifies, scores with the
//! teacher and computes advantages on them (groups never straddle ranks),
//! then takes the same AdamW step. Rank 0 writes the run folder
//! (`config.toml`, `metrics.jsonl` with global batch statistics, `final/`);
//! every rank writes `ranks/rank<r>.json` with a digest of its weights.

use super::sync::DataParallel;
use super::{DistEnv, GlooGroup, GradSync, ProcessGroup, Store};
use crate::config::RunConfig;
use crate::data::TeacherPrompt;
use crate::device::parse_device;
use crate::error::{Error, Result};
use crate::model::LoadedModel;
use crate::pipeline::{
    assign_credit, prepare_step, step_seed, step_stats, CreditBatch, RolloutBatch, ScoredBatch,
    StepPlan, TeacherBatch, TeacherScores,
};
use crate::stats::{StageTimings, StepStats};
use crate::train::{train_step, Trainer};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Tensor};

/// What a rank reports at the end.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RankReport {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
    /// Steps trained.
    pub steps: u64,
    /// SHA-256 of every trainable parameter's bytes, in name order.
    pub weights_sha256: String,
    /// Seconds in collectives over the run.
    pub collective_s: f64,
    /// Seconds of the whole loop.
    pub wall_s: f64,
}

/// SHA-256 over the parameters' raw bytes (CPU copies), in `vars` order.
pub fn weights_digest(params: &[Tensor]) -> Result<String> {
    let mut h = Sha256::new();
    for p in params {
        let c = p.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?;
        let n = c.numel() * c.kind().elt_size_in_bytes();
        let mut buf = vec![0u8; n];
        c.f_copy_data_u8(&mut buf, c.numel())?;
        h.update(&buf);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The device a rank trains on: `RLSD_DIST_DEVICE` (set by `--gpus`) or
/// `runtime.optimizer_device`.
fn rank_device(cfg: &RunConfig) -> Result<Device> {
    match std::env::var("RLSD_DIST_DEVICE") {
        Ok(d) => parse_device(&d),
        Err(_) => parse_device(&cfg.runtime.optimizer_device),
    }
}

/// Join the job's process group: Gloo on CPU, NCCL on CUDA (`gpu` feature).
pub fn join_group(env: &DistEnv, device: Device) -> Result<(Store, Box<dyn ProcessGroup>)> {
    let store = if env.host_store {
        Store::server(&env.master_addr, env.master_port, env.timeout)?
    } else {
        Store::client(&env.master_addr, env.master_port, env.timeout)?
    };
    let pg: Box<dyn ProcessGroup> = match device {
        Device::Cpu => Box::new(GlooGroup::new(
            &store,
            "rlsd/gloo/",
            &env.bind,
            env.rank,
            env.world,
            env.timeout,
        )?),
        #[cfg(feature = "gpu")]
        Device::Cuda(_) => Box::new(super::nccl::NcclGroup::new(
            &store,
            "rlsd/nccl/",
            device,
            env.rank,
            env.world,
            env.timeout,
        )?),
        other => {
            return Err(Error::Distributed(format!(
            "no process group for device {other:?} (CUDA ranks need a build with --features gpu)"
        )))
        }
    };
    Ok((store, pg))
}

/// Test hook: `RLSD_DIST_FAIL=RANK:STEP` aborts that rank as the step starts
/// (a crash the launcher must notice).
fn injected_crash(rank: usize, step: u64) {
    if let Ok(spec) = std::env::var("RLSD_DIST_FAIL") {
        if spec == format!("{rank}:{step}") {
            eprintln!("rank {rank}: RLSD_DIST_FAIL={spec}: aborting");
            std::process::abort();
        }
    }
}

/// Run `cfg.runtime.steps` data-parallel steps as rank `env.rank`.
pub fn train_rank(cfg: &RunConfig, env: &DistEnv, overwrite: bool) -> Result<RankReport> {
    let started = Instant::now();
    let device = rank_device(cfg)?;
    let out = cfg.runtime.out_dir.clone();
    if env.rank == 0 {
        if out.join("metrics.jsonl").exists() && !overwrite {
            return Err(Error::Distributed(format!(
                "{} already holds a run; pass --overwrite to start over",
                out.display()
            )));
        }
        std::fs::create_dir_all(out.join("ranks")).map_err(|e| Error::io(&out, e))?;
        std::fs::write(out.join("config.toml"), cfg.to_toml())
            .map_err(|e| Error::io(out.join("config.toml"), e))?;
    }
    let (_store, pg) = join_group(env, device)?;
    let verifier = crate::verify::build_verifier(&cfg.verifier)?;
    let mut source = crate::actors::source::from_config(cfg)?;
    let template = TeacherPrompt::new(cfg.data.teacher_template.clone())?;
    let kind = crate::model::parse_kind(&cfg.model.dtype)?;
    let policy = LoadedModel::load(&cfg.model.resolve()?, device, kind)?;
    let mut teacher = policy.replicate(device)?;
    let mut trainer = Trainer::new(policy, cfg.algo.clone(), cfg.optim.clone())?;
    let dp = DataParallel::new(pg, device);
    dp.broadcast_params(&trainer.optimizer.parameters())?;
    dp.group().barrier()?;
    trainer.grad_sync = Some(Box::new(dp));
    let mut metrics = if env.rank == 0 {
        Some(crate::metrics::MetricsWriter::create(
            &out.join("metrics.jsonl"),
        )?)
    } else {
        None
    };
    let mut teacher_version = 0;
    let mut collective_s = 0.0;
    for step in 1..=cfg.runtime.steps {
        injected_crash(env.rank, step);
        let version = step - 1;
        let all = source.next_batch(cfg.rollout.batch_prompts)?;
        let mine = super::shard::group_range(all.len(), env.world, env.rank);
        let mut plan = StepPlan::new(cfg, step, 0, all[mine].to_vec(), source.cursor());
        // Ranks sample different prompts; a per-rank seed keeps their RNG
        // streams apart.
        plan.seed = step_seed(
            cfg.runtime.seed ^ (env.rank as u64).wrapping_mul(0xA24B_AED4_963E_E407),
            step,
        );
        if plan.teacher_version > teacher_version {
            teacher.load_snapshot(&trainer.policy.snapshot(plan.teacher_version)?)?;
            teacher_version = plan.teacher_version;
        }
        let batch = if plan.examples.is_empty() {
            // A rank with no group this step still joins every collective.
            empty_batch(plan, version, teacher_version, cfg)?
        } else {
            prepare_step(
                cfg,
                plan,
                &trainer.policy,
                version,
                &teacher,
                teacher_version,
                &*verifier,
                &template,
            )?
        };
        let tb = batch.train_batch(&cfg.algo, cfg.rollout.temperature);
        let trained = train_step(&mut trainer, &tb)?;
        // train_step's counts are global; step_stats sets local ones.
        let (num_responses, num_tokens) = (trained.num_responses, trained.num_tokens);
        let completions = if env.rank == 0 {
            cfg.observe.completions_per_step
        } else {
            0
        };
        let mut stats = step_stats(
            &batch,
            &tb,
            trained,
            &cfg.algo,
            trainer.policy.tokenizer.as_ref(),
            completions,
        );
        let sync = trainer
            .grad_sync
            .as_mut()
            .ok_or_else(|| Error::Distributed("grad sync lost".into()))?;
        global_rollout_stats(sync.as_mut(), &batch, &mut stats)?;
        stats.num_responses = num_responses;
        stats.num_tokens = num_tokens;
        collective_s += stats.timings.collective_s;
        if let Some(m) = metrics.as_mut() {
            m.append(&stats)?;
            m.sync()?;
        }
    }
    let params = trainer.optimizer.parameters();
    let report = RankReport {
        rank: env.rank,
        world: env.world,
        steps: cfg.runtime.steps,
        weights_sha256: weights_digest(&params)?,
        collective_s,
        wall_s: started.elapsed().as_secs_f64(),
    };
    write_report(&out, &report)?;
    if env.rank == 0 {
        trainer.policy.save(&out.join("final"))?;
    }
    if let Some(sync) = trainer.grad_sync.as_mut() {
        // Nobody leaves before everyone has written its report.
        sync.sum_values(&mut [0.0])?;
    }
    Ok(report)
}

fn write_report(out: &Path, r: &RankReport) -> Result<()> {
    let dir = out.join("ranks");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = dir.join(format!("rank{}.json", r.rank));
    let text = serde_json::to_string_pretty(r)
        .map_err(|e| Error::Distributed(format!("{}: {e}", path.display())))?;
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}

/// Reward, accuracy, length and truncation over all ranks' samples (each
/// rank's `fill_rollout_stats` saw only its own).
fn global_rollout_stats(
    sync: &mut dyn GradSync,
    batch: &CreditBatch,
    stats: &mut StepStats,
) -> Result<()> {
    let (r, s) = (batch.rollouts(), batch.scores());
    let mut v = [
        r.len() as f64,
        s.iter().map(|x| f64::from(x.reward)).sum(),
        s.iter().filter(|x| x.correct).count() as f64,
        r.iter().map(|x| x.response_ids.len() as f64).sum(),
        r.iter()
            .filter(|x| !x.stopped_on_eos && !x.stopped_on_stop_string)
            .count() as f64,
    ];
    sync.sum_values(&mut v)?;
    let n = v[0].max(1.0);
    stats.reward_mean = v[1] / n;
    stats.accuracy = v[2] / n;
    stats.response_len_mean = v[3] / n;
    stats.truncation_rate = v[4] / n;
    Ok(())
}

/// The batch of a rank that holds no prompt group this step.
fn empty_batch(
    plan: StepPlan,
    policy_version: u64,
    teacher_version: u64,
    cfg: &RunConfig,
) -> Result<CreditBatch> {
    let rolled = RolloutBatch {
        plan,
        policy_version,
        rollouts: Vec::new(),
        timings: StageTimings::default(),
    };
    let taught = TeacherBatch {
        scored: ScoredBatch::new(rolled, Vec::new())?,
        teacher: TeacherScores {
            version: teacher_version,
            ..TeacherScores::default()
        },
    };
    assign_credit(taught, cfg.rollout.group_size, &cfg.algo)
}
