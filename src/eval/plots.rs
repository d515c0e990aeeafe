//! Plots for evaluation reports, written as plain SVG (no font or native
//! dependency: the viewer renders the text).

use std::fmt::Write;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 360.0;
const MARGIN: f64 = 50.0;
/// Distinguishable colours for labels (Okabe-Ito, then greys).
const PALETTE: [&str; 10] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000",
    "#777777", "#BBBBBB",
];

pub fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

struct Canvas {
    svg: String,
    x: (f64, f64),
    y: (f64, f64),
}

impl Canvas {
    fn new(title: &str, x: (f64, f64), y: (f64, f64), x_label: &str, y_label: &str) -> Canvas {
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
            WIDTH / 2.0,
            escape(title)
        );
        let _ = write!(
            svg,
            "<rect x=\"{MARGIN}\" y=\"{MARGIN}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
             <text x=\"14\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {})\">{}</text>\n",
            WIDTH - 2.0 * MARGIN,
            HEIGHT - 2.0 * MARGIN,
            WIDTH / 2.0,
            HEIGHT - 12.0,
            escape(x_label),
            HEIGHT / 2.0,
            HEIGHT / 2.0,
            escape(y_label)
        );
        let mut canvas = Canvas { svg, x, y };
        canvas.ticks();
        canvas
    }

    fn px(&self, x: f64) -> f64 {
        let span = (self.x.1 - self.x.0).max(1e-12);
        MARGIN + (x - self.x.0) / span * (WIDTH - 2.0 * MARGIN)
    }

    fn py(&self, y: f64) -> f64 {
        let span = (self.y.1 - self.y.0).max(1e-12);
        HEIGHT - MARGIN - (y - self.y.0) / span * (HEIGHT - 2.0 * MARGIN)
    }

    fn ticks(&mut self) {
        for i in 0..=4 {
            let fx = self.x.0 + (self.x.1 - self.x.0) * i as f64 / 4.0;
            let fy = self.y.0 + (self.y.1 - self.y.0) * i as f64 / 4.0;
            let (px, py) = (self.px(fx), self.py(fy));
            let _ = write!(
                self.svg,
                "<text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{}</text>\n\
                 <text x=\"{:.1}\" y=\"{py:.1}\" text-anchor=\"end\" font-size=\"10\">{}</text>\n",
                HEIGHT - MARGIN + 14.0,
                number(fx),
                MARGIN - 4.0,
                number(fy)
            );
        }
    }

    fn legend(&mut self, entries: &[(String, &str)]) {
        for (i, (name, colour)) in entries.iter().enumerate() {
            let x = MARGIN + 10.0 + 110.0 * i as f64;
            let _ = writeln!(
                self.svg,
                "<rect x=\"{x}\" y=\"30\" width=\"10\" height=\"10\" fill=\"{colour}\"/>\
                 <text x=\"{}\" y=\"39\">{}</text>",
                x + 14.0,
                escape(name)
            );
        }
    }

    fn finish(mut self) -> String {
        self.svg.push_str("</svg>\n");
        self.svg
    }
}

fn number(v: f64) -> String {
    if v.abs() >= 1000.0 || (v != 0.0 && v.abs() < 0.01) {
        format!("{v:.2e}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        (0.0, 1.0)
    } else if lo == hi {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

/// The score of each window in order (windows of one stream after
/// another), the threshold, and the true label of each window as a band of
/// colour along the bottom.
pub fn score_timeline(
    scores: &[f32],
    threshold: f64,
    labels: &[u32],
    label_names: &[String],
) -> String {
    let y = range(scores.iter().map(|s| *s as f64).chain([threshold, 0.0]));
    let mut c = Canvas::new(
        "Anomaly score per window",
        (0.0, scores.len().max(1) as f64),
        y,
        "window",
        "score",
    );
    let band = 8.0;
    for (i, label) in labels.iter().enumerate() {
        let (x0, x1) = (c.px(i as f64), c.px(i as f64 + 1.0));
        let _ = writeln!(
            c.svg,
            "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.2}\" height=\"{band}\" fill=\"{}\"/>",
            HEIGHT - MARGIN - band,
            (x1 - x0).max(0.5),
            colour(*label as usize)
        );
    }
    let points: Vec<String> = scores
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{:.1},{:.1}", c.px(i as f64 + 0.5), c.py(*s as f64)))
        .collect();
    let _ = writeln!(
        c.svg,
        "<polyline fill=\"none\" stroke=\"#222\" stroke-width=\"1\" points=\"{}\"/>",
        points.join(" ")
    );
    let ty = c.py(threshold);
    let _ = writeln!(
        c.svg,
        "<line x1=\"{MARGIN}\" x2=\"{}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\" stroke=\"red\" stroke-dasharray=\"6 4\"/>\
         <text x=\"{}\" y=\"{:.1}\" fill=\"red\" text-anchor=\"end\">threshold</text>",
        WIDTH - MARGIN,
        WIDTH - MARGIN - 4.0,
        ty - 4.0
    );
    let legend: Vec<(String, &str)> = label_names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), colour(i)))
        .collect();
    c.legend(&legend);
    c.finish()
}

