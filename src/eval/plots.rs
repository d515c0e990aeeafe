//! The plots of `evaluate` and `train` reports, drawn with plotters' SVG
//! backend (no font library: the viewer renders the text, which plotters
//! escapes). Scores and losses go on log axes, where normal windows spread
//! out instead of lying on the floor; ticks read as plain numbers. The
//! alert evidence plot, which shares the helpers here, is
//! [`super::plots_evidence`].

use plotters::coord::Shift;
use plotters::prelude::*;

pub const WIDTH: u32 = 1000;
pub const FONT: &str = "sans-serif";

/// Distinguishable colours for labels (Okabe-Ito, then greys).
const PALETTE: [(u8, u8, u8); 10] = [
    (0x00, 0x72, 0xB2),
    (0xD5, 0x5E, 0x00),
    (0x00, 0x9E, 0x73),
    (0xCC, 0x79, 0xA7),
    (0xE6, 0x9F, 0x00),
    (0x56, 0xB4, 0xE9),
    (0xF0, 0xE4, 0x42),
    (0x00, 0x00, 0x00),
    (0x77, 0x77, 0x77),
    (0xBB, 0xBB, 0xBB),
];

pub const THRESHOLD: RGBColor = RGBColor(0xC0, 0x26, 0x2D);
pub const SCORE: RGBColor = RGBColor(0x24, 0x58, 0xB3);
pub const ALERT_SPAN: RGBColor = RGBColor(0xF4, 0xC7, 0xC3);

pub fn colour(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// What a drawing can fail with (only an impossible range, in practice).
pub type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// An SVG of `width` x `height` drawn by `draw`; if drawing fails, an SVG
/// that says why (a report is never left without its file).
pub fn svg(
    (width, height): (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> DrawResult,
) -> String {
    let mut out = String::new();
    let failed = {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        let result = root
            .fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|_| draw(&root).map_err(|e| e.to_string()))
            .and_then(|_| root.present().map_err(|e| e.to_string()));
        result.err()
    };
    match failed {
        None => out,
        Some(why) => {
            let mut out = String::new();
            {
                let root = SVGBackend::with_string(&mut out, (width, 60)).into_drawing_area();
                let _ = root.fill(&WHITE);
                let _ = root.draw_text(
                    &format!("cannot draw this plot: {why}"),
                    &(FONT, 14).into_text_style(&root),
                    (10, 20),
                );
                let _ = root.present();
            }
            out
        }
    }
}

/// A tick label a person reads at a glance: at most three significant
/// digits, no trailing zeros, an exponent only far from 1 ("0.25",
/// "900", "1800", "3e-5", "1.2e5").
pub fn tick(v: f64) -> String {
    // Linear ticks near zero come out as rounding noise (-1.1e-16).
    if v.abs() < 1e-12 || !v.is_finite() {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        let exp = a.log10().floor() as i32;
        let mantissa = v / 10f64.powi(exp);
        let m = trim(format!("{mantissa:.1}"));
        return format!("{m}e{exp}");
    }
    let digits = (2 - a.log10().floor() as i32).max(0) as usize;
    trim(format!("{v:.digits$}"))
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A log axis range around `values` (positive ones) and `also`: whole
/// decades when that is not much wider, so the ticks are 10^k.
pub fn log_range(values: impl Iterator<Item = f64>, also: &[f64]) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .chain(also.iter().copied())
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 0.01..1.0;
    }
    let (mut lo, mut hi) = (lo.log10().floor(), hi.log10().ceil());
    if hi - lo < 1.0 {
        lo -= 0.5;
        hi += 0.5;
    }
    10f64.powf(lo)..10f64.powf(hi)
}

/// A linear range around `values` with a little room.
pub fn range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        0.0..1.0
    } else if lo == hi {
        lo - 0.5..hi + 0.5
    } else {
        let pad = (hi - lo) * 0.05;
        lo - pad..hi + pad
    }
}

/// Runs of equal values: (first index, one past the last, value).
pub fn runs<T: PartialEq + Copy>(values: &[T]) -> Vec<(usize, usize, T)> {
    let mut out: Vec<(usize, usize, T)> = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match out.last_mut() {
            Some((_, end, last)) if last == v => *end = i + 1,
            _ => out.push((i, i + 1, *v)),
        }
    }
    out
}

