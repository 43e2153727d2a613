//! Index plans of the Qwen2.5-VL vision tower: the (h, w) patch positions its
//! 2D rotary reads, the attention segments of full-image blocks, and the
//! window order of window-attention blocks.
//!
//! Mirrors transformers' `get_vision_position_ids`, `get_vision_cu_seqlens`
//! and `get_vision_window_index` (`transformers/vision_utils.py`). Patches
//! arrive in the processor's order: merge blocks row-major, the
//! `merge x merge` patches of a block row-major inside it. A window is a
//! square of `window_size / merge / patch` merged patches; windows at the
//! right and bottom edges are smaller.

/// Everything the tower needs to know about the images of one forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisionPlan {
    /// `(h, w)` grid position of every patch, in the processor's order.
    pub positions: Vec<[i64; 2]>,
    /// Boundaries of full attention: one segment per frame of each image.
    pub cu_seqlens: Vec<i64>,
    /// Merged-patch order that puts each window's patches together.
    pub window_index: Vec<i64>,
    /// Boundaries of the windows, in patches, over the window order.
    pub cu_window_seqlens: Vec<i64>,
}

impl VisionPlan {
    /// The plan for images with patch grids `grids` (`(t, h, w)` each, `h`
    /// and `w` multiples of `merge`); `window` is the window side in merged patches.
    pub fn new(grids: &[[usize; 3]], merge: usize, window: usize) -> VisionPlan {
        let unit = (merge * merge) as i64;
        let mut positions = Vec::new();
        let mut cu_seqlens = vec![0i64];
        let mut window_index = Vec::new();
        let mut cu_window_seqlens = vec![0i64];
        let mut offset = 0i64;
        for &[t, h, w] in grids {
            // Positions: merge blocks row-major, patches inside a block row-major.
            let mut frame = Vec::with_capacity(h * w);
            for bh in 0..h / merge {
                for bw in 0..w / merge {
                    for i in 0..merge {
                        for j in 0..merge {
                            frame.push([(bh * merge + i) as i64, (bw * merge + j) as i64]);
                        }
                    }
                }
            }
            for _ in 0..t {
                positions.extend_from_slice(&frame);
                let last = *cu_seqlens.last().unwrap_or(&0);
                cu_seqlens.push(last + (h * w) as i64);
            }
            // Windows over the merged grid, per frame.
            let (lh, lw) = (h / merge, w / merge);
            for f in 0..t {
                for wh in 0..lh.div_ceil(window) {
                    for ww in 0..lw.div_ceil(window) {
                        let mut count = 0i64;
                        for r in wh * window..((wh + 1) * window).min(lh) {
                            for c in ww * window..((ww + 1) * window).min(lw) {
                                window_index.push(offset + (f * lh * lw + r * lw + c) as i64);
                                count += 1;
                            }
                        }
                        let last = *cu_window_seqlens.last().unwrap_or(&0);
                        cu_window_seqlens.push(last + count * unit);
                    }
                }
            }
            offset += (t * lh * lw) as i64;
        }
        VisionPlan {
            positions,
            cu_seqlens,
            window_index,
            cu_window_seqlens,
        }
    }

    /// Lengths of the segments between consecutive boundaries.
    pub fn lengths(cu: &[i64]) -> Vec<i64> {
        cu.windows(2).map(|p| p[1] - p[0]).collect()
    }

    /// The inverse permutation of [`VisionPlan::window_index`]: where each
    /// merged patch of the processor's order sits in the window order.
    pub fn reverse_index(&self) -> Vec<i64> {
        let mut rev = vec![0i64; self.window_index.len()];
        for (k, &i) in self.window_index.iter().enumerate() {
            rev[i as usize] = k as i64;
        }
        rev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_merge_blocks() {
        // grid 1 x 2 x 4, merge 2: block (0,0) then block (0,1).
        let p = VisionPlan::new(&[[1, 2, 4]], 2, 2);
        let want: Vec<[i64; 2]> = vec![
            [0, 0],
            [0, 1],
            [1, 0],
            [1, 1],
            [0, 2],
            [0, 3],
            [1, 2],
            [1, 3],
        ];
        assert_eq!(p.positions, want);
        assert_eq!(p.cu_seqlens, vec![0, 8]);
    }

    #[test]
    fn windows_match_transformers_on_a_ragged_grid() {
        // Merged grid 3 x 3, window 2: windows {0,1,3,4}, {2,5}, {6,7}, {8};
        // then a second image, merged 2 x 3: {0,1,3,4}, {2,5} offset by 9.
        // (Worked out from get_vision_window_index by hand.)
        let p = VisionPlan::new(&[[1, 6, 6], [1, 4, 6]], 2, 2);
        assert_eq!(
            p.window_index,
            vec![0, 1, 3, 4, 2, 5, 6, 7, 8, 9, 10, 12, 13, 11, 14]
        );
        assert_eq!(p.cu_window_seqlens, vec![0, 16, 24, 32, 36, 52, 60]);
        assert_eq!(p.cu_seqlens, vec![0, 36, 60]);
        let rev = p.reverse_index();
        for (k, &i) in p.window_index.iter().enumerate() {
            assert_eq!(rev[i as usize], k as i64);
        }
    }
}
