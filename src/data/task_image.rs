//! The built-in task as a vision-language task: the arithmetic problem, or
//! its first half, rendered as a small RGB picture of text.
//!
//! - `data.task.image = "question"`: the prompt is `What is <image>?` and
//!   the picture shows the whole expression (`12+7*3-5`).
//! - `data.task.image = "half"`: the picture shows the first half of the
//!   operands with their operators (`12+7`) and the prompt carries the rest
//!   in text (`What is <image>*3-5?`), so the model must read both.
//!
//! Pictures are black DejaVu Sans (the font bundled in `assets/fonts/`, the
//! one charts use) anti-aliased on white, [`IMAGE_HEIGHT`] pixels high, the
//! width rounded up to a multiple of [`IMAGE_STRIDE`] (the 28-pixel
//! patch-times-merge unit of Qwen's vision towers: a processor whose
//! `min_pixels` admits them keeps them as drawn; Qwen's default of 56*56
//! scales the narrowest up). They travel as PNG bytes
//! ([`ImageSource::Bytes`]): a picture is about 1 KB against 7-10 KB of raw
//! RGB, drawing and encoding one takes about 0.3 ms and decoding it 0.03 ms
//! (2,000 problems on the shared 2-core build machine), and every consumer
//! already decodes images through `model::vision::decode`, so no raw-pixel
//! variant is needed.
//! Rendering is a pure function of the text, so an example is a pure
//! function of `(seed, index)` like the text task's.

use super::{Example, ImageSource, IMAGE_PLACEHOLDER};
use crate::error::{Error, Result};
use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// How the built-in task shows its problems (`data.task.image`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskImage {
    /// Text only (`What is 12+7*3-5?`).
    #[default]
    Off,
    /// The whole expression in the picture: `What is <image>?`.
    Question,
    /// The first half of the operands in the picture, the rest in text:
    /// `What is <image>*3-5?`.
    Half,
}

/// Height of a rendered problem in pixels.
pub const IMAGE_HEIGHT: u32 = 28;
/// Widths are a multiple of this many pixels (and at least one).
pub const IMAGE_STRIDE: u32 = 28;
/// Font size: the line height (ascent - descent) in pixels.
const LINE_PX: f32 = 22.0;
/// White margin left of the text in pixels.
const MARGIN_PX: f32 = 3.0;

/// DejaVu Sans (Bitstream Vera licence, see assets/fonts/LICENSE-DejaVu.txt).
/// `plot::font` embeds the same file; `data` sits below `plot` in the layers
/// and cannot borrow it.
static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The parsed bundled font.
fn font() -> Result<&'static FontRef<'static>> {
    static FONT: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(FONT_BYTES).ok())
        .as_ref()
        .ok_or_else(|| Error::InvalidInput("the bundled DejaVuSans.ttf does not parse".into()))
}

/// A text example of the task as a vision-language one: `pictured` drawn
/// as its picture, the prompt `What is <image>{rest}?`.
pub fn with_image(example: Example, pictured: &str, rest: &str) -> Result<Example> {
    let png = render_png(pictured)?;
    Ok(Example {
        prompt: format!("What is {IMAGE_PLACEHOLDER}{rest}?"),
        images: vec![ImageSource::Bytes(png)],
        ..example
    })
}

/// `text` drawn on one line as PNG bytes (see the module doc for the look).
pub fn render_png(text: &str) -> Result<Vec<u8>> {
    let (width, rgb) = render_rgb(text)?;
    encode_png(&rgb, width, IMAGE_HEIGHT)
}

/// `text` drawn on one line: the width, and `IMAGE_HEIGHT * width * 3`
/// bytes of RGB, row-major.
pub fn render_rgb(text: &str) -> Result<(u32, Vec<u8>)> {
    let f = font()?;
    // ab_glyph's scale is the line height (ascent - descent) in pixels.
    let scale = PxScale::from(LINE_PX);
    let sf = f.as_scaled(scale);
    // Centre the line vertically: its top at (height - line) / 2.
    let top = (IMAGE_HEIGHT as f32 - (sf.ascent() - sf.descent())) / 2.0;
    let baseline = top + sf.ascent();
    let mut x = MARGIN_PX;
    let mut prev = None;
    let mut glyphs = Vec::with_capacity(text.len());
    for c in text.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            x += sf.kern(p, id);
        }
        glyphs.push(id.with_scale_and_position(scale, point(x, baseline)));
        x += sf.h_advance(id);
        prev = Some(id);
    }
    let needed = (x + MARGIN_PX).ceil().max(1.0) as u32;
    let width = needed.div_ceil(IMAGE_STRIDE) * IMAGE_STRIDE;
    let (w, h) = (width as usize, IMAGE_HEIGHT as usize);
    let mut ink = vec![0f32; w * h];
    for glyph in glyphs {
        let Some(outlined) = f.outline_glyph(glyph) else {
            continue; // a space
        };
        let bounds = outlined.px_bounds();
        outlined.draw(|gx, gy, coverage| {
            let px = bounds.min.x as i64 + i64::from(gx);
            let py = bounds.min.y as i64 + i64::from(gy);
            if (0..w as i64).contains(&px) && (0..h as i64).contains(&py) {
                let at = py as usize * w + px as usize;
                ink[at] = (ink[at] + coverage).min(1.0);
            }
        });
    }
    let rgb = ink
        .iter()
        .flat_map(|&c| {
            let v = (255.0 * (1.0 - c)).round() as u8;
            [v, v, v]
        })
        .collect();
    Ok((width, rgb))
}

/// Encode an RGB buffer as PNG (fixed settings, so equal pixels give equal
/// bytes).
fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    let fail = |e: png::EncodingError| Error::InvalidInput(format!("PNG encoding failed: {e}"));
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(fail)?;
        writer.write_image_data(rgb).map_err(fail)?;
        writer.finish().map_err(fail)?;
    }
    Ok(out)
}
