//! The resize step of the Qwen2-VL image processor: the `smart_resize` size rule
//! and Pillow's bicubic resampling, reproduced bit for bit.
//!
//! transformers' PIL backend (`Qwen2VLImageProcessorPil`, the class Qwen2.5-VL
//! and Qwen3-VL use too) picks the output size with `smart_resize` and then calls
//! `PIL.Image.resize(..., BICUBIC)` on the 8-bit RGB image. Pillow resamples in
//! two separable passes (horizontal, then vertical, each skipped when that side
//! keeps its length), with the cubic convolution kernel (`a = -0.5`, support 2)
//! widened by the scale factor when shrinking (antialiasing), double-precision
//! weights normalised to sum 1, then rounded to 22-bit fixed point; each pass
//! accumulates in 32-bit integers from a half-unit start and clamps to `0..=255`.
//! The horizontal pass only computes the rows the vertical pass reads. Every
//! step below follows that order so the output equals Pillow's exactly.

use crate::error::{Error, Result};

/// Fixed-point fraction bits of Pillow's 8-bit resampling (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// The largest aspect ratio `smart_resize` accepts (transformers raises above it).
pub const MAX_ASPECT_RATIO: f64 = 200.0;

/// The output `(height, width)` that transformers' `smart_resize` chooses: both
/// sides multiples of `factor` (`patch_size * merge_size`), the pixel count within
/// `[min_pixels, max_pixels]`, the aspect ratio kept as closely as that allows.
///
/// Python's `round` rounds halves to even, hence `round_ties_even`; the other
/// operations are the same IEEE double operations in the same order.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize)> {
    if height == 0 || width == 0 || factor == 0 {
        return Err(Error::InvalidInput(format!(
            "smart_resize: height {height}, width {width} and factor {factor} must be positive"
        )));
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    let ratio = h.max(w) / h.min(w);
    if ratio > MAX_ASPECT_RATIO {
        return Err(Error::InvalidInput(format!(
            "image of {width}x{height}: absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, got {ratio}"
        )));
    }
    let mut h_bar = (h / f).round_ties_even() as usize * factor;
    let mut w_bar = (w / f).round_ties_even() as usize * factor;
    if h_bar * w_bar > max_pixels {
        let beta = ((height * width) as f64 / max_pixels as f64).sqrt();
        h_bar = factor.max((h / beta / f).floor() as usize * factor);
        w_bar = factor.max((w / beta / f).floor() as usize * factor);
    } else if h_bar * w_bar < min_pixels {
        let beta = (min_pixels as f64 / (height * width) as f64).sqrt();
        h_bar = (h * beta / f).ceil() as usize * factor;
        w_bar = (w * beta / f).ceil() as usize * factor;
    }
    Ok((h_bar, w_bar))
}

/// Pillow's bicubic kernel (cubic convolution with `a = -0.5`).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The taps of one output sample: the first input index and its integer weights.
#[derive(Debug, Clone, PartialEq)]
struct Taps {
    /// First input index the sample reads.
    start: usize,
    /// Fixed-point weights (`PRECISION_BITS` fraction bits), one per input index.
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for a
/// resize of `in_size` samples to `out_size` over the whole input.
fn taps(in_size: usize, out_size: usize) -> Vec<Taps> {
    const SUPPORT: f64 = 2.0;
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero, as `as i64` does.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let count = xmax.saturating_sub(xmin);
            let raw: Vec<f64> = (0..count)
                .map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|&k| {
                    let k = if ww != 0.0 { k / ww } else { k };
                    let scaled = k * f64::from(1u32 << PRECISION_BITS);
                    if k < 0.0 {
                        (-0.5 + scaled) as i32
                    } else {
                        (0.5 + scaled) as i32
                    }
                })
                .collect();
            Taps {
                start: xmin,
                weights,
            }
        })
        .collect()
}

/// Pillow's `clip8`: drop the fraction bits (an arithmetic shift, i.e. floor)
/// and clamp to a byte.
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One output sample of a pass: Pillow's 32-bit accumulation of the samples
/// `at(start + i)` times their weights, from a half-unit start, then `clip8`.
fn convolve_at(weights: &[i32], start: usize, at: impl Fn(usize) -> u8) -> u8 {
    let mut acc: i32 = 1 << (PRECISION_BITS - 1);
    for (i, &k) in weights.iter().enumerate() {
        acc = acc.wrapping_add(i32::from(at(start + i)).wrapping_mul(k));
    }
    clip8(acc)
}

