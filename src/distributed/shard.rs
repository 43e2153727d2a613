//! Which prompt groups of a step a rank trains on: contiguous, whole groups,
//! the first `groups % world` ranks taking one more (uneven counts allowed,
//! a rank may get none).

use std::ops::Range;

/// The groups of `0..groups` that `rank` of `world` takes.
pub fn group_range(groups: usize, world: usize, rank: usize) -> Range<usize> {
    assert!(world > 0 && rank < world, "rank {rank} of world {world}");
    let base = groups / world;
    let extra = groups % world;
    let start = rank * base + rank.min(extra);
    let len = base + usize::from(rank < extra);
    start..start + len
}

#[cfg(test)]
mod tests {
    use super::group_range;

    #[test]
    fn covers_every_group_once_in_order() {
        for groups in 0..12 {
            for world in 1..5 {
                let mut next = 0;
                for rank in 0..world {
                    let r = group_range(groups, world, rank);
                    assert_eq!(r.start, next, "groups {groups} world {world} rank {rank}");
                    next = r.end;
                }
                assert_eq!(next, groups);
            }
        }
    }

    #[test]
    fn uneven_counts_go_to_the_first_ranks() {
        assert_eq!(group_range(5, 3, 0), 0..2);
        assert_eq!(group_range(5, 3, 1), 2..4);
        assert_eq!(group_range(5, 3, 2), 4..5);
        assert_eq!(group_range(1, 2, 1), 1..1);
    }
}
