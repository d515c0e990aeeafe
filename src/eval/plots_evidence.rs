//! The plot of one alert's evidence: the device's scores up to the raise
//! on a log axis with the threshold and the windows that raised it
//! shaded, then one panel per channel with the signal against the model's
//! reconstruction and the squared error per sample (normalised units, on
//! its own axis). Served as `/api/alerts/<id>.svg` and written by
//! `accelwatch alerts show ID --out FILE.svg`. The device id is text in
//! the SVG, escaped by plotters.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::plots::{log_range, range, svg, tick, ALERT_SPAN, FONT, SCORE, THRESHOLD, WIDTH};
use crate::evidence::Evidence;

const HEADER: u32 = 70;
const SCORES: u32 = 250;
/// The score panel's caption and legend row, above its plot.
const SCORE_HEADING: u32 = 54;
const CHANNEL: u32 = 230;
/// The label areas left and right of every panel's plot.
const Y_LABELS: u32 = 70;
const RIGHT_LABELS: u32 = 70;
/// plotters sets a right axis name at the outer edge of its label area,
/// its glyphs reaching past it: a margin of its own keeps "squared error"
/// inside the picture whatever the viewer's font.
const RIGHT_MARGIN: u32 = 26;
/// Where the plots start: the panel's margin and the left label area.
const PLOT_LEFT: i32 = 10 + Y_LABELS as i32;

const SIGNAL: RGBColor = RGBColor(0x1d, 0x24, 0x30);
const RECONSTRUCTION: RGBColor = RGBColor(0xD5, 0x5E, 0x00);
const ERROR: RGBColor = RGBColor(0xC0, 0x26, 0x2D);

/// `time_ms` (Unix ms) as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(time_ms: f64) -> String {
    let secs = (time_ms / 1000.0).floor() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The squared error of each sample of channel `c`, in the units the
/// model scores in (normalised when the model normalises).
fn squared_errors(e: &Evidence, c: usize) -> Vec<f64> {
    let std = e
        .normalization
        .as_ref()
        .and_then(|n| n.std.get(c))
        .copied()
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0) as f64;
    let reconstruction: &[f32] = e.reconstruction.get(c).map_or(&[], Vec::as_slice);
    e.samples[c]
        .iter()
        .zip(reconstruction)
        .map(|(x, r)| ((*x as f64 - *r as f64) / std).powi(2))
        .collect()
}

/// The evidence as an SVG.
pub fn evidence_plot(e: &Evidence) -> String {
    let channels = e.channels.len();
    // A front end's model gets a second panel per channel: its features.
    let panels_per_channel = 1 + e.features.is_some() as usize;
    let height = HEADER + SCORES + CHANNEL * (channels * panels_per_channel) as u32;
    svg((WIDTH, height), |root| {
        let (header, rest) = root.split_vertically(HEADER);
        let title = format!(
            "Alert on {}: score {} over threshold {}",
            e.device,
            tick(e.score as f64),
            tick(e.threshold)
        );
        header.draw_text(&title, &(FONT, 22).into_text_style(&header), (14, 10))?;
        let detail = format!(
            "{}  ·  window #{}  ·  model {} ({})  ·  raised after {} window(s) over the threshold  ·  evidence {}",
            utc(e.time_ms),
            e.seq,
            e.model,
            e.scope,
            e.raise_after,
            e.id
        );
        header.draw_text(&detail, &(FONT, 14).into_text_style(&header), (14, 42))?;
        let (scores, channels_area) = rest.split_vertically(SCORES);
        score_panel(&scores, e)?;
        let panels = channels_area.split_evenly((channels.max(1) * panels_per_channel, 1));
        for (c, pair) in panels.chunks(panels_per_channel).enumerate().take(channels) {
            channel_panel(&pair[0], e, c)?;
            if let (Some(features), Some(panel)) = (&e.features, pair.get(1)) {
                features_panel(panel, e, features, c)?;
            }
        }
        Ok(())
    })
}

