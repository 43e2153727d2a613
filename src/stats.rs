//! `StepStats`: what one training step reports.