/// Overlaid histograms (as fractions of each class) of normal and
/// anomalous windows' scores, on a log₁₀ axis.
pub fn score_histograms(normal: &[f32], anomalous: &[f32], threshold: f64) -> String {
    let log = |v: f32| (v.max(1e-6) as f64).log10();
    let x = range(
        normal
            .iter()
            .chain(anomalous)
            .map(|v| log(*v))
            .chain([threshold.max(1e-6).log10()]),
    );
    let bins = 40;
    let width = (x.1 - x.0) / bins as f64;
    let histogram = |values: &[f32]| -> Vec<f64> {
        let mut counts = vec![0f64; bins];
        for v in values {
            let b = (((log(*v) - x.0) / width) as usize).min(bins - 1);
            counts[b] += 1.0 / values.len().max(1) as f64;
        }
        counts
    };
    let (hn, ha) = (histogram(normal), histogram(anomalous));
    let top = hn.iter().chain(&ha).copied().fold(0.0, f64::max).max(1e-9);
    let mut c = Canvas::new(
        "Score distribution",
        x,
        (0.0, top),
        "log10(score)",
        "fraction of windows",
    );
    for (counts, colour) in [(&hn, "#0072B2"), (&ha, "#D55E00")] {
        for (b, h) in counts.iter().enumerate() {
            let (x0, x1) = (
                c.px(x.0 + b as f64 * width),
                c.px(x.0 + (b + 1) as f64 * width),
            );
            let (y0, y1) = (c.py(*h), c.py(0.0));
            let _ = writeln!(
                c.svg,
                "<rect x=\"{x0:.1}\" y=\"{y0:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\" fill-opacity=\"0.5\"/>",
                x1 - x0,
                y1 - y0
            );
        }
    }
    let tx = c.px(threshold.max(1e-6).log10());
    let _ = writeln!(
        c.svg,
        "<line x1=\"{tx:.1}\" x2=\"{tx:.1}\" y1=\"{MARGIN}\" y2=\"{}\" stroke=\"red\" stroke-dasharray=\"6 4\"/>",
        HEIGHT - MARGIN
    );
    c.legend(&[
        (format!("normal ({})", normal.len()), "#0072B2"),
        (format!("anomalous ({})", anomalous.len()), "#D55E00"),
    ]);
    c.finish()
}

/// Training and validation loss per epoch, on a log₁₀ axis.
pub fn loss_curve(train: &[f64], validation: &[f64]) -> String {
    let log = |v: f64| v.max(1e-12).log10();
    let y = range(train.iter().chain(validation).map(|v| log(*v)));
    let mut c = Canvas::new(
        "Loss per epoch",
        (1.0, train.len().max(2) as f64),
        y,
        "epoch",
        "log10(loss)",
    );
    for (values, colour) in [(train, "#0072B2"), (validation, "#D55E00")] {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", c.px(i as f64 + 1.0), c.py(log(*v))))
            .collect();
        let _ = writeln!(
            c.svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.join(" ")
        );
    }
    c.legend(&[
        ("training".to_string(), "#0072B2"),
        ("validation".to_string(), "#D55E00"),
    ]);
    c.finish()
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
    let mut c = Canvas::new(title, x, y, "component 1", "component 2");
    for ((px, py), label) in points.iter().zip(labels) {
        let _ = writeln!(
            c.svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{}\" fill-opacity=\"0.7\"/>",
            c.px(*px as f64),
            c.py(*py as f64),
            colour(*label as usize)
        );
    }
    let legend: Vec<(String, &str)> = label_names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), colour(i)))
        .collect();
    c.legend(&legend);
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_well_formed_svg() {
        let names = vec!["PEN".to_string(), "A<B".to_string()];
        for svg in [
            score_timeline(&[0.1, 0.5, 2.0], 0.4, &[0, 1, 1], &names),
            score_histograms(&[0.1, 0.2], &[1.0, 3.0], 0.4),
            scatter("latent", &[(0.0, 1.0), (1.0, 0.0)], &[0, 1], &names),
            loss_curve(&[1.0, 0.5, 0.25], &[1.2, 0.6, 0.5]),
        ] {
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
            assert!(!svg.contains("NaN") && !svg.contains("inf"));
            assert!(!svg.contains("A<B"), "text is escaped");
        }
        assert_eq!(
            score_timeline(&[1.0, 2.0], 1.5, &[0, 0], &names)
                .matches("<rect x")
                .count(),
            2 + 2 + 1
        );
    }
}
