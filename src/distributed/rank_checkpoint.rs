//! Checkpoints of a data-parallel run: one checkpoint for all ranks, or none.
//!
//! The ranks hold bit-identical replicas (same summed gradient, same AdamW
//! step), so one copy describes all of them; rank 0 writes it into the run
//! folder's checkpoint root with [`crate::checkpoint`]'s atomic commit
//! (temporary folder, fsync, manifest last, rename). The commit of step `s`:
//!
//! 1. **Agree** ([`agree_equal`]): every rank hashes its step, policy
//!    weights, teacher weights and version, and data cursor (SHA-256), and
//!    the ranks sum each digest byte and its square. All ranks hold the same
//!    digest exactly when, on each rank, the sums equal `world` times its own
//!    byte and square; otherwise every rank sees the mismatch, nothing is
//!    written and every rank stops with an error.
//! 2. **Write**: rank 0 writes and renames the checkpoint (retrying once).
//!    `state.json` records the policy digest, checked again at resume.
//! 3. **Acknowledge**: the ranks sum rank 0's failure flag, so all of them
//!    go on, or all stop with an error naming the checkpoint.
//!
//! A rank that dies before step 2 leaves the previous checkpoint as the
//! latest; one that dies during it leaves rank 0 to finish the rename (the
//! weights were already agreed) or, if the job is stopped first, no new
//! checkpoint: either way the latest complete checkpoint verifies.
//!
//! [`load_resume`] reads a checkpoint back on every rank (checksums
//! verified), and [`agree_equal`] makes sure all ranks resumed from the same
//! one.

