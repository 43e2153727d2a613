//! Text for chart backends from a bundled font, so PNG charts carry their
//! titles, ticks and legends on machines with no fonts installed.
//!
//! plotters 0.3.7 draws bitmap text only through its `ttf` feature, which asks
//! the system's fontconfig for fonts (absent on a bare CI image). [`GlyphText`]
//! wraps any plotters backend instead: it measures text with the DejaVu Sans
//! file under `assets/fonts/` (parsed by `ab_glyph`) and, for raster backends,
//! rasterises the glyphs itself, anti-aliased through the backend's alpha
//! blending. Vector backends keep their own `<text>` elements and only borrow
//! the measurements, so the layout of an SVG and a PNG of one chart agree.

use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::DrawingErrorKind;
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend,
};

/// DejaVu Sans (Bitstream Vera licence, see assets/fonts/LICENSE-DejaVu.txt).
static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The parsed bundled font.
fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| {
        // The file is compiled in and parsed in a unit test; failure is a build defect.
        FontRef::try_from_slice(FONT_BYTES).expect("bundled DejaVuSans.ttf parses")
    })
}

/// plotters' SVG backend writes a text of size `s` as `font-size: s / 1.24`;
/// raster text uses the same em size so both formats lay out alike.
const SIZE_TO_EM: f64 = 1.0 / 1.24;

/// The `ab_glyph` scale of a plotters text size (`ab_glyph` scales by line
/// height, ascent - descent, rather than by em).
fn scale_of(size: f64) -> PxScale {
    let f = font();
    let em = f.units_per_em().unwrap_or(2048.0);
    PxScale::from((size * SIZE_TO_EM) as f32 * f.height_unscaled() / em)
}

/// Glyphs of `text` laid out on one line from x = 0 with the ascent at y = 0,
/// and the line's width and height in pixels.
fn layout(text: &str, size: f64) -> (Vec<ab_glyph::Glyph>, f32, f32) {
    let f = font();
    let scale = scale_of(size);
    let sf = f.as_scaled(scale);
    let mut x = 0.0f32;
    let mut prev = None;
    let mut glyphs = Vec::with_capacity(text.len());
    for c in text.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            x += sf.kern(p, id);
        }
        glyphs.push(id.with_scale_and_position(scale, point(x, sf.ascent())));
        x += sf.h_advance(id);
        prev = Some(id);
    }
    (glyphs, x, sf.ascent() - sf.descent())
}

/// Width and height of `text` at `size` pixels in the bundled font.
pub fn text_size(text: &str, size: f64) -> (u32, u32) {
    let (_, w, h) = layout(text, size);
    (w.ceil() as u32, h.ceil() as u32)
}

/// A plotters backend whose text is measured (and, with `raster`, drawn)
/// with the bundled font.
#[derive(Debug)]
pub(crate) struct GlyphText<B> {
    inner: B,
    raster: bool,
}

impl<B: DrawingBackend> GlyphText<B> {
    /// Wrap `inner`; `raster` draws text as pixels (bitmap backends), otherwise
    /// the inner backend draws it (SVG `<text>`).
    pub(crate) fn new(inner: B, raster: bool) -> Self {
        Self { inner, raster }
    }
}

impl<B: DrawingBackend> DrawingBackend for GlyphText<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.fill_polygon(vert, style)
    }

    fn draw_text<TStyle: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        if !self.raster {
            return self.inner.draw_text(text, style, pos);
        }
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let (glyphs, w, h) = layout(text, style.size());
        let (w, h) = (w.ceil() as i32, h.ceil() as i32);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0,
            HPos::Right => -w,
            HPos::Center => -w / 2,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        };
        let trans = style.transform();
        for g in glyphs {
            let Some(outlined) = font().outline_glyph(g) else {
                continue; // a space
            };
            let b = outlined.px_bounds();
            let mut err = None;
            outlined.draw(|gx, gy, coverage| {
                if err.is_some() || coverage <= 0.0 {
                    return;
                }
                let x = b.min.x as i32 + gx as i32 + dx;
                let y = b.min.y as i32 + gy as i32 + dy;
                let (x, y) = trans.transform(x, y);
                let c = BackendColor {
                    alpha: color.alpha * f64::from(coverage.min(1.0)),
                    rgb: color.rgb,
                };
                if let Err(e) = self.inner.draw_pixel((pos.0 + x, pos.1 + y), c) {
                    err = Some(e);
                }
            });
            if let Some(e) = err {
                return Err(e);
            }
        }
        Ok(())
    }

    fn estimate_text_size<TStyle: BackendTextStyle>(
        &self,
        text: &str,
        style: &TStyle,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        Ok(text_size(text, style.size()))
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.blit_bitmap(pos, size, src)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_font_measures_text() {
        // Wider text is wider; the height is the font's line height at that size.
        let (w1, h1) = text_size("1", 20.0);
        let (w3, h3) = text_size("111", 20.0);
        // Advances add up (each width is rounded up on its own).
        assert!(w1 > 0 && w3 + 3 >= 3 * w1 && w3 <= 3 * w1, "{w1} {w3}");
        assert_eq!(h1, h3);
        // DejaVu Sans: ascent - descent is about 1.16 em; em = 20 / 1.24 = 16.1 px.
        assert!((18..=20).contains(&h1), "{h1}");
        assert_eq!(text_size("", 20.0).0, 0);
    }
}
