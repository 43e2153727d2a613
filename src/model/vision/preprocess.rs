//! Images to the vision tower's input: transformers' `Qwen2VLImageProcessor`
//! (PIL backend), used by Qwen2-VL, Qwen2.5-VL and Qwen3-VL.
//!
//! For each image: [`smart_resize`] picks a size that is a multiple of
//! `patch_size * merge_size` within the pixel bounds, Pillow's bicubic filter
//! resizes the 8-bit RGB image ([`resize_bicubic`]), the bytes are rescaled
//! (`f32(f64(byte) * rescale_factor)`, as numpy computes it) and normalised
//! (`(x - mean) / std` in f32), and the image is cut into patches in the
//! merger's order, each patch repeated `temporal_patch_size` times along time.
//! The result is `pixel_values` `[num_patches, 3 * T * P * P]` and the grid
//! `(t, h, w)` in patches, `t = 1` for a still image.

use super::config::ImageProcessorConfig;
use super::decode::{load_rgb, RgbImage};
use super::resize::{resize_bicubic, smart_resize};
use crate::error::{Error, Result};
use std::path::Path;

/// One image, ready for the vision tower.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedImage {
    /// Row-major `[num_patches, patch_dim]` values; each row is one patch,
    /// ordered channel, time, patch row, patch column.
    pub pixel_values: Vec<f32>,
    /// Patches per frame group, per row and per column: `(t, h, w)`.
    pub grid_thw: [usize; 3],
    /// Length of one row of `pixel_values` (`3 * T * P * P`).
    pub patch_dim: usize,
}

impl ProcessedImage {
    /// Number of patches (`t * h * w`), the rows of `pixel_values`.
    pub fn num_patches(&self) -> usize {
        self.grid_thw.iter().product()
    }
}

/// The Qwen2-VL image processor for one `preprocessor_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    /// The resolved settings.
    pub config: ImageProcessorConfig,
}

impl ImageProcessor {
    /// A processor with these settings.
    pub fn new(config: ImageProcessorConfig) -> Self {
        Self { config }
    }

    /// Reads `preprocessor_config.json` from a file or a model folder.
    pub fn load(path: &Path) -> Result<Self> {
        ImageProcessorConfig::load(path).map(Self::new)
    }

    /// Decodes an image file and preprocesses it; errors name the file.
    pub fn preprocess_file(&self, path: &Path) -> Result<ProcessedImage> {
        let image = load_rgb(path)?;
        self.preprocess(&image).map_err(|e| Error::Image {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })
    }

    /// The size an image of `height x width` is resized to (`(height, width)`),
    /// or its own size when `do_resize` is off.
    pub fn resized_size(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        let c = &self.config;
        if c.do_resize {
            smart_resize(height, width, c.factor(), c.min_pixels, c.max_pixels)
        } else {
            Ok((height, width))
        }
    }

    /// Resizes, rescales, normalises and patchifies one RGB image.
    pub fn preprocess(&self, image: &RgbImage) -> Result<ProcessedImage> {
        let c = &self.config;
        let (height, width) = self.resized_size(image.height, image.width)?;
        let factor = c.factor();
        if height % factor != 0 || width % factor != 0 {
            return Err(Error::InvalidInput(format!(
                "image of {}x{} is not a multiple of patch_size * merge_size = {factor} \
                 (do_resize is off)",
                image.width, image.height
            )));
        }
        let resized = if (height, width) == (image.height, image.width) {
            image.pixels.clone()
        } else {
            resize_bicubic(&image.pixels, image.width, image.height, 3, width, height)?
        };
        let values = self.rescale_and_normalize(&resized);
        Ok(self.patchify(&values, height, width))
    }

