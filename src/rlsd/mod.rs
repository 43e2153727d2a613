//! The RLSD math: advantages, token credit, losses, schedules (see RLSD-SPEC.md).