/// The score of each window in order (windows of one stream after
/// another) on a log axis, the threshold dashed, the windows where the
/// detector was in alert shaded, and the true label of each window in a
/// band of its own below.
pub fn score_timeline(
    scores: &[f32],
    threshold: f64,
    in_alert: &[bool],
    labels: &[u32],
    label_names: &[String],
) -> String {
    let n = scores.len().max(1) as f64;
    let y = log_range(scores.iter().map(|s| *s as f64), &[threshold]);
    svg((WIDTH, 480), |root| {
        let (top, bottom) = root.split_vertically(380);
        let mut chart = ChartBuilder::on(&top)
            .caption(
                "Anomaly score per window (log scale)",
                (FONT, 20).into_font(),
            )
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..n, y.clone().log_scale())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("window (in recording order)")
            .y_desc("score (reconstruction error)")
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .label_style((FONT, 14))
            .draw()?;
        let spans: Vec<(usize, usize)> = runs(in_alert)
            .into_iter()
            .filter(|(_, _, alert)| *alert)
            .map(|(a, b, _)| (a, b))
            .collect();
        chart
            .draw_series(spans.iter().map(|(a, b)| {
                Rectangle::new(
                    [(*a as f64, y.start), (*b as f64, y.end)],
                    ALERT_SPAN.mix(0.6).filled(),
                )
            }))?
            .label("detector in alert")
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], ALERT_SPAN.filled()));
        chart
            .draw_series(LineSeries::new(
                scores
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (i as f64 + 0.5, (*s as f64).max(y.start))),
                SCORE.stroke_width(1),
            ))?
            .label("score")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], SCORE.stroke_width(2)));
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, threshold), (n, threshold)],
                8,
                5,
                THRESHOLD.stroke_width(2),
            ))?
            .label(format!("threshold {}", tick(threshold)))
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], THRESHOLD.stroke_width(2))
            });
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 14))
            .draw()?;
        label_band(&bottom, n, labels, label_names)
    })
}

/// The true labels as coloured spans, with their names.
fn label_band(
    area: &DrawingArea<SVGBackend, Shift>,
    n: f64,
    labels: &[u32],
    label_names: &[String],
) -> DrawResult {
    let mut chart = ChartBuilder::on(area)
        .margin_left(12)
        .margin_right(12)
        .y_label_area_size(70)
        .x_label_area_size(0)
        .build_cartesian_2d(0f64..n, 0f64..1f64)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(0)
        .y_desc("true label")
        .label_style((FONT, 13))
        .draw()?;
    chart.draw_series(runs(labels).into_iter().map(|(a, b, label)| {
        Rectangle::new(
            [(a as f64, 0.55), (b as f64, 1.0)],
            colour(label as usize).filled(),
        )
    }))?;
    // The names, left to right, each after its colour.
    let mut x = 0.0;
    let step = n / label_names.len().clamp(1, 8) as f64;
    for (i, name) in label_names.iter().enumerate() {
        chart.draw_series([Rectangle::new(
            [(x, 0.08), (x + n * 0.012, 0.42)],
            colour(i).filled(),
        )])?;
        chart.draw_series([Text::new(
            name.clone(),
            (x + n * 0.016, 0.42),
            (FONT, 14).into_font(),
        )])?;
        x += step;
    }
    Ok(())
}

/// Histograms (as fractions of each class) of normal and anomalous
/// windows' scores on a log axis, with the threshold.
pub fn score_histograms(normal: &[f32], anomalous: &[f32], threshold: f64) -> String {
    let x = log_range(
        normal.iter().chain(anomalous).map(|v| *v as f64),
        &[threshold],
    );
    let bins = 40;
    let (l0, l1) = (x.start.log10(), x.end.log10());
    let width = (l1 - l0) / bins as f64;
    let histogram = |values: &[f32]| -> Vec<f64> {
        let mut counts = vec![0f64; bins];
        for v in values {
            let l = (*v as f64).max(x.start).log10();
            let b = (((l - l0) / width) as usize).min(bins - 1);
            counts[b] += 1.0 / values.len().max(1) as f64;
        }
        counts
    };
    let (hn, ha) = (histogram(normal), histogram(anomalous));
    let top = hn.iter().chain(&ha).copied().fold(0.0, f64::max).max(1e-9) * 1.1;
    svg((WIDTH, 400), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Score distribution", (FONT, 20).into_font())
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x.clone().log_scale(), 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("score (log scale)")
            .y_desc("share of the class's windows")
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .label_style((FONT, 14))
            .draw()?;
        let edge = |b: usize| 10f64.powf(l0 + b as f64 * width);
        for (counts, c, name, count) in [
            (&hn, colour(0), "normal", normal.len()),
            (&ha, colour(1), "anomalous", anomalous.len()),
        ] {
            chart
                .draw_series(
                    counts
                        .iter()
                        .enumerate()
                        .filter(|(_, h)| **h > 0.0)
                        .map(|(b, h)| {
                            Rectangle::new([(edge(b), 0.0), (edge(b + 1), *h)], c.mix(0.5).filled())
                        }),
                )?
                .label(format!("{name} ({count} windows)"))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 16, y + 6)], c.mix(0.5).filled())
                });
        }
        chart
            .draw_series(DashedLineSeries::new(
                [(threshold, 0.0), (threshold, top)],
                8,
                5,
                THRESHOLD.stroke_width(2),
            ))?
            .label(format!("threshold {}", tick(threshold)))
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], THRESHOLD.stroke_width(2))
            });
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 14))
            .draw()?;
        Ok(())
    })
}

