//! Verifiers: reward functions behind the `Verifier` trait.
