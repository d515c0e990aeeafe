//! Replays a CSV recording as if its devices were live: every device starts
//! at the same moment and is paced by its own timestamps (scaled by
//! `speed`; 0 sends as fast as the pipeline takes it). Each sample leaves as
//! a CSV-line payload, so a replay goes through the same decoder as a live
//! text source.

pub mod config;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::unix_ms;
use crate::decode::Format;
use crate::recording::{ReadOptions, Recording, RecordingError};
use crate::source::config::InputConfig;
use crate::source::frame::{Frame, Intake};
use crate::source::replay::config::ReplayConfig;

pub struct Replay {
    recording: Recording,
    speed: f64,
    repeat: bool,
    interval_ms: f64,
}

/// Everything the replay sends, in the order it sends it.
struct Step {
    stream: usize,
    row: usize,
    /// Milliseconds after the start of the pass.
    offset_ms: f64,
}

impl Replay {
    pub fn open(input: &InputConfig) -> Result<Self, RecordingError> {
        let replay: &ReplayConfig = &input.replay;
        let recording = Recording::read(
            &replay.path,
            &ReadOptions {
                columns: replay.columns.clone(),
                channels: input.channels.clone(),
                sample_rate_hz: input.sample_rate_hz,
                ..Default::default()
            },
        )?;
        Ok(Self {
            recording,
            speed: replay.speed,
            repeat: replay.repeat,
            interval_ms: 1000.0 / input.sample_rate_hz,
        })
    }

    pub fn recording(&self) -> &Recording {
        &self.recording
    }

    fn schedule(&self) -> (Vec<Step>, f64) {
        let mut steps = Vec::with_capacity(self.recording.rows());
        let mut span = 0f64;
        for (s, stream) in self.recording.streams.iter().enumerate() {
            let Some(first) = stream.t_ms.first().copied() else {
                continue;
            };
            for (row, t) in stream.t_ms.iter().enumerate() {
                steps.push(Step {
                    stream: s,
                    row,
                    offset_ms: t - first,
                });
            }
            span = span.max(stream.t_ms.iter().copied().fold(first, f64::max) - first);
        }
        steps.sort_by(|a, b| a.offset_ms.total_cmp(&b.offset_ms));
        (steps, span + self.interval_ms)
    }

    /// Hands every sample to `frames`, waiting when it pushes back (replay
    /// never drops). Returns the number of frames taken, when the file ends
    /// (or, with `loop`, when `shutdown` fires or the intake is closed).
    pub async fn run(self, mut frames: impl Intake, mut shutdown: watch::Receiver<bool>) -> u64 {
        let (steps, period_ms) = self.schedule();
        let devices: Vec<Arc<str>> = self
            .recording
            .streams
            .iter()
            .map(|s| Arc::from(s.device.as_str()))
            .collect();
        let channels = self.recording.channels.len();
        let mut sent = 0u64;
        let mut pass = 0u64;
        let mut text = String::new();
        loop {
            let start = Instant::now();
            // Each pass shifts time forward so that timestamps keep rising.
            let shift = pass as f64 * period_ms;
            for step in &steps {
                if *shutdown.borrow() {
                    return sent;
                }
                if self.speed > 0.0 {
                    let due = start + Duration::from_secs_f64(step.offset_ms / self.speed / 1000.0);
                    if due > Instant::now() {
                        tokio::select! {
                            _ = tokio::time::sleep_until(due) => {}
                            _ = shutdown.changed() => return sent,
                        }
                    }
                }
                let stream = &self.recording.streams[step.stream];
                text.clear();
                let _ = write!(text, "{}", stream.t_ms[step.row] + shift);
                for v in &stream.values[step.row * channels..(step.row + 1) * channels] {
                    let _ = write!(text, ",{v}");
                }
                let frame = Frame {
                    device: devices[step.stream].clone(),
                    payload: text.as_bytes().to_vec(),
                    format: Format::Csv,
                    received_at_ms: unix_ms(),
                    restart: false,
                    topic: None,
                };
                tokio::select! {
                    taken = frames.take(frame) => if !taken { return sent },
                    _ = shutdown.changed() => return sent,
                }
                sent += 1;
            }
            if !self.repeat {
                return sent;
            }
            pass += 1;
        }
    }
}
