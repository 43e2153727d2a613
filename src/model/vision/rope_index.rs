//! Multimodal rotary position ids (M-RoPE) of Qwen2-VL, Qwen2.5-VL and Qwen3-VL.
//!
//! Each token gets three positions (temporal, height, width). Text tokens use
//! the same running position on all three axes. The `t*h*w / merge^2` pad
//! tokens of an image, starting at position `p`, get `(p + t', p + row, p + col)`
//! over the merged grid, row-major; the text after the image resumes at
//! `p + max(h, w) / merge`. This is transformers' `get_rope_index` for images
//! (identical in the three models' modelling files), run per sequence over the
//! tokens the attention mask keeps; masked positions are 0.
//!
//! Generation continues with `position = index + delta` on all three axes, where
//! `delta = max(prompt positions) + 1 - prompt length` (transformers'
//! `mrope_position_deltas`).

use crate::error::{Error, Result};

/// M-RoPE positions of one sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RopeIndex {
    /// `[3][len]`: temporal, height and width position of every token.
    pub positions: [Vec<i64>; 3],
    /// `max(position) + 1 - kept tokens`: the offset for generated tokens.
    pub delta: i64,
}

/// M-RoPE positions of one sequence. `keep[i] = false` marks padding (left or
/// right), which gets position 0 and is skipped; `grids` are the `(t, h, w)`
/// patch grids of this sequence's images in order, one per run of
/// `image_pad_id` tokens, each run `t*h*w / merge^2` long.
pub fn rope_index(
    ids: &[i64],
    keep: Option<&[bool]>,
    image_pad_id: i64,
    grids: &[[usize; 3]],
    spatial_merge_size: usize,
) -> Result<RopeIndex> {
    if let Some(k) = keep {
        if k.len() != ids.len() {
            return Err(Error::InvalidInput(format!(
                "rope_index: {} mask entries for {} tokens",
                k.len(),
                ids.len()
            )));
        }
    }
    if spatial_merge_size == 0 {
        return Err(Error::InvalidInput(
            "rope_index: spatial_merge_size is 0".into(),
        ));
    }
    let kept: Vec<usize> = (0..ids.len())
        .filter(|&i| keep.is_none_or(|k| k[i]))
        .collect();
    let mut positions = [
        vec![0i64; ids.len()],
        vec![0; ids.len()],
        vec![0; ids.len()],
    ];
    let mut grids_left = grids.iter();
    let mut current: i64 = 0;
    let mut max_pos: Option<i64> = None;
    let mut at = 0;
    while at < kept.len() {
        let is_image = ids[kept[at]] == image_pad_id;
        let run = kept[at..]
            .iter()
            .take_while(|&&i| (ids[i] == image_pad_id) == is_image)
            .count();
        let run_tokens = &kept[at..at + run];
        if !is_image {
            for (j, &i) in run_tokens.iter().enumerate() {
                let p = current + j as i64;
                for axis in &mut positions {
                    axis[i] = p;
                }
            }
            current += run as i64;
            max_pos = Some(current - 1).max(max_pos);
        } else {
            let grid = grids_left.next().ok_or_else(|| {
                Error::InvalidInput(format!(
                    "rope_index: more runs of image tokens (id {image_pad_id}) than the {} image grid(s) given",
                    grids.len()
                ))
            })?;
            let (t, h, w) = (
                grid[0],
                grid[1] / spatial_merge_size,
                grid[2] / spatial_merge_size,
            );
            if t * h * w != run {
                return Err(Error::InvalidInput(format!(
                    "rope_index: an image with grid {grid:?} needs {} tokens at merge {spatial_merge_size}, \
                     the prompt has a run of {run}",
                    t * h * w
                )));
            }
            let cells =
                (0..t).flat_map(|ti| (0..h).flat_map(move |hi| (0..w).map(move |wi| (ti, hi, wi))));
            for (&i, (ti, hi, wi)) in run_tokens.iter().zip(cells) {
                positions[0][i] = current + ti as i64;
                positions[1][i] = current + hi as i64;
                positions[2][i] = current + wi as i64;
                let top = current + ti.max(hi).max(wi) as i64;
                max_pos = Some(top).max(max_pos);
            }
            current += h.max(w) as i64;
        }
        at += run;
    }
    if grids_left.next().is_some() {
        return Err(Error::InvalidInput(format!(
            "rope_index: {} image grid(s) given but fewer runs of image tokens (id {image_pad_id}) in the prompt",
            grids.len()
        )));
    }
    let delta = max_pos.map_or(0, |m| m + 1) - kept.len() as i64;
    Ok(RopeIndex { positions, delta })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_image_text_by_hand() {
        // 2 text tokens, an image of grid (1, 4, 6) at merge 2 -> 2x3 = 6 tokens,
        // then 2 text tokens. Image starts at 2: t = 2, h = 2 + row, w = 2 + col.
        // Text resumes at 2 + max(2, 3) = 5.
        let pad = 9;
        let ids = [1, 2, pad, pad, pad, pad, pad, pad, 3, 4];
        let r = rope_index(&ids, None, pad, &[[1, 4, 6]], 2).unwrap();
        assert_eq!(r.positions[0], vec![0, 1, 2, 2, 2, 2, 2, 2, 5, 6]);
        assert_eq!(r.positions[1], vec![0, 1, 2, 2, 2, 3, 3, 3, 5, 6]);
        assert_eq!(r.positions[2], vec![0, 1, 2, 3, 4, 2, 3, 4, 5, 6]);
        // max 6, + 1 - 10 tokens = -3.
        assert_eq!(r.delta, -3);
    }

    #[test]
    fn padding_is_zero_and_skipped() {
        let ids = [0, 0, 5, 6];
        let r = rope_index(&ids, Some(&[false, false, true, true]), 9, &[], 2).unwrap();
        assert_eq!(r.positions[1], vec![0, 0, 0, 1]);
        assert_eq!(r.delta, 0);
    }

    #[test]
    fn grid_and_run_counts_must_agree() {
        assert!(rope_index(&[9, 9, 9], None, 9, &[[1, 4, 4]], 2).is_err());
        assert!(rope_index(&[1, 2], None, 9, &[[1, 2, 2]], 2).is_err());
        assert!(rope_index(&[9], None, 9, &[], 2).is_err());
    }
}
