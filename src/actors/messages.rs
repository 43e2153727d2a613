//! What flows between the actors: one typed batch per pipeline stage
//! ([`crate::pipeline`]) and the optimizer's published commits. Per-token
//! data are plain vectors; the only tensors that cross actors are the frozen
//! weight copies inside a [`Published`] commit.

use super::commit::Published;
use crate::pipeline::{CreditBatch, RolloutBatch, ScoredBatch, TeacherBatch};
use crate::stats::StepStats;
use ractor::RpcReplyPort;
use std::sync::Arc;

pub use crate::pipeline::StepPlan;

/// Messages to the scheduler.
#[derive(Debug)]
pub enum SchedulerMsg {
    /// Issue the first steps.
    Start,
    /// The optimizer committed a step.
    StepDone(Box<StepStats>),
    /// An actor was respawned: send in-flight steps again.
    Reissue,
    /// Stop issuing, checkpoint, and finish (a signal or a spent restart budget).
    Shutdown {
        /// Why the run stops.
        reason: String,
        /// Whether the run ends as a failure.
        failed: bool,
    },
}

/// Messages to the sampler.
#[derive(Debug)]
pub enum SamplerMsg {
    /// Generate the responses of a step.
    Generate(StepPlan),
    /// The optimizer committed a step (now on the commit board): plans
    /// waiting for that version can run.
    Committed(Arc<Published>),
}

/// Messages to the verifier pool.
#[derive(Debug)]
pub enum VerifierMsg {
    /// Score every response of a batch.
    Verify(Box<RolloutBatch>),
}

/// Messages to the teacher-scorer.
#[derive(Debug)]
pub enum TeacherMsg {
    /// Score the batch's responses under the privileged context.
    Score(Box<ScoredBatch>),
    /// The optimizer committed a step (now on the commit board): batches
    /// waiting for that commit's teacher can be scored.
    Committed(Arc<Published>),
}

/// Messages to the credit-assigner.
#[derive(Debug)]
pub enum CreditMsg {
    /// Compute advantages and hand the batch to the optimizer.
    Assign(Box<TeacherBatch>),
}

/// Messages to the optimizer.
#[derive(Debug)]
pub enum OptimizerMsg {
    /// Train on a finished batch.
    Train(Box<CreditBatch>),
    /// Write a checkpoint of the last committed step (the optimizer holds
    /// every part of it); replies with its folder.
    Checkpoint {
        /// The final checkpoint: train nothing after it.
        last: bool,
        /// The checkpoint folder (`None` when no step was ever committed).
        reply: RpcReplyPort<Result<Option<std::path::PathBuf>, String>>,
    },
}

/// Messages to the supervisor.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Start the run (sent once the tree is up).
    Start,
    /// Stop gracefully (a signal).
    Shutdown(String),
    /// The scheduler is ending the run: children that stop from now on are
    /// not failures.
    Stopping,
}
