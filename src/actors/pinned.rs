//! The policy versions in flight, across a checkpoint (issue 24; docs/RUNTIME.md,
//! "Staleness").
//!
//! At `runtime.max_staleness = s` step `k + j` (`1 <= j <= s`) is sampled with
//! policy version `k + j - 1 - s`, scored with the teacher that version's
//! commit published, and (adaptive lambda) planned from the schedule's state
//! after it. So the checkpoint of step `k` carries, besides step `k`'s
//! weights, the commits of versions `k - s .. k - 1` as the commit board
//! keeps them ([`checkpoint_files`]), and a resume puts them back on the
//! board ([`seed_board`]): the resumed run then computes every step exactly
//! as the uninterrupted one. A checkpoint without them (written before they
//! existed, or at a smaller staleness) still resumes, with a warning that the
//! first `s` steps run with newer weights than the uninterrupted run did.

use super::commit::{cpu_copy, CommitBoard, Frozen, Published};
use crate::checkpoint::{LoadedCheckpoint, TensorFile, TEACHER_FILE};
use crate::error::Result;
use crate::model::WeightSnapshot;
use crate::run::resume::{PinnedVersion, Resumed};
use std::collections::BTreeMap;
use std::sync::Arc;
use tch::Tensor;

/// The folder inside a checkpoint holding the pinned versions' weights.
pub const PINNED_DIR: &str = "pinned";

/// What the checkpoint of the latest commit stores of the `earlier` kept
/// commits: their descriptions (`state.json`'s `pinned_versions`) and the
/// tensor files to write. Each version's policy weights get a file; a
/// teacher version gets one only when neither `teacher.safetensors` (which
/// holds `teacher_version`) nor a pinned policy file holds it already.
pub fn checkpoint_files(
    earlier: &[Arc<Published>],
    teacher_version: u64,
) -> Result<(Vec<PinnedVersion>, Vec<TensorFile>)> {
    let mut files = Vec::new();
    // Weights version -> the file holding it (teacher and policy versions
    // are both policy versions: a teacher is the policy of its sync step).
    let mut holding: BTreeMap<u64, String> = BTreeMap::new();
    for p in earlier {
        let rel = format!("{PINNED_DIR}/policy-{:06}.safetensors", p.step);
        files.push((rel.clone(), shallow(&p.policy)?));
        holding.insert(p.step, rel);
    }
    holding.insert(teacher_version, TEACHER_FILE.to_string());
    let mut pinned = Vec::with_capacity(earlier.len());
    for p in earlier {
        let tv = p.teacher.version();
        let teacher_file = match holding.get(&tv) {
            Some(f) => f.clone(),
            None => {
                let rel = format!("{PINNED_DIR}/teacher-{tv:06}.safetensors");
                files.push((rel.clone(), shallow(&p.teacher)?));
                holding.insert(tv, rel.clone());
                rel
            }
        };
        pinned.push(PinnedVersion {
            version: p.step,
            policy_file: format!("{PINNED_DIR}/policy-{:06}.safetensors", p.step),
            teacher_version: tv,
            teacher_file,
            data_cursor: p.cursor.clone(),
            adaptive_lambda: p.adaptive,
        });
    }
    Ok((pinned, files))
}

/// Views of a frozen copy's tensors (no copy: frozen tensors never change).
fn shallow(f: &Frozen) -> Result<Vec<(String, Tensor)>> {
    f.with_tensors(|t| {
        t.iter()
            .map(|(n, x)| (n.clone(), x.shallow_clone()))
            .collect()
    })
}

/// The commit board of a run starting at `start` (the checkpoint's step, or
/// 0), keeping `max_staleness` commits before the latest. A resumed
/// checkpoint's pinned versions go on it; the ones a staleness-`s` run needs
/// but the checkpoint lacks are named in a warning (that resume is not
/// bit-exact). `lora`: the replicas take the adapters only.
pub fn seed_board(
    start: Published,
    resumed: Option<(&LoadedCheckpoint, &Resumed)>,
    max_staleness: u64,
    lora: bool,
) -> Result<CommitBoard> {
    let Some((ck, r)) = resumed else {
        return Ok(CommitBoard::new(start, max_staleness));
    };
    let k = start.step;
    let needed = k.saturating_sub(max_staleness)..k;
    let mut by_file: BTreeMap<String, Frozen> = BTreeMap::new();
    by_file.insert(TEACHER_FILE.to_string(), start.teacher.clone());
    let mut earlier = Vec::new();
    for p in r.pinned.iter().filter(|p| needed.contains(&p.version)) {
        let policy = frozen(ck, &mut by_file, &p.policy_file, p.version, lora)?;
        let teacher = frozen(ck, &mut by_file, &p.teacher_file, p.teacher_version, lora)?;
        earlier.push(Published {
            step: p.version,
            cursor: p.data_cursor.clone(),
            policy,
            teacher,
            adaptive: p.adaptive_lambda,
        });
    }
    let missing: Vec<u64> = needed
        .filter(|v| !earlier.iter().any(|p| p.step == *v))
        .collect();
    if let (Some(first), Some(last)) = (missing.first(), missing.last()) {
        tracing::warn!(
            "{} holds no policy weights of version {} (written before checkpoints carried the versions in flight, or at a smaller runtime.max_staleness): {} sampled with newer weights than the uninterrupted run used, so this resume is not bit-exact",
            ck.dir.display(),
            span(*first, *last),
            match max_staleness {
                1 => format!("step {} is", k + 1),
                _ => format!("steps {} are", span(k + 1, k + max_staleness)),
            },
        );
    }
    Ok(CommitBoard::seeded(earlier, start, max_staleness))
}

/// `a` or `a..=b`.
fn span(a: u64, b: u64) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}..={b}")
    }
}

/// The weights of `version` in the checkpoint file `rel` (read once per
/// file), in host memory.
fn frozen(
    ck: &LoadedCheckpoint,
    by_file: &mut BTreeMap<String, Frozen>,
    rel: &str,
    version: u64,
    lora: bool,
) -> Result<Frozen> {
    if let Some(f) = by_file.get(rel).filter(|f| f.version() == version) {
        return Ok(f.clone());
    }
    let snap = WeightSnapshot {
        version,
        tensors: ck.read_tensors(rel)?,
    };
    // With LoRA a replica takes the adapters (the base is shared).
    let snap = if lora { snap.adapters_only() } else { snap };
    let f = Frozen::new(cpu_copy(snap)?);
    by_file.insert(rel.to_string(), f.clone());
    Ok(f)
}
