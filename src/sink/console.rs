//! Readable live lines for a person at a terminal (used by `demo`).

use std::io::Write;

use super::Sink;
use crate::record::Output;

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
    let json = serde_json::to_value(output).expect("outputs serialise");
    format_message(&json).expect("an output has the fields of a message")
}

/// The line for a published window or alert message (the JSON the jsonl and
/// MQTT sinks write); `None` for anything else.
pub fn format_message(m: &serde_json::Value) -> Option<String> {
    let text = |k: &str| m.get(k).and_then(|v| v.as_str());
    let number = |k: &str| m.get(k).and_then(|v| v.as_f64());
    if text("type")? == "status" {
        return Some(
            format!(
                "--- model {}: {} of {} windows collected ({:.0}%){}",
                text("state")?,
                number("collected")?,
                number("target")?,
                number("progress")? * 100.0,
                text("model").map_or(String::new(), |m| format!(", serving {m}")),
            ) + &number("drift").map_or(String::new(), |d| format!(", drift {d:.2}")),
        );
    }
    let flag = |k: &str| m.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    let (device, seq, score, threshold) = (
        text("device")?,
        number("seq")?,
        number("score")?,
        number("threshold")?,
    );
    match text("type")? {
        "window" => Some(format!(
            "{:<10} #{:<5} t={:>8.1}s  score {:>7.3} [{}] {}",
            device,
            seq,
            number("t_end")? / 1000.0,
            score,
            bar(score as f32, threshold),
            if flag("anomaly") {
                "ANOMALY"
            } else if flag("over_threshold") {
                "over"
            } else {
                "ok"
            }
        )),
        "alert" => Some(format!(
            ">>> {} {} at t={:.1}s (window #{}, score {:.3}, threshold {:.3})",
            if text("event")? == "raise" {
                "ALERT RAISED"
            } else {
                "alert cleared"
            },
            device,
            number("t")? / 1000.0,
            seq,
            score,
            threshold
        )),
        _ => None,
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
