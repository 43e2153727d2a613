//! Fault injection for rehearsing failures (off by default).
//!
//! `faults = ["sampler@3", "optimizer@5:panic"]` makes the named actor fail
//! the first time it handles step 3 (returning an error) or step 5 (panicking).
//! `optimizer@4:adam` fails *inside* the AdamW update of step 4, after half of
//! the parameters' new values were computed (the update must stay atomic).
//! `optimizer@4:disk` makes every write of the step-4 checkpoint fail with
//! "no space left on device" after the model files are written;
//! `optimizer@4:stall` holds the step-4 checkpoint write for 3 s before its
//! manifest (a window for tests that kill the process mid-write).
//! Each other fault fires once per run, so the re-issued step then succeeds.

use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::Arc;

/// The six actor kinds of the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Owns the step counter, the schedules and the data cursor.
    Scheduler,
    /// Generates responses.
    Sampler,
    /// Scores responses.
    Verifier,
    /// Computes teacher log-probs under the privileged context.
    Teacher,
    /// Computes group advantages and assembles the train batch.
    Credit,
    /// Runs the train step and publishes weights.
    Optimizer,
}

impl Role {
    /// All roles, in pipeline order.
    pub const ALL: [Role; 6] = [
        Role::Scheduler,
        Role::Sampler,
        Role::Verifier,
        Role::Teacher,
        Role::Credit,
        Role::Optimizer,
    ];

    /// The config name of this role.
    pub fn name(self) -> &'static str {
        match self {
            Role::Scheduler => "scheduler",
            Role::Sampler => "sampler",
            Role::Verifier => "verifier",
            Role::Teacher => "teacher",
            Role::Credit => "credit",
            Role::Optimizer => "optimizer",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// How an injected fault fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The handler returns an error.
    Error,
    /// The handler panics.
    Panic,
    /// The AdamW update fails part-way (optimizer only).
    Adam,
    /// Every write of that step's checkpoint fails (disk full).
    Disk,
    /// That step's checkpoint write pauses 3 s before its manifest, once.
    Stall,
}

/// One planned failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fault {
    /// Which actor fails.
    pub role: Role,
    /// At which step.
    pub step: u64,
    /// How.
    pub kind: FaultKind,
}

/// The planned failures of a run, and which have fired. Shared by all actors
/// (and their respawns) so a fault fires exactly once.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    faults: Vec<Fault>,
    fired: Arc<Mutex<HashSet<Fault>>>,
}

impl FaultPlan {
    /// Parse `role@step[:error|:panic]` entries; errors name the entry.
    pub fn parse(specs: &[String]) -> Result<Self> {
        let mut faults = Vec::new();
        for spec in specs {
            let bad = |why: &str| {
                Error::config(
                    "runtime.faults",
                    format!("`{spec}`: {why} (expected role@step[:error|:panic], roles: scheduler, sampler, verifier, teacher, credit, optimizer)"),
                )
            };
            let (role, rest) = spec.split_once('@').ok_or_else(|| bad("missing @"))?;
            let role = Role::parse(role.trim()).ok_or_else(|| bad("unknown role"))?;
            let (step, kind) = match rest.split_once(':') {
                Some((s, k)) => (s, k),
                None => (rest, "error"),
            };
            let step: u64 = step
                .trim()
                .parse()
                .map_err(|_| bad("step is not a number"))?;
            if step == 0 {
                return Err(bad("steps count from 1"));
            }
            let kind = match kind.trim() {
                "error" => FaultKind::Error,
                "panic" => FaultKind::Panic,
                "adam" if role == Role::Optimizer => FaultKind::Adam,
                "disk" if role == Role::Optimizer => FaultKind::Disk,
                "stall" if role == Role::Optimizer => FaultKind::Stall,
                "adam" | "disk" | "stall" => {
                    return Err(bad(
                        "kinds adam, disk and stall apply to the optimizer only",
                    ))
                }
                _ => return Err(bad("kind must be error, panic, adam, disk or stall")),
            };
            faults.push(Fault { role, step, kind });
        }
        Ok(Self {
            faults,
            fired: Arc::default(),
        })
    }