    /// Bytes to the values the model sees, channels last. numpy order: rescale
    /// in f64 then cast to f32; normalise in f32 with f32 mean and std.
    fn rescale_and_normalize(&self, bytes: &[u8]) -> Vec<f32> {
        let c = &self.config;
        let mean = c.image_mean.map(|m| m as f32);
        let std = c.image_std.map(|s| s as f32);
        bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                let x = if c.do_rescale {
                    (f64::from(b) * c.rescale_factor) as f32
                } else {
                    f32::from(b)
                };
                if c.do_normalize {
                    let ch = i % 3;
                    (x - mean[ch]) / std[ch]
                } else {
                    x
                }
            })
            .collect()
    }

    /// Cuts a `height x width` channels-last image into patches. Patch rows go
    /// merge block by merge block (row-major over blocks, then row-major within a
    /// `merge_size x merge_size` block), matching transformers' reshape
    /// `(C, h/m, m, P, w/m, m, P) -> (h/m, w/m, m, m, C, T, P, P)`.
    fn patchify(&self, values: &[f32], height: usize, width: usize) -> ProcessedImage {
        let c = &self.config;
        let (p, m, t) = (c.patch_size, c.merge_size, c.temporal_patch_size);
        let (grid_h, grid_w) = (height / p, width / p);
        let patch_dim = c.patch_dim();
        let mut out = Vec::with_capacity(grid_h * grid_w * patch_dim);
        for block_row in 0..grid_h / m {
            for block_col in 0..grid_w / m {
                for mr in 0..m {
                    for mc in 0..m {
                        let (row0, col0) = ((block_row * m + mr) * p, (block_col * m + mc) * p);
                        for ch in 0..3 {
                            for _ in 0..t {
                                for py in 0..p {
                                    let base = ((row0 + py) * width + col0) * 3 + ch;
                                    out.extend((0..p).map(|px| values[base + px * 3]));
                                }
                            }
                        }
                    }
                }
            }
        }
        ProcessedImage {
            pixel_values: out,
            grid_thw: [1, grid_h, grid_w],
            patch_dim,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_config() -> ImageProcessorConfig {
        ImageProcessorConfig {
            patch_size: 1,
            temporal_patch_size: 2,
            merge_size: 2,
            min_pixels: 1,
            max_pixels: 1 << 20,
            do_rescale: false,
            do_normalize: false,
            ..ImageProcessorConfig::default()
        }
    }

    #[test]
    fn patch_order_follows_merge_blocks_then_channel_then_time() {
        // A 2x4 image with patch 1, merge 2: two 2x2 blocks, left then right.
        // Red = 10 * row + col, green = red + 100, blue = red + 200.
        let mut px = Vec::new();
        for r in 0..2u8 {
            for col in 0..4u8 {
                let v = 10 * r + col;
                px.extend([v, v + 100, v + 200]);
            }
        }
        let proc = ImageProcessor::new(tiny_config());
        let out = proc.preprocess(&RgbImage::new(4, 2, px).unwrap()).unwrap();
        assert_eq!(out.grid_thw, [1, 2, 4]);
        assert_eq!(out.patch_dim, 6);
        let rows: Vec<&[f32]> = out.pixel_values.chunks(6).collect();
        // Patch order: (0,0) (0,1) (1,0) (1,1) | (0,2) (0,3) (1,2) (1,3).
        let reds: Vec<f32> = rows.iter().map(|r| r[0]).collect();
        assert_eq!(reds, vec![0.0, 1.0, 10.0, 11.0, 2.0, 3.0, 12.0, 13.0]);
        // Within a patch: R, R (time), G, G, B, B.
        assert_eq!(rows[3], &[11.0, 11.0, 111.0, 111.0, 211.0, 211.0]);
    }

    #[test]
    fn rescale_then_normalize_matches_numpy_float_order() {
        let cfg = ImageProcessorConfig {
            do_rescale: true,
            do_normalize: true,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            ..tiny_config()
        };
        let proc = ImageProcessor::new(cfg);
        let out = proc.rescale_and_normalize(&[0, 255, 51]);
        // 51 / 255 = 0.2 (f64 -> f32), (0.2 - 0.5) / 0.5 = -0.6 in f32.
        let x = (51.0f64 * (1.0 / 255.0)) as f32;
        assert_eq!(out, vec![-1.0, 1.0, (x - 0.5) / 0.5]);
    }

    #[test]
    fn unresized_image_must_fit_the_patch_grid() {
        let cfg = ImageProcessorConfig {
            do_resize: false,
            patch_size: 2,
            ..tiny_config()
        };
        let proc = ImageProcessor::new(cfg);
        let err = proc
            .preprocess(&RgbImage::new(3, 4, vec![0; 36]).unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("multiple of"), "{err}");
    }
}
