//! Data-parallel train steps over real c10d Gloo process groups (ranks as
//! threads of this test, each with its own policy replica): R ranks, each
//! training on its share of the groups, end with the weights of one rank
//! training on the whole batch (within 1e-5 after 5 steps), for GRPO
//! and RLSD (tests/dist_equal_algos.rs: the other algorithms); ranks stay bit-identical; uneven group counts (and a rank with
//! no groups) work; with LoRA adapters only the adapters' gradients are
//! all-reduced and two ranks still equal one.

mod dist_common;

use dist_common::{check, check_lora};
use rlsd::rlsd::Algo;

#[test]
#[cfg_attr(
    rlsd_no_gloo,
    ignore = "built without gloo's headers: scripts/setup_gloo.sh could not fetch them"
)]
fn two_ranks_equal_one_for_grpo_and_rlsd() {
    check(Algo::Grpo, 4, 2);
    check(Algo::Rlsd, 4, 2);
}

#[test]
#[cfg_attr(
    rlsd_no_gloo,
    ignore = "built without gloo's headers: scripts/setup_gloo.sh could not fetch them"
)]
fn three_ranks_with_uneven_groups_equal_one() {
    check(Algo::Rlsd, 5, 3);
    check(Algo::Grpo, 4, 3);
}

#[test]
#[cfg_attr(
    rlsd_no_gloo,
    ignore = "built without gloo's headers: scripts/setup_gloo.sh could not fetch them"
)]
fn a_rank_with_no_groups_still_takes_the_step() {
    check(Algo::Rlsd, 2, 3);
}

#[test]
#[cfg_attr(
    rlsd_no_gloo,
    ignore = "built without gloo's headers: scripts/setup_gloo.sh could not fetch them"
)]
fn two_ranks_equal_one_with_lora_adapters() {
    check_lora(Algo::Rlsd, 4, 2);
    check_lora(Algo::Grpo, 3, 2);
}