/// Training and validation loss per epoch, on a log axis.
pub fn loss_curve(train: &[f64], validation: &[f64]) -> String {
    let y = log_range(train.iter().chain(validation).copied(), &[]);
    let epochs = train.len().max(2) as f64;
    svg((WIDTH, 400), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Loss per epoch", (FONT, 20).into_font())
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(1f64..epochs, y.clone().log_scale())?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("loss (log scale)")
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .label_style((FONT, 14))
            .draw()?;
        for (values, c, name) in [
            (train, colour(0), "training"),
            (validation, colour(1), "validation"),
        ] {
            chart
                .draw_series(LineSeries::new(
                    values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (i as f64 + 1.0, v.max(y.start))),
                    c.stroke_width(2),
                ))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 14))
            .draw()?;
        Ok(())
    })
}

/// A scatter of 2-D points coloured by label.
pub fn scatter(
    title: &str,
    points: &[(f32, f32)],
    labels: &[u32],
    label_names: &[String],
) -> String {
    let x = range(points.iter().map(|p| p.0 as f64));
    let y = range(points.iter().map(|p| p.1 as f64));
    svg((WIDTH, 600), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 20).into_font())
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x.clone(), y.clone())?;
        chart
            .configure_mesh()
            .x_desc("component 1")
            .y_desc("component 2")
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .label_style((FONT, 14))
            .draw()?;
        for (i, name) in label_names.iter().enumerate() {
            let c = colour(i);
            chart
                .draw_series(
                    points
                        .iter()
                        .zip(labels)
                        .filter(|(_, l)| **l as usize == i)
                        .map(|((px, py), _)| {
                            Circle::new((*px as f64, *py as f64), 3, c.mix(0.7).filled())
                        }),
                )?
                .label(name.clone())
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, c.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 14))
            .draw()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_read_as_plain_numbers() {
        for (v, shown) in [
            (901.25, "901"),
            (1800.0, "1800"),
            (0.25, "0.25"),
            (0.1, "0.1"),
            (1.0, "1"),
            (10.0, "10"),
            (0.001, "0.001"),
            (3e-5, "3e-5"),
            (120000.0, "1.2e5"),
            (0.0, "0"),
            (-1.1e-16, "0"),
        ] {
            assert_eq!(tick(v), shown, "{v}");
        }
    }

    #[test]
    fn log_ranges_are_whole_decades() {
        assert_eq!(log_range([0.02, 0.5].into_iter(), &[3.0]), 0.01..10.0);
        let r = log_range([1.0].into_iter(), &[]);
        assert!(r.start < 1.0 && r.end > 1.0);
        assert_eq!(log_range([0.0, -1.0].into_iter(), &[]), 0.01..1.0);
    }

    #[test]
    fn plots_are_well_formed_svg_with_escaped_text() {
        let names = vec!["PEN".to_string(), "A<B\"'&".to_string()];
        for svg in [
            score_timeline(
                &[0.1, 0.5, 2.0],
                0.4,
                &[false, true, true],
                &[0, 1, 1],
                &names,
            ),
            score_histograms(&[0.1, 0.2], &[1.0, 3.0], 0.4),
            scatter("latent", &[(0.0, 1.0), (1.0, 0.0)], &[0, 1], &names),
            loss_curve(&[1.0, 0.5, 0.25], &[1.2, 0.6, 0.5]),
        ] {
            assert!(svg.starts_with("<svg"), "{svg}");
            assert!(svg.trim_end().ends_with("</svg>"));
            assert!(!svg.contains("NaN") && !svg.contains("inf"));
            assert!(!svg.contains("cannot draw"), "{svg}");
            assert!(!svg.contains("A<B"), "text is escaped");
        }
        let timeline = score_timeline(
            &[0.1, 0.5, 2.0],
            0.4,
            &[false, true, true],
            &[0, 1, 1],
            &names,
        );
        assert!(timeline.contains("A&lt;B&quot;&apos;&amp;"), "{timeline}");
        assert!(timeline.contains("threshold 0.4"));
        assert!(
            timeline.contains(">\n1\n<") && timeline.contains(">\n10\n<"),
            "decade ticks: {timeline}"
        );
    }

    #[test]
    fn runs_compress_equal_neighbours() {
        assert_eq!(
            runs(&[0, 0, 1, 1, 1, 0]),
            vec![(0, 2, 0), (2, 5, 1), (5, 6, 0)]
        );
        assert!(runs::<u8>(&[]).is_empty());
    }
}
