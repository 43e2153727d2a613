//! Expansion of the image placeholder into the tokens the vision tower fills.
//!
//! A chat template writes one `<|vision_start|><|image_pad|><|vision_end|>` per
//! image. transformers' Qwen2-VL / Qwen2.5-VL / Qwen3-VL processors replace the
//! i-th `<|image_pad|>` of the text (left to right, across the whole batch) with
//! `t * h / merge * w / merge` copies of itself, one per merged patch of the
//! i-th image's grid; the vision tower's outputs later take their places.

use crate::error::{Error, Result};

/// The placeholder token the Qwen VL processors expand.
pub const IMAGE_PAD: &str = "<|image_pad|>";

/// Language tokens one image occupies: `t * h * w / merge_size^2`.
pub fn image_token_count(grid_thw: [usize; 3], merge_size: usize) -> usize {
    grid_thw.iter().product::<usize>() / (merge_size * merge_size)
}

/// Replaces each `<|image_pad|>` in `text` by `counts[i]` copies, in order.
/// The number of placeholders must equal the number of images.
pub fn expand_image_pads(text: &str, counts: &[usize]) -> Result<String> {
    let found = text.matches(IMAGE_PAD).count();
    if found != counts.len() {
        return Err(Error::InvalidInput(format!(
            "the prompt has {found} {IMAGE_PAD} placeholder(s) but {} image(s) were given",
            counts.len()
        )));
    }
    let extra: usize = counts.iter().map(|n| n.saturating_sub(1)).sum();
    let mut out = String::with_capacity(text.len() + extra * IMAGE_PAD.len());
    let mut pieces = text.split(IMAGE_PAD);
    if let Some(first) = pieces.next() {
        out.push_str(first);
    }
    for (piece, &n) in pieces.zip(counts) {
        for _ in 0..n {
            out.push_str(IMAGE_PAD);
        }
        out.push_str(piece);
    }
    Ok(out)
}

/// The same expansion on token ids: each `image_pad_id` becomes `counts[i]` copies.
pub fn expand_image_pad_ids(ids: &[i64], image_pad_id: i64, counts: &[usize]) -> Result<Vec<i64>> {
    let found = ids.iter().filter(|&&id| id == image_pad_id).count();
    if found != counts.len() {
        return Err(Error::InvalidInput(format!(
            "the prompt has {found} image pad token(s) (id {image_pad_id}) but {} image(s) were given",
            counts.len()
        )));
    }
    let mut out = Vec::with_capacity(ids.len() + counts.iter().sum::<usize>());
    let mut next = counts.iter();
    for &id in ids {
        if id == image_pad_id {
            let n = next.next().copied().unwrap_or(0);
            out.extend(std::iter::repeat_n(id, n));
        } else {
            out.push(id);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_grid_and_merge() {
        // 1 x 4 x 6 patches, merge 2: 24 / 4 = 6 tokens.
        assert_eq!(image_token_count([1, 4, 6], 2), 6);
        assert_eq!(image_token_count([1, 6, 4], 1), 24);
    }

    #[test]
    fn text_and_ids_expand_in_order() {
        let text = format!("a{IMAGE_PAD}b{IMAGE_PAD}c");
        let out = expand_image_pads(&text, &[2, 1]).unwrap();
        assert_eq!(out, format!("a{IMAGE_PAD}{IMAGE_PAD}b{IMAGE_PAD}c"));
        let ids = expand_image_pad_ids(&[5, 9, 6, 9, 7], 9, &[1, 3]).unwrap();
        assert_eq!(ids, vec![5, 9, 6, 9, 9, 9, 7]);
    }

    #[test]
    fn placeholder_and_image_counts_must_agree() {
        let err = expand_image_pads("no image", &[4]).unwrap_err();
        assert!(err.to_string().contains("0 <|image_pad|>"), "{err}");
        assert!(expand_image_pad_ids(&[9, 9], 9, &[1]).is_err());
    }
}
