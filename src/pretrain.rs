//! Supervised warm-up that produces the built-in task's base policy.