fn score_panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    e: &Evidence,
) -> super::plots::DrawResult {
    let recent: Vec<(f64, f64)> = if e.recent.is_empty() {
        vec![(e.seq as f64, e.score as f64)]
    } else {
        e.recent
            .iter()
            .map(|r| (r.seq as f64, r.score as f64))
            .collect()
    };
    let x0 = recent.first().map_or(0.0, |p| p.0) - 0.5;
    let x1 = recent.last().map_or(1.0, |p| p.0) + 0.5;
    let y = log_range(recent.iter().map(|p| p.1), &[e.threshold]);
    // The legend goes in a row of its own above the plot: inside it, any
    // corner covers scores (the first windows, or the raise at the end).
    let (top, plot) = area.split_vertically(SCORE_HEADING);
    let centred = Pos::new(HPos::Center, VPos::Top);
    top.draw_text(
        "The device's scores before the alert (log scale)",
        &(FONT, 16).into_text_style(&top).pos(centred),
        (WIDTH as i32 / 2, 8),
    )?;
    let threshold_label = format!("threshold {}", tick(e.threshold));
    legend_row(
        &top,
        (PLOT_LEFT, 40),
        &[
            (Swatch::Area(ALERT_SPAN), "windows that raised the alert"),
            (Swatch::Line(SCORE), "score"),
            (Swatch::Dashed(THRESHOLD), &threshold_label),
        ],
    )?;
    let mut chart = ChartBuilder::on(&plot)
        .margin(10)
        .margin_top(4)
        .margin_right(RIGHT_MARGIN)
        .x_label_area_size(34)
        .y_label_area_size(Y_LABELS)
        .right_y_label_area_size(RIGHT_LABELS)
        .build_cartesian_2d(x0..x1, y.clone().log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("window #")
        .y_desc("score")
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .label_style((FONT, 13))
        .draw()?;
    // The windows that raised it: the last raise_after, up to the raise.
    let first = e.seq.saturating_sub(e.raise_after.max(1) as u64 - 1) as f64;
    chart.draw_series([Rectangle::new(
        [(first - 0.5, y.start), (e.seq as f64 + 0.5, y.end)],
        ALERT_SPAN.mix(0.7).filled(),
    )])?;
    chart.draw_series(LineSeries::new(
        recent.iter().map(|(x, s)| (*x, s.max(y.start))),
        SCORE.stroke_width(2),
    ))?;
    chart.draw_series(
        recent
            .iter()
            .filter(|(_, s)| *s > e.threshold)
            .map(|(x, s)| Circle::new((*x, *s), 3, THRESHOLD.filled())),
    )?;
    chart.draw_series(DashedLineSeries::new(
        [(x0, e.threshold), (x1, e.threshold)],
        8,
        5,
        THRESHOLD.stroke_width(2),
    ))?;
    Ok(())
}

/// How a legend entry is drawn.
#[derive(Clone, Copy)]
enum Swatch {
    Area(RGBColor),
    Line(RGBColor),
    Dashed(RGBColor),
}

/// A legend in one row from `(x, y)` (the row's middle): each swatch,
/// then its label. Without a font library the text's width is estimated
/// from its length, generously, so that labels never run into each other.
fn legend_row(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    (mut x, y): (i32, i32),
    entries: &[(Swatch, &str)],
) -> super::plots::DrawResult {
    let style = (FONT, 13)
        .into_text_style(area)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (swatch, label) in entries {
        match *swatch {
            Swatch::Area(colour) => {
                area.draw(&Rectangle::new(
                    [(x, y - 6), (x + 18, y + 6)],
                    colour.filled(),
                ))?;
            }
            Swatch::Line(colour) => {
                area.draw(&PathElement::new(
                    vec![(x, y), (x + 18, y)],
                    colour.stroke_width(2),
                ))?;
            }
            Swatch::Dashed(colour) => {
                for dash in [0, 11] {
                    area.draw(&PathElement::new(
                        vec![(x + dash, y), (x + dash + 7, y)],
                        colour.stroke_width(2),
                    ))?;
                }
            }
        }
        area.draw(&Text::new(label.to_string(), (x + 24, y), style.clone()))?;
        x += 24 + 13 * label.chars().count() as i32 / 2 + 32;
    }
    Ok(())
}

fn channel_panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    e: &Evidence,
    c: usize,
) -> super::plots::DrawResult {
    let name = &e.channels[c];
    let frames = e.samples[c].len();
    let dt = if e.sample_rate_hz > 0.0 {
        1.0 / e.sample_rate_hz
    } else {
        (e.t_end - e.t_start) / 1000.0 / (frames.max(2) - 1) as f64
    };
    let t = |i: usize| i as f64 * dt;
    let x = 0.0..t(frames.saturating_sub(1)).max(dt);
    // A front end's model reconstructs features, not samples: none here.
    let reconstruction: &[f32] = e.reconstruction.get(c).map_or(&[], Vec::as_slice);
    let y = range(e.samples[c].iter().chain(reconstruction).map(|v| *v as f64));
    let errors = squared_errors(e, c);
    let top = errors.iter().copied().fold(0.0, f64::max).max(1e-9) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "{name}: {}; channel error {} (mean squared, normalised)",
                if reconstruction.is_empty() {
                    "the signal the features below were computed from"
                } else {
                    "signal against reconstruction"
                },
                tick(e.channel_error[c] as f64)
            ),
            (FONT, 16).into_font(),
        )
        .margin(10)
        .margin_right(RIGHT_MARGIN)
        .x_label_area_size(34)
        .y_label_area_size(Y_LABELS)
        .right_y_label_area_size(RIGHT_LABELS)
        .build_cartesian_2d(x.clone(), y)?
        .set_secondary_coord(x, 0.0..top);
    chart
        .configure_mesh()
        .x_desc("time in the window (s)")
        .y_desc(format!("{name} (input units)"))
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .label_style((FONT, 13))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("squared error")
        .y_label_formatter(&|v| tick(*v))
        .label_style((FONT, 13))
        .draw()?;
    chart
        .draw_secondary_series(AreaSeries::new(
            errors.iter().enumerate().map(|(i, v)| (t(i), *v)),
            0.0,
            ERROR.mix(0.18),
        ))?
        .label("squared error (right axis)")
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], ERROR.mix(0.3).filled()));
    chart
        .draw_series(LineSeries::new(
            e.samples[c]
                .iter()
                .enumerate()
                .map(|(i, v)| (t(i), *v as f64)),
            SIGNAL.stroke_width(2),
        ))?
        .label("signal")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], SIGNAL.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            reconstruction
                .iter()
                .enumerate()
                .map(|(i, v)| (t(i), *v as f64)),
            RECONSTRUCTION.stroke_width(2),
        ))?
        .label("reconstruction")
        .legend(|(x, y)| {
            PathElement::new(vec![(x, y), (x + 16, y)], RECONSTRUCTION.stroke_width(2))
        });
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

