//! The actor runtime: scheduler, sampler, verifier pool, teacher-scorer,
//! credit-assigner and optimizer under a supervisor.