/// [`convolve_at`] at the taps' own first index.
fn convolve(taps: &Taps, at: impl Fn(usize) -> u8) -> u8 {
    convolve_at(&taps.weights, taps.start, at)
}

/// Resizes an interleaved 8-bit image (`channels` bytes per pixel, row-major) of
/// `width x height` to `out_width x out_height` exactly as
/// `PIL.Image.resize((out_width, out_height), Image.BICUBIC)` does (Pillow 13).
pub fn resize_bicubic(
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_width: usize,
    out_height: usize,
) -> Result<Vec<u8>> {
    if pixels.len() != width * height * channels {
        return Err(Error::InvalidInput(format!(
            "resize: {} bytes for a {width}x{height} image with {channels} channels",
            pixels.len()
        )));
    }
    if width == 0 || height == 0 || out_width == 0 || out_height == 0 {
        return Err(Error::InvalidInput(format!(
            "resize: cannot resize {width}x{height} to {out_width}x{out_height}"
        )));
    }
    let need_horizontal = out_width != width;
    let need_vertical = out_height != height;
    let image = Plane {
        pixels,
        width,
        channels,
    };
    if !need_vertical && !need_horizontal {
        return Ok(pixels.to_vec());
    }
    let vertical = taps(height, out_height);
    let horizontal = taps(width, out_width);
    if horizontal_first(width, height, out_width, out_height) {
        // The horizontal pass computes only the rows the vertical pass reads
        // (Pillow's `ybox_first..ybox_last`).
        let first_row = vertical[0].start;
        let last_row = vertical
            .last()
            .map(|t| t.start + t.weights.len())
            .unwrap_or(height);
        let mid = if need_horizontal {
            image.horizontal(&horizontal, first_row, last_row - first_row)
        } else {
            image.rows(first_row, last_row)
        };
        let mid = Plane {
            pixels: &mid,
            width: out_width,
            channels,
        };
        if !need_vertical {
            return Ok(mid.pixels.to_vec());
        }
        Ok(mid.vertical(&vertical, first_row))
    } else {
        // Height shrinks by more than twice what width does: vertical pass first,
        // over every column (this branch implies `need_vertical`).
        let mid = image.vertical(&vertical, 0);
        if !need_horizontal {
            return Ok(mid);
        }
        let mid = Plane {
            pixels: &mid,
            width,
            channels,
        };
        Ok(mid.horizontal(&horizontal, 0, out_height))
    }
}

/// Pillow 13's choice of pass order: vertical first only when the height
/// shrinks by more than twice as many pixels as the width does.
fn horizontal_first(width: usize, height: usize, out_width: usize, out_height: usize) -> bool {
    let dy = height as i64 - out_height as i64;
    let dx = width as i64 - out_width as i64;
    !(dy > 0 && dy > dx * 2)
}

/// A borrowed interleaved 8-bit image of `width` pixels per row.
struct Plane<'a> {
    /// Row-major bytes, `channels` per pixel.
    pixels: &'a [u8],
    /// Pixels per row.
    width: usize,
    /// Bytes per pixel.
    channels: usize,
}

