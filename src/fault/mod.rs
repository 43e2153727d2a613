//! Fault injection for rehearsing failures (off by default): one home for the
//! actor runtime's plan ([`actors`]: `runtime.faults = ["sampler@3"]`) and the
//! data-parallel ranks' hook ([`ranks`]: `RLSD_DIST_FAIL=R:S`). Plain parsed
//! values; the runtime and the ranks arm them.

pub mod actors;
pub mod ranks;

pub use actors::{short_injected_panics, Fault, FaultKind, FaultPlan, Role};
pub use ranks::{FaultPoint, RankFault, FAULT_VAR};
