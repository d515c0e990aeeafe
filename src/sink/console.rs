//! Readable live lines for a person at a terminal (used by `demo`).

use std::io::Write;

use super::{Output, Sink};

pub struct ConsoleSink {
    out: Box<dyn Write + Send>,
}

impl ConsoleSink {
    pub fn stdout() -> Self {
        Self {
            out: Box::new(std::io::stdout()),
        }
    }

    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self { out }
    }
}

/// A bar of up to 20 cells, with the threshold at cell 10.
fn bar(score: f32, threshold: f64) -> String {
    let cells = ((score as f64 / threshold) * 10.0).clamp(0.0, 20.0).round() as usize;
    let mut bar: String = (0..20).map(|i| if i < cells { '#' } else { ' ' }).collect();
    bar.insert(10, '|');
    bar
}

pub fn format_line(output: &Output) -> String {
    match output {
        Output::Window(w) => format!(
            "{:<10} #{:<5} t={:>8.1}s  score {:>7.3} [{}] {}",
            w.device,
            w.seq,
            w.t_end / 1000.0,
            w.score,
            bar(w.score, w.threshold),
            if w.anomaly {
                "ANOMALY"
            } else if w.over_threshold {
                "over"
            } else {
                "ok"
            }
        ),
        Output::Alert(a) => format!(
            ">>> {} {} at t={:.1}s (window #{}, score {:.3}, threshold {:.3})",
            if a.event == "raise" {
                "ALERT RAISED"
            } else {
                "alert cleared"
            },
            a.device,
            a.t / 1000.0,
            a.seq,
            a.score,
            a.threshold
        ),
    }
}

impl Sink for ConsoleSink {
    fn name(&self) -> &'static str {
        "console"
    }

    fn write(&mut self, output: &Output) -> std::io::Result<()> {
        writeln!(self.out, "{}", format_line(output))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