/// A front end's features of channel `c` against the model's
/// reconstruction of them, one point per row (statistics, then DFT bins),
/// in standardised feature units: what the model scored.
fn features_panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    e: &Evidence,
    f: &crate::evidence::EvidenceFeatures,
    c: usize,
) -> super::plots::DrawResult {
    let (values, reconstruction) = (&f.values[c], &f.reconstruction[c]);
    let rows = f.rows.len();
    let x = -0.5..rows as f64 - 0.5;
    let y = range(values.iter().chain(reconstruction).map(|v| *v as f64));
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "{}: the model's features against its reconstruction (standardised)",
                e.channels[c]
            ),
            (FONT, 16).into_font(),
        )
        .margin(10)
        .x_label_area_size(34)
        .y_label_area_size(70)
        .right_y_label_area_size(70)
        .build_cartesian_2d(x, y)?;
    let names = f.rows.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(rows)
        .x_desc("feature")
        .y_desc("standardised value")
        .x_label_formatter(&|v| {
            let i = v.round();
            match names.get(i as usize) {
                Some(name) if (v - i).abs() < 1e-6 && i >= 0.0 => name.clone(),
                _ => String::new(),
            }
        })
        .y_label_formatter(&|v| tick(*v))
        .label_style((FONT, 12))
        .draw()?;
    for (series, color, label) in [
        (values, SIGNAL, "features of the window"),
        (reconstruction, RECONSTRUCTION, "reconstruction"),
    ] {
        let points: Vec<(f64, f64)> = series
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64, *v as f64))
            .collect();
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::{id_of, RecentScore, FORMAT};

    fn hostile() -> Evidence {
        Evidence {
            format: FORMAT.into(),
            id: id_of(1_764_616_800_000),
            time_ms: 1_764_616_800_000.0,
            device: "<script>alert('x')</script>\"><img src=x onerror=alert(1)>&".into(),
            scope: "fleet".into(),
            model: "basic-1".into(),
            seq: 30,
            t_start: 0.0,
            t_end: 2540.0,
            score: 2.5,
            threshold: 0.3,
            raise_after: 3,
            sample_rate_hz: 50.0,
            channels: vec!["ax".into(), "a<y>".into()],
            channel_error: vec![1.0, 4.0],
            samples: vec![
                (0..128).map(|i| (i as f32 * 0.1).sin()).collect(),
                (0..128).map(|i| (i as f32 * 0.3).cos()).collect(),
            ],
            reconstruction: vec![
                (0..128).map(|i| (i as f32 * 0.1).sin() * 0.8).collect(),
                vec![0.0; 128],
            ],
            normalization: None,
            features: None,
            recent: (0..31)
                .map(|i| RecentScore {
                    seq: i,
                    t_end: i as f64 * 1280.0,
                    score: if i >= 28 { 2.0 } else { 0.05 },
                })
                .collect(),
        }
    }

    #[test]
    fn the_plot_has_a_panel_per_channel_and_escapes_the_device() {
        let svg = evidence_plot(&hostile());
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(!svg.contains("cannot draw"), "{svg}");
        assert!(!svg.contains("<script") && !svg.contains("<img"), "{svg}");
        assert!(svg.contains("&lt;script&gt;alert(&apos;x&apos;)&lt;/script&gt;&quot;&gt;"));
        assert!(svg.contains("a&lt;y&gt;: signal against reconstruction"));
        assert!(svg.contains("ax: signal against reconstruction"));
        assert!(svg.contains("2025-12-01 19:20:00 UTC"), "{svg}");
        assert!(!svg.contains("NaN"));
    }

    /// The attributes of the SVG element `tag` whose text is `text`, or
    /// of the first one carrying `needle` among its attributes.
    fn attributes<'a>(svg: &'a str, tag: &str, needle: &str) -> Vec<(&'a str, &'a str)> {
        let open = format!("<{tag} ");
        let element = svg
            .split(&open)
            .skip(1)
            .find(|e| {
                e.split_once('>').is_some_and(|(a, rest)| {
                    a.contains(needle)
                        || rest
                            .trim_start()
                            .strip_prefix(needle)
                            .is_some_and(|r| r.trim_start().starts_with('<'))
                })
            })
            .unwrap_or_else(|| panic!("no <{tag}> with {needle}"));
        let (attrs, _) = element.split_once('>').unwrap();
        attrs
            .split("\" ")
            .filter_map(|a| a.trim().split_once("=\""))
            .collect()
    }

    fn number(attrs: &[(&str, &str)], name: &str) -> f64 {
        let value = attrs.iter().find(|(n, _)| *n == name).unwrap().1;
        value.trim_end_matches('"').parse().unwrap()
    }

    #[test]
    fn the_legend_is_above_the_scores_and_the_right_axis_name_inside_the_picture() {
        let svg = evidence_plot(&hostile());
        // The shaded raise spans the plot's height: its top is the plot's.
        let span = attributes(&svg, "rect", "opacity=\"0.7\" fill=\"#F4C7C3\"");
        let plot_top = number(&span, "y");
        for label in ["windows that raised the alert", "score", "threshold 0.3"] {
            let text = attributes(&svg, "text", label);
            let y = number(&text, "y");
            assert!(
                y + 8.0 < plot_top,
                "{label} at y={y}, the plot from {plot_top}"
            );
        }
        // Turned a quarter clockwise about (x, y) and shifted 1ex off its
        // top: its glyphs reach about one font size right of x.
        let name = attributes(&svg, "text", "squared error");
        let x = number(&name, "x");
        let size = number(&name, "font-size");
        assert!(
            x + size <= f64::from(WIDTH) - 2.0,
            "squared error at x={x}, {size} px, in {WIDTH} px"
        );
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000.0), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_764_616_800_000.0), "2025-12-01 19:20:00 UTC");
    }
}
