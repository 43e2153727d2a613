//! Verifier pool: scores every response of a batch on up to
//! `verifier_workers` blocking threads at once. A verification that panics or
//! runs past `verifier_timeout_s` scores 0 with the reason recorded; it never
//! stops the run. A timed-out in-process verifier is abandoned (its thread is
//! left to finish on its own) and its worker slot is freed at once, so the
//! pool never shrinks; the step counts it in `verifier_timeouts`. The command
//! verifier's own timeout is capped at `verifier_timeout_s`, so its process
//! group is killed by then.

use super::messages::{TeacherMsg, VerifierMsg};
use super::shared::Shared;
use crate::fault::Role;
use crate::pipeline::{verify_one, Score, ScoredBatch};
use crate::verify::{Verdict, Verifier};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The verifier actor.
#[derive(Debug)]
pub struct VerifierPool;

/// What the supervisor hands a (re)spawned verifier pool.
pub struct VerifierArgs {
    /// Run context.
    pub shared: Arc<Shared>,
    /// The reward function.
    pub verifier: Arc<dyn Verifier>,
}

impl std::fmt::Debug for VerifierArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierArgs").finish()
    }
}

/// Verifier state.
#[derive(Debug)]
pub struct VerifierState {
    args: VerifierArgs,
    /// Bounds concurrent verifications.
    workers: Arc<Semaphore>,
}

impl Actor for VerifierPool {
    type Msg = VerifierMsg;
    type State = VerifierState;
    type Arguments = VerifierArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: VerifierArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let workers = Arc::new(Semaphore::new(args.shared.cfg.runtime.verifier_workers));
        Ok(VerifierState { args, workers })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let VerifierMsg::Verify(batch) = msg;
        let mut batch = *batch;
        let ctx = st.args.shared.clone();
        ctx.faults.check(Role::Verifier, batch.plan.step)?;
        let t0 = Instant::now();
        let timeout = Duration::from_secs_f64(ctx.cfg.runtime.verifier_timeout_s);
        let mut tasks = Vec::with_capacity(batch.rollouts.len());
        for s in &batch.rollouts {
            if let Some(e) = &s.episode {
                // A multi-turn episode was scored by its environment.
                let (v, failed) = (e.score.verdict(), e.score.timed_out);
                tasks.push(tokio::spawn(async move { (v, failed) }));
                continue;
            }
            let permit = st.workers.clone().acquire_owned().await?;
            let verifier = st.args.verifier.clone();
            let ex = batch.plan.examples[s.group].clone();
            let text = s.response_text.clone();
            tasks.push(tokio::spawn(async move {
                let job =
                    tokio::task::spawn_blocking(move || verify_one(verifier.as_ref(), &ex, &text));
                let out = match tokio::time::timeout(timeout, job).await {
                    Ok(Ok(v)) => (v, false),
                    Ok(Err(e)) => (Verdict::wrong(format!("verifier task failed: {e}")), false),
                    Err(_) => (
                        Verdict::wrong(format!(
                            "verifier timed out after {:.1}s",
                            timeout.as_secs_f64()
                        )),
                        true,
                    ),
                };
                // The slot is free again whether the verifier returned or was abandoned.
                drop(permit);
                out
            }));
        }
        let mut scores = Vec::with_capacity(tasks.len());
        for t in tasks {
            let (v, timed_out) = t
                .await
                .unwrap_or_else(|e| (Verdict::wrong(format!("verifier task failed: {e}")), false));
            if timed_out {
                tracing::warn!(
                    step = batch.plan.step,
                    "verifier abandoned after its timeout"
                );
            }
            scores.push(Score::of(v, timed_out));
        }
        batch.timings.verify_s = t0.elapsed().as_secs_f64();
        let scored = ScoredBatch::new(batch, scores)?;
        ctx.send(|p| p.teacher.clone(), TeacherMsg::Score(Box::new(scored)));
        Ok(())
    }
}