use super::GradSync;
use crate::checkpoint::{load_checkpoint, save_checkpoint_with_teacher, LoadedCheckpoint};
use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::model::WeightSnapshot;
use crate::run::sequential::LoopModels;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// Feed the raw bytes of `tensors` (CPU copies, in order) into `h`.
fn hash_tensors<'a>(h: &mut Sha256, tensors: impl IntoIterator<Item = &'a Tensor>) -> Result<()> {
    for t in tensors {
        let c = t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?;
        let n = c.numel() * c.kind().elt_size_in_bytes();
        let mut buf = vec![0u8; n];
        c.f_copy_data_u8(&mut buf, c.numel())?;
        h.update(&buf);
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (hex) over the parameters' raw bytes, in the given order (the
/// optimizer's: sorted by name).
pub fn weights_digest(params: &[Tensor]) -> Result<String> {
    let mut h = Sha256::new();
    hash_tensors(&mut h, params)?;
    Ok(hex(&h.finalize()))
}

/// Check that every rank holds the same `digest` (any length); `what`
/// names it in the error. Every rank reaches the same verdict: with the
/// per-byte sums `S1 = sum x_r` and `S2 = sum x_r^2` over `n` ranks,
/// `sum (x_r - x)^2 = S2 - 2 x S1 + n x^2`, which is 0 (all ranks hold
/// this rank's `x`) exactly when `S1 = n x` and `S2 = n x^2`. The sums are
/// integers below 2^53, so the test is exact in f64.
pub fn agree_equal(sync: &mut dyn GradSync, digest: &[u8], what: &str) -> Result<()> {
    let n = sync.world() as f64;
    let mut v: Vec<f64> = digest.iter().map(|&b| f64::from(b)).collect();
    v.extend(digest.iter().map(|&b| f64::from(b) * f64::from(b)));
    let own = v.clone();
    sync.sum_values(&mut v)?;
    if v.iter().zip(&own).all(|(s, x)| *s == n * x) {
        Ok(())
    } else {
        Err(Error::Distributed(format!(
            "the {} ranks do not hold the same {what}",
            sync.world()
        )))
    }
}

/// Whether a checkpoint is written after `step`: every
/// `checkpoint.every_steps` steps and after the last step.
pub fn due(cfg: &RunConfig, step: u64) -> bool {
    cfg.checkpoint.is_due(step) || step == cfg.runtime.steps
}

/// The state of a rank after a step, as a checkpoint holds it.
#[derive(Debug)]
pub struct RankState<'a> {
    /// The step just trained.
    pub step: u64,
    /// Policy, optimizer, teacher.
    pub models: &'a LoopModels,
    /// The data cursor after the step's prompts.
    pub cursor: &'a serde_json::Value,
    /// Number of ranks.
    pub world: usize,
}

/// What the ranks agree on before a commit, and what the write reuses.
struct StateDigest {
    /// Digest of the step, the policy and teacher weights, the teacher
    /// version and the data cursor.
    digest: Vec<u8>,
    /// The policy's own digest (stored in `state.json`).
    policy_sha: String,
    /// The teacher weights (hashed here, written by rank 0).
    teacher: WeightSnapshot,
}

fn state_digest(s: &RankState<'_>) -> Result<StateDigest> {
    let policy = weights_digest(&s.models.trainer.optimizer.parameters())?;
    let teacher = s.models.teacher.snapshot(s.models.teacher_version)?;
    let mut h = Sha256::new();
    h.update(s.step.to_le_bytes());
    h.update(policy.as_bytes());
    hash_tensors(&mut h, teacher.tensors.iter().map(|(_, t)| t))?;
    h.update(s.models.teacher_version.to_le_bytes());
    h.update(s.cursor.to_string().as_bytes());
    let adaptive = serde_json::to_vec(&s.models.lambda_state)
        .map_err(|e| Error::InvalidInput(format!("adaptive lambda state: {e}")))?;
    h.update(&adaptive);
    Ok(StateDigest {
        digest: h.finalize().to_vec(),
        policy_sha: policy,
        teacher,
    })
}

/// Commit a checkpoint of `s` for all ranks or none (module docs). Returns
/// the checkpoint folder (on every rank) and how long the commit took.
/// `strike` runs between the agreement and the write (the test hook).
pub fn commit(
    sync: &mut dyn GradSync,
    rank: usize,
    cfg: &RunConfig,
    s: &RankState<'_>,
    strike: &dyn Fn(),
) -> Result<PathBuf> {
    let agreed = state_digest(s)?;
    agree_equal(
        sync,
        &agreed.digest,
        &format!(
            "weights and data cursor at step {} (no checkpoint written)",
            s.step
        ),
    )?;
    strike();
    let root = cfg.runtime.out_dir.join(&cfg.checkpoint.dir);
    let dir = root.join(crate::checkpoint::checkpoint_dir_name(s.step));
    let written = if rank == 0 {
        write(cfg, &root, s, &agreed).or_else(|first| {
            tracing::warn!("checkpoint write failed ({first}); retrying once");
            write(cfg, &root, s, &agreed)
        })
    } else {
        Ok(dir.clone())
    };
    let mut failed = [f64::from(u8::from(written.is_err()))];
    sync.sum_values(&mut failed)?;
    match written {
        Err(e) => Err(e),
        Ok(_) if failed[0] > 0.0 => Err(Error::Distributed(format!(
            "rank 0 could not write the checkpoint {} (see rank 0's error)",
            dir.display()
        ))),
        Ok(d) => Ok(d),
    }
}

fn write(cfg: &RunConfig, root: &Path, s: &RankState<'_>, agreed: &StateDigest) -> Result<PathBuf> {
    let m = s.models;
    let state = serde_json::json!({
        "step": s.step,
        "policy_version": s.step,
        "trained_through": s.step,
        "seed": cfg.runtime.seed,
        "data_cursor": s.cursor,
        "teacher_version": m.teacher_version,
        // Rank 0 appends and syncs a step's metrics line before its checkpoint.
        "metrics_lines": s.step,
        "skipped_steps": m.trainer.skipped_steps,
        "world": s.world,
        "weights_sha256": agreed.policy_sha,
        // The adaptive lambda schedule's state after the step (the ranks
        // agree on it: it is in the digest), so an adaptive run resumes
        // exactly, as a one-process run does.
        "adaptive_lambda": m.lambda_state,
    });
    save_checkpoint_with_teacher(
        root,
        s.step,
        &|dir: &Path| m.trainer.policy.save(dir),
        &m.trainer.optimizer.state_tensors(),
        Some(&agreed.teacher.tensors),
        &state,
        &cfg.to_toml(),
        cfg.checkpoint.keep_last,
    )
}

/// A checkpoint read back for a resumed rank.
#[derive(Debug)]
pub struct Resume {
    /// The checkpoint, checksums verified.
    pub checkpoint: LoadedCheckpoint,
    /// The step it was taken after.
    pub step: u64,
    /// The data cursor after that step.
    pub cursor: serde_json::Value,
    /// Skipped steps up to that step.
    pub skipped_steps: u64,
    /// The policy digest the ranks agreed on when it was written.
    pub weights_sha256: Option<String>,
    /// Number of ranks that wrote it.
    pub world: Option<usize>,
    /// The adaptive lambda schedule's state after that step (absent in
    /// checkpoints written before data-parallel runs stored it).
    pub adaptive: Option<crate::rlsd::AdaptiveLambda>,
}

/// Read and verify the checkpoint `dir` (a `step-NNNNNN` folder).
pub fn load_resume(dir: &Path) -> Result<Resume> {
    let checkpoint = load_checkpoint(dir)?;
    let state_path = dir.join(crate::checkpoint::STATE_FILE);
    let field = |key: &str| checkpoint.state.get(key).filter(|v| !v.is_null());
    let bad = |key: &str, why: &str| {
        Error::InvalidInput(format!("{}: `{key}` {why}", state_path.display()))
    };
    let step = match field("trained_through").or_else(|| field("step")) {
        Some(v) => v
            .as_u64()
            .ok_or_else(|| bad("step", "is not a step number"))?,
        None => checkpoint.step,
    };
    if step != checkpoint.step {
        return Err(bad(
            "step",
            &format!("says {step}, the manifest says {}", checkpoint.step),
        ));
    }
    let cursor = field("data_cursor")
        .cloned()
        .ok_or_else(|| bad("data_cursor", "is missing"))?;
    let adaptive = field("adaptive_lambda")
        .map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .map_err(|e| bad("adaptive_lambda", &e.to_string()))?;
    Ok(Resume {
        adaptive,
        step,
        cursor,
        skipped_steps: field("skipped_steps").and_then(|v| v.as_u64()).unwrap_or(0),
        weights_sha256: field("weights_sha256")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        world: field("world").and_then(|v| v.as_u64()).map(|w| w as usize),
        checkpoint,
    })
}

impl Resume {
    /// Install the checkpoint's optimizer state and teacher into `models`
    /// (whose policy was loaded from the checkpoint's model folder), and
    /// check the policy against the digest recorded at the commit.
    pub fn install(&self, models: &mut LoopModels) -> Result<()> {
        let ck = &self.checkpoint;
        models.trainer.optimizer.load_state_tensors(&ck.optimizer)?;
        models.trainer.skipped_steps = self.skipped_steps;
        if let Some(a) = self.adaptive {
            models.lambda_state = a;
        }
        let version = ck
            .state
            .get("teacher_version")
            .and_then(|v| v.as_u64())
            .unwrap_or(self.step);
        if let Some(t) = &ck.teacher {
            models.teacher.load_snapshot(&WeightSnapshot {
                version,
                tensors: t
                    .iter()
                    .map(|(n, x)| (n.clone(), x.shallow_clone()))
                    .collect(),
            })?;
            models.teacher_version = version;
        } else {
            let snap = models.trainer.policy.snapshot(self.step)?;
            models.teacher.load_snapshot(&snap)?;
            models.teacher_version = self.step;
        }
        if let Some(want) = &self.weights_sha256 {
            let got = weights_digest(&models.trainer.optimizer.parameters())?;
            if &got != want {
                return Err(Error::InvalidInput(format!(
                    "{}: the policy loaded from {} has digest {got}, state.json records {want}",
                    ck.dir.display(),
                    ck.model_dir.display()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rank whose peers hold `others`: `sum_values` adds their
    /// `(bytes, squares)` vectors, as an all-reduce would.
    #[derive(Debug)]
    struct Peers {
        others: Vec<Vec<u8>>,
    }

    impl GradSync for Peers {
        fn world(&self) -> usize {
            self.others.len() + 1
        }
        fn sum_values(&mut self, values: &mut [f64]) -> Result<()> {
            for o in &self.others {
                let sq = o.iter().map(|&b| f64::from(b) * f64::from(b));
                for (v, x) in values
                    .iter_mut()
                    .zip(o.iter().map(|&b| f64::from(b)).chain(sq))
                {
                    *v += x;
                }
            }
            Ok(())
        }
        fn sum_grads(&mut self, _: &[Tensor]) -> Result<()> {
            Ok(())
        }
    }

    fn agree(own: &[u8], others: &[&[u8]]) -> bool {
        let mut p = Peers {
            others: others.iter().map(|o| o.to_vec()).collect(),
        };
        agree_equal(&mut p, own, "test digest").is_ok()
    }

    #[test]
    fn equal_digests_agree_and_any_difference_is_seen() {
        assert!(agree(&[7, 255, 0], &[]));
        assert!(agree(&[7, 255, 0], &[&[7, 255, 0], &[7, 255, 0]]));
        assert!(!agree(&[7, 255, 0], &[&[7, 254, 0]]));
        // Sums alone would miss this: 10 + 9 + 11 = 3 * 10, but the squares
        // differ (100 + 81 + 121 = 302 != 300).
        assert!(!agree(&[10], &[&[9], &[11]]));
        // ...and every rank reaches the same verdict.
        assert!(!agree(&[9], &[&[10], &[11]]));
        let mut p = Peers {
            others: vec![vec![1]],
        };
        let e = agree_equal(&mut p, &[2], "weights at step 3")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2 ranks") && e.contains("weights at step 3"),
            "{e}"
        );
    }
}
