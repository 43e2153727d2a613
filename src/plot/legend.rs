//! How each series of a chart is drawn, and the legend.
//!
//! The legend sits in a band right of the plotting area, so it never covers
//! a point. A series that lies on an earlier one (`accuracy` on
//! `reward_mean` with a 0/1 verifier, where the two are equal) would be
//! invisible under it; it is drawn dashed on top instead, with hollow
//! markers, and when every point coincides its label says so
//! (`accuracy (= reward_mean)`).

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{chart_err, font::text_size, Series, PALETTE};
use crate::Result;

/// Legend text size in pixels.
const FONT_PX: u32 = 15;
/// Width of the line sample before each label.
const SAMPLE_W: i32 = 24;
/// Space between the sample and the label.
const GAP: i32 = 6;
/// Padding inside the legend box.
const PAD: i32 = 8;
/// Height of one legend row.
const ROW_H: i32 = 20;
/// Space between the plotting area and the legend box.
const OFFSET: i32 = 10;
/// Border colour of the legend box.
pub const LEGEND_BORDER: (u8, u8, u8) = (180, 180, 180);
/// Length of a dash and of the gap after it, in pixels.
pub const DASH: (u32, u32) = (7, 4);

/// How one series is drawn.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SeriesStyle {
    /// Line and marker colour (by the series' index in [`PALETTE`]).
    pub colour: (u8, u8, u8),
    /// Dashed line and hollow markers: the series lies on an earlier one.
    pub dashed: bool,
    /// Legend label.
    pub label: String,
}

/// Whether two values are drawn at the same place: closer than `tol`.
fn same(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

/// The style of each series. A series is dashed when at least half of its
/// finite points (and at least one) coincide, within `tol`, with a point of
/// one earlier series at the same x; its label gains `(= name)` when all do.
pub(crate) fn series_styles(series: &[Series], tol: f64) -> Vec<SeriesStyle> {
    let mut out: Vec<SeriesStyle> = Vec::with_capacity(series.len());
    for (j, s) in series.iter().enumerate() {
        let finite: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        let mut dashed = false;
        let mut label = s.name.clone();
        for earlier in &series[..j] {
            let hits = finite
                .iter()
                .filter(|&&(x, y)| {
                    earlier
                        .points
                        .iter()
                        .any(|&(ex, ey)| ex == x && ey.is_finite() && same(ey, y, tol))
                })
                .count();
            if !finite.is_empty() && 2 * hits >= finite.len() {
                dashed = true;
                if hits == finite.len() {
                    label = format!("{} (= {})", s.name, earlier.name);
                }
                break;
            }
        }
        out.push(SeriesStyle {
            colour: PALETTE[j % PALETTE.len()],
            dashed,
            label,
        });
    }
    out
}

/// Width of the legend band, the box and its offset from the plot included
/// (0 with no series).
pub(crate) fn legend_width(styles: &[SeriesStyle]) -> u32 {
    if styles.is_empty() {
        return 0;
    }
    let text = styles
        .iter()
        .map(|s| text_size(&s.label, f64::from(FONT_PX)).0)
        .max()
        .unwrap_or(0) as i32;
    (OFFSET + 2 * PAD + SAMPLE_W + GAP + text + 4) as u32
}

/// Draw one series' line segments on `chart` in its style.
pub(crate) fn draw_lines<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    segs: &[Vec<(f64, f64)>],
    style: &SeriesStyle,
) -> Result<()> {
    let (r, g, b) = style.colour;
    let line = RGBColor(r, g, b).stroke_width(2);
    if style.dashed {
        let dashes = segs
            .iter()
            .map(|seg| DashedPathElement::new(seg.clone(), DASH.0, DASH.1, line));
        chart.draw_series(dashes).map_err(chart_err)?;
    } else {
        let lines = segs.iter().map(|seg| PathElement::new(seg.clone(), line));
        chart.draw_series(lines).map_err(chart_err)?;
    }
    Ok(())
}

/// Draw one series' markers: filled dots, or larger hollow rings when dashed
/// (so a dot underneath stays visible).
pub(crate) fn draw_markers<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    segs: &[Vec<(f64, f64)>],
    style: &SeriesStyle,
) -> Result<()> {
    let (r, g, b) = style.colour;
    let colour = RGBColor(r, g, b);
    let dots = segs.iter().flatten().map(|&p| {
        if style.dashed {
            Circle::new(p, 4, colour.stroke_width(1))
        } else {
            Circle::new(p, 2, colour.filled())
        }
    });
    chart.draw_series(dots).map_err(chart_err)?;
    Ok(())
}

/// Draw the legend on `area` with its box's top-left corner `OFFSET` right
/// of `(plot_right, top)` (pixels relative to `area`).
pub(crate) fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    styles: &[SeriesStyle],
    plot_right: i32,
    top: i32,
) -> Result<()> {
    if styles.is_empty() {
        return Ok(());
    }
    let left = plot_right + OFFSET;
    let right = left + legend_width(styles) as i32 - OFFSET - 4;
    let bottom = top + 2 * PAD + ROW_H * styles.len() as i32;
    let (br, bg, bb) = LEGEND_BORDER;
    area.draw(&Rectangle::new(
        [(left, top), (right, bottom)],
        RGBColor(br, bg, bb).stroke_width(1),
    ))
    .map_err(chart_err)?;
    let font = ("sans-serif", FONT_PX)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (i, s) in styles.iter().enumerate() {
        let y = top + PAD + ROW_H * i as i32 + ROW_H / 2;
        let (r, g, b) = s.colour;
        let line = RGBColor(r, g, b).stroke_width(2);
        let sample = [(left + PAD, y), (left + PAD + SAMPLE_W, y)];
        if s.dashed {
            area.draw(&DashedPathElement::new(sample, DASH.0, DASH.1, line))
                .map_err(chart_err)?;
        } else {
            area.draw(&PathElement::new(sample.to_vec(), line))
                .map_err(chart_err)?;
        }
        let x = left + PAD + SAMPLE_W + GAP;
        area.draw(&Text::new(s.label.clone(), (x, y), font.clone()))
            .map_err(chart_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, ys: &[f64]) -> Series {
        Series {
            name: name.into(),
            points: ys
                .iter()
                .enumerate()
                .map(|(i, &y)| (i as f64 + 1.0, y))
                .collect(),
        }
    }

    #[test]
    fn a_series_on_an_earlier_one_is_dashed_and_named() {
        let reward = series("reward_mean", &[0.0, 0.5, 1.0, 0.25]);
        let acc = series("accuracy", &[0.0, 0.5, 1.0, 0.25]);
        let lambda = series("lambda", &[0.5, 0.4, 0.3, 0.2]);
        let near = series("near", &[0.5, 0.4, 0.9, 0.9]);
        let st = series_styles(&[reward, acc, lambda, near], 1e-3);
        assert_eq!(
            st.iter().map(|s| s.dashed).collect::<Vec<_>>(),
            vec![false, true, false, true]
        );
        assert_eq!(st[1].label, "accuracy (= reward_mean)");
        // Half its points on `lambda`: dashed, but not called equal.
        assert_eq!(st[3].label, "near");
        assert_eq!(st[2].colour, PALETTE[2]);
    }
}
