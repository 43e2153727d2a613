//! Teacher-scorer: owns the teacher replica (the policy, refreshed every
//! `teacher_sync_interval` steps) and scores each response's tokens under the
//! privileged context, with no gradient. CEPO adds a second pass.

use super::ctx::{join_err, Ctx};
use super::fault::Role;
use super::messages::{Batch, CreditMsg, TeacherMsg};
use super::stages::teacher_pass;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::Instant;

/// The teacher-scorer actor.
#[derive(Debug)]
pub struct TeacherScorer;

/// Teacher state: batches waiting for the teacher weights they need.
#[derive(Debug)]
pub struct TeacherState {
    ctx: Arc<Ctx>,
    #[allow(clippy::vec_box)] // batches arrive boxed and leave boxed
    waiting: Vec<Box<Batch>>,
}

/// Teacher weights version step `plan.min_version` requires: the latest
/// multiple of the sync interval (with `max_staleness = 0`, exactly the
/// version a sequential loop would use).
pub fn required_teacher_version(min_version: u64, interval: u64) -> u64 {
    (min_version / interval) * interval
}

impl Actor for TeacherScorer {
    type Msg = TeacherMsg;
    type State = TeacherState;
    type Arguments = Arc<Ctx>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        ctx: Arc<Ctx>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(TeacherState {
            ctx,
            waiting: Vec::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TeacherMsg::Weights(snap) => {
                st.ctx.install_snapshot(|c| &c.teacher, snap).await?;
                for b in std::mem::take(&mut st.waiting) {
                    score(st, b).await?;
                }
            }
            TeacherMsg::Score(batch) => score(st, batch).await?,
        }
        Ok(())
    }
}

async fn score(st: &mut TeacherState, mut batch: Box<Batch>) -> Result<(), ActorProcessingErr> {
    let ctx = st.ctx.clone();
    let need = required_teacher_version(
        batch.plan.min_version,
        ctx.cfg.runtime.teacher_sync_interval,
    );
    if ctx.teacher.lock().version < need {
        st.waiting.push(batch);
        return Ok(());
    }
    ctx.faults.check(Role::Teacher, batch.plan.step)?;
    let t0 = Instant::now();
    let c2 = ctx.clone();
    let batch = tokio::task::spawn_blocking(move || -> crate::Result<Box<Batch>> {
        let r = c2.teacher.lock();
        let b = &mut *batch;
        teacher_pass(
            &r.model,
            &c2.template,
            &b.plan.examples,
            &mut b.samples,
            &c2.cfg.algo,
            b.plan.lambda,
            c2.cfg.rollout.temperature,
        )?;
        b.teacher_version = r.version;
        Ok(batch)
    })
    .await
    .map_err(join_err)??;
    let mut batch = batch;
    batch.timings.teacher_s = t0.elapsed().as_secs_f64();
    ctx.send(|p| p.credit.clone(), CreditMsg::Assign(batch));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::required_teacher_version;

    #[test]
    fn teacher_version_is_latest_multiple_of_interval() {
        // interval 10: steps 1..=10 use version 0, steps 11..=20 version 10.
        assert_eq!(required_teacher_version(0, 10), 0);
        assert_eq!(required_teacher_version(9, 10), 0);
        assert_eq!(required_teacher_version(10, 10), 10);
        // interval 1 is the live policy.
        assert_eq!(required_teacher_version(7, 1), 7);
    }
}
