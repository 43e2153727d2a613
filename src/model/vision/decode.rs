//! Image files to 8-bit RGB pixels, as transformers sees them.
//!
//! PNG, JPEG and WebP are decoded with the `image` crate. transformers' image
//! processors first call `convert_to_rgb`: an image with an alpha channel (or a
//! palette transparency) is composited over opaque white with
//! `PIL.Image.alpha_composite`, anything else goes through `convert("RGB")`
//! (grey is replicated into the three channels). [`composite_over_white`] is
//! Pillow's integer compositing formula, so the bytes are the same.
//!
//! Like `PIL.Image.open`, no EXIF orientation is applied.

use crate::error::{Error, Result};
use image::{DynamicImage, ImageReader};
use std::path::Path;

/// An 8-bit RGB image, row-major, three bytes per pixel (the layout of
/// `np.array(pil_image)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 3` bytes: R, G, B of each pixel in turn.
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// Wraps interleaved RGB bytes, checking their count.
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 || pixels.len() != width * height * 3 {
            return Err(Error::InvalidInput(format!(
                "RGB image of {width}x{height} needs {} bytes, got {}",
                width * height * 3,
                pixels.len()
            )));
        }
        Ok(Self {
            width,
            height,
            pixels,
        })
    }
}

/// Reads and decodes an image file (PNG, JPEG or WebP; the format is taken
/// from the bytes, not the extension) into RGB. A missing, unreadable or
/// undecodable file is an [`Error::Image`] naming it.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::Image {
        path: path.to_path_buf(),
        msg: format!("cannot read the image file: {e}"),
    })?;
    decode_rgb(&bytes).map_err(|msg| Error::Image {
        path: path.to_path_buf(),
        msg,
    })
}

/// Decodes image bytes into RGB, naming the problem on failure.
pub fn decode_rgb(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read the image: {e}"))?;
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::WebP) => {}
        Some(other) => {
            return Err(format!(
                "image format {other:?} is not supported (PNG, JPEG and WebP are)"
            ))
        }
        None => {
            return Err("not a PNG, JPEG or WebP image (unrecognised header)".to_string());
        }
    }
    let decoded = reader
        .decode()
        .map_err(|e| format!("cannot decode the image: {e}"))?;
    to_rgb(decoded)
}

/// transformers' `convert_to_rgb` for the 8-bit colour types the decoders give.
fn to_rgb(img: DynamicImage) -> std::result::Result<RgbImage, String> {
    let (width, height) = (img.width() as usize, img.height() as usize);
    let pixels = match img {
        DynamicImage::ImageRgb8(buf) => buf.into_raw(),
        DynamicImage::ImageLuma8(buf) => buf.into_raw().iter().flat_map(|&l| [l, l, l]).collect(),
        DynamicImage::ImageRgba8(buf) => composite_over_white(buf.as_raw()),
        DynamicImage::ImageLumaA8(buf) => {
            let rgba: Vec<u8> = buf
                .as_raw()
                .chunks_exact(2)
                .flat_map(|la| [la[0], la[0], la[0], la[1]])
                .collect();
            composite_over_white(&rgba)
        }
        other => {
            return Err(format!(
                "colour type {:?} is not supported (8-bit grey, grey+alpha, RGB and RGBA are)",
                other.color()
            ))
        }
    };
    RgbImage::new(width, height, pixels).map_err(|e| e.to_string())
}

/// `PIL.Image.alpha_composite(white, rgba).convert("RGB")`: Pillow's integer
/// formula with 7 extra bits of precision and rounded divisions by 255.
pub fn composite_over_white(rgba: &[u8]) -> Vec<u8> {
    const BITS: u32 = 7;
    /// Pillow's `SHIFTFORDIV255`: `x / 255` for the ranges used here.
    fn div255(x: u32) -> u32 {
        ((x >> 8) + x) >> 8
    }
    let (dst_c, dst_a) = (255u32, 255u32);
    rgba.chunks_exact(4)
        .flat_map(|p| {
            let a = u32::from(p[3]);
            if a == 0 {
                return [255, 255, 255];
            }
            let blend = dst_a * (255 - a);
            let outa255 = a * 255 + blend;
            let coef1 = a * 255 * 255 * (1 << BITS) / outa255;
            let coef2 = 255 * (1 << BITS) - coef1;
            let mix = |c: u8| {
                let tmp = u32::from(c) * coef1 + dst_c * coef2;
                (div255(tmp + (0x80 << BITS)) >> BITS) as u8
            };
            [mix(p[0]), mix(p[1]), mix(p[2])]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compositing_over_white_hand_values() {
        // Opaque pixels are unchanged, transparent ones become white.
        assert_eq!(composite_over_white(&[10, 20, 30, 255]), vec![10, 20, 30]);
        assert_eq!(composite_over_white(&[10, 20, 30, 0]), vec![255, 255, 255]);
        // Half alpha (128) over white: 0 * 128/255 + 255 * 127/255 = 127.0 -> 127.
        // Pillow: coef1 = 128*128 = 16384, coef2 = 127*128 = 16256,
        // tmp = 255*16256 = 4145280; (tmp + 16384) / 255 >> 7 = 127.
        assert_eq!(composite_over_white(&[0, 0, 0, 128]), vec![127, 127, 127]);
    }

    #[test]
    fn garbage_bytes_are_refused_with_a_reason() {
        let err = decode_rgb(b"definitely not an image").unwrap_err();
        assert!(err.contains("not a PNG, JPEG or WebP"), "{err}");
    }
}