    /// Fail here if a fault is planned for `role` at `step` and has not fired yet.
    /// Panics for `:panic` faults: that is the point of the rehearsal. The
    /// panic message is one short line; the binary's panic hook prints it
    /// without a backtrace.
    pub fn check(&self, role: Role, step: u64) -> Result<()> {
        for f in &self.faults {
            if matches!(f.kind, FaultKind::Error | FaultKind::Panic)
                && f.role == role
                && f.step == step
                && self.fired.lock().insert(*f)
            {
                tracing::warn!(role = role.name(), step, kind = ?f.kind, "injected fault");
                match f.kind {
                    FaultKind::Error => {
                        return Err(Error::Runtime(format!(
                            "injected fault in {} at step {step}",
                            role.name()
                        )))
                    }
                    FaultKind::Panic => {
                        panic!("injected panic in {} at step {step}", role.name())
                    }
                    FaultKind::Adam | FaultKind::Disk | FaultKind::Stall => {}
                }
            }
        }
        Ok(())
    }

    /// True (once) when an `optimizer@step:adam` fault is planned for `step`:
    /// the caller then arms [`crate::optim::AdamW::inject_fault_at`].
    pub fn take_adam(&self, step: u64) -> bool {
        self.faults
            .iter()
            .any(|f| f.kind == FaultKind::Adam && f.step == step && self.fired.lock().insert(*f))
    }

    /// The checkpoint-write fault planned for `step`, if any: `Disk` every
    /// time, `Stall` once.
    pub fn checkpoint_fault(&self, step: u64) -> Option<FaultKind> {
        self.faults.iter().find_map(|f| match f.kind {
            FaultKind::Disk if f.step == step => Some(FaultKind::Disk),
            FaultKind::Stall if f.step == step && self.fired.lock().insert(*f) => {
                Some(FaultKind::Stall)
            }
            _ => None,
        })
    }

    /// Number of planned faults.
    pub fn len(&self) -> usize {
        self.faults.len()
    }

    /// True when no fault is planned.
    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }
}

/// Print injected panics as one line instead of a backtrace (the binary
/// installs this; other panics keep the default hook).
pub fn short_injected_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("injected panic") {
            eprintln!("rlsd: {msg} (rehearsed fault; the supervisor restarts the actor)");
        } else {
            default(info)
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_fires_once() {
        let plan =
            FaultPlan::parse(&["sampler@3".to_string(), "optimizer@5:panic".to_string()]).unwrap();
        assert_eq!(plan.len(), 2);
        assert!(plan.check(Role::Sampler, 2).is_ok());
        assert!(plan.check(Role::Sampler, 3).is_err());
        assert!(plan.check(Role::Sampler, 3).is_ok(), "fires once");
        let p2 = plan.clone();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            p2.check(Role::Optimizer, 5)
        }));
        assert!(r.is_err());
        assert!(plan.check(Role::Optimizer, 5).is_ok());
        let adam = FaultPlan::parse(&["optimizer@4:adam".to_string()]).unwrap();
        assert!(
            adam.check(Role::Optimizer, 4).is_ok(),
            "not a handler fault"
        );
        assert!(!adam.take_adam(3));
        assert!(adam.take_adam(4));
        assert!(!adam.take_adam(4), "fires once");
    }

    #[test]
    fn bad_specs_name_the_entry() {
        for bad in [
            "sampler",
            "gpu@1",
            "sampler@x",
            "sampler@0",
            "sampler@2:explode",
            "sampler@2:adam",
        ] {
            let err = FaultPlan::parse(&[bad.to_string()])
                .unwrap_err()
                .to_string();
            assert!(err.contains(bad) && err.contains("runtime.faults"), "{err}");
        }
    }
}
