//! As tests/dist_equal.rs, for the algorithms that distil or contrast: two
//! Gloo ranks on their shares of the groups end with the one-rank weights
//! (within 1e-5 after 5 steps, float64) and bit-identical to each other.

mod dist_common;

use dist_common::check;
use rlsd::rlsd::Algo;

#[test]
#[cfg_attr(
    rlsd_no_gloo,
    ignore = "built without gloo's headers: scripts/setup_gloo.sh could not fetch them"
)]
fn two_ranks_equal_one_for_opsd_and_sdpo() {
    check(Algo::Opsd, 4, 2);
    check(Algo::Sdpo, 4, 2);
}

#[test]
#[cfg_attr(
    rlsd_no_gloo,
    ignore = "built without gloo's headers: scripts/setup_gloo.sh could not fetch them"
)]
fn two_ranks_equal_one_for_cepo_and_grpo_opsd() {
    check(Algo::Cepo, 4, 2);
    check(Algo::GrpoOpsd, 4, 2);
}