impl Plane<'_> {
    /// Bytes of one row.
    fn stride(&self) -> usize {
        self.width * self.channels
    }

    /// A copy of rows `first..last`.
    fn rows(&self, first: usize, last: usize) -> Vec<u8> {
        self.pixels[first * self.stride()..last * self.stride()].to_vec()
    }

    /// Horizontal pass over `count` rows starting at row `offset`.
    fn horizontal(&self, taps: &[Taps], offset: usize, count: usize) -> Vec<u8> {
        let ch = self.channels;
        let out_width = taps.len();
        let mut out = vec![0u8; count * out_width * ch];
        for y in 0..count {
            let src = &self.pixels[(y + offset) * self.stride()..][..self.stride()];
            for (x, t) in taps.iter().enumerate() {
                for c in 0..ch {
                    out[(y * out_width + x) * ch + c] = convolve(t, |i| src[i * ch + c]);
                }
            }
        }
        out
    }

    /// Vertical pass; the taps' first rows are shifted down by `row_offset`
    /// (the rows the horizontal pass skipped).
    fn vertical(&self, taps: &[Taps], row_offset: usize) -> Vec<u8> {
        let (ch, stride) = (self.channels, self.stride());
        let mut out = vec![0u8; taps.len() * stride];
        for (y, t) in taps.iter().enumerate() {
            let start = t.start - row_offset;
            for x in 0..self.width {
                for c in 0..ch {
                    out[y * stride + x * ch + c] =
                        convolve_at(&t.weights, start, |i| self.pixels[i * stride + x * ch + c]);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_matches_hand_computed_sizes() {
        // 37x45 with factor 28: round(1.32)=1, round(1.61)=2 -> 28x56 = 1568 < 3136,
        // so beta = sqrt(3136 / 1665) = 1.3724; ceil(37*1.3724/28)=2, ceil(45*1.3724/28)=3.
        assert_eq!(smart_resize(37, 45, 28, 3136, 4704).unwrap(), (56, 84));
        // Exact multiples inside the bounds stay as they are.
        assert_eq!(smart_resize(56, 112, 28, 3136, 1 << 20).unwrap(), (56, 112));
        // 150x190 = 28500 > 4704: beta = sqrt(28500/4704) = 2.4614;
        // floor(150/2.4614/28)=2, floor(190/2.4614/28)=2.
        assert_eq!(smart_resize(150, 190, 28, 3136, 4704).unwrap(), (56, 56));
        // Halves round to even: 42/28 = 1.5 -> 2, 70/28 = 2.5 -> 2.
        assert_eq!(smart_resize(42, 70, 28, 0, 1 << 20).unwrap(), (56, 56));
    }

    #[test]
    fn smart_resize_refuses_extreme_aspect_ratio() {
        let err = smart_resize(1, 201, 28, 3136, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("aspect ratio"), "{err}");
        assert!(smart_resize(0, 5, 28, 1, 2).is_err());
    }

    #[test]
    fn taps_sum_to_one_in_fixed_point_and_are_symmetric_for_2x_upscale() {
        let t = taps(4, 8);
        for tap in &t {
            let sum: i64 = tap.weights.iter().map(|&k| i64::from(k)).sum();
            assert!((sum - (1 << PRECISION_BITS)).abs() <= 4, "{sum}");
        }
        // Output 0 sits at input 0.25: taps over inputs 0..2 after clipping at the edge.
        assert_eq!(t[0].start, 0);
        let mirrored: Vec<i32> = t[7].weights.iter().rev().copied().collect();
        assert_eq!(t[0].weights, mirrored);
    }

    #[test]
    fn constant_image_stays_constant_and_same_size_is_a_copy() {
        let img = vec![200u8; 5 * 7 * 3];
        let out = resize_bicubic(&img, 5, 7, 3, 13, 3).unwrap();
        assert!(out.iter().all(|&v| v == 200));
        let px: Vec<u8> = (0..5 * 7 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resize_bicubic(&px, 5, 7, 3, 5, 7).unwrap(), px);
    }

    #[test]
    fn pass_order_follows_pillow_13() {
        // Height shrinks by 14, width grows by 6: vertical first.
        assert!(!horizontal_first(50, 70, 56, 56));
        // Both shrink, height not more than twice as much: horizontal first.
        assert!(horizontal_first(190, 150, 56, 56));
        // Height grows: always horizontal first.
        assert!(horizontal_first(300, 10, 20, 40));
        // Equal to twice the width's shrink is not "more than": horizontal first.
        assert!(horizontal_first(40, 40, 35, 30));
        assert!(!horizontal_first(40, 40, 35, 29));
    }

    #[test]
    fn overshoot_is_clamped_to_byte_range() {
        // A hard 0/255 edge upsampled with a negative-lobed kernel overshoots on both
        // sides; Pillow clamps it, so we must see both 0 and 255 and nothing wrapped.
        let row: Vec<u8> = [0u8, 0, 255, 255].to_vec();
        let out = resize_bicubic(&row, 4, 1, 1, 16, 1).unwrap();
        assert_eq!(out.first(), Some(&0));
        assert_eq!(out.last(), Some(&255));
        assert!(out.windows(2).all(|w| w[0] <= w[1]), "{out:?}");
    }
}
