//! The status page's sink: keeps what it writes on the
//! [`LiveState`] board. It runs on the
//! scorer's thread like the other sinks and takes the board's lock once
//! per batch, so a reader of the page holds up at most one batch.

use super::Sink;
use crate::record::Output;
use crate::telemetry::live::{LiveState, Seen};

pub struct LiveSink {
    live: LiveState,
    batch: Vec<Seen>,
}

impl LiveSink {
    pub fn new(live: LiveState) -> Self {
        Self {
            live,
            batch: Vec::new(),
        }
    }
}

impl Sink for LiveSink {
    fn name(&self) -> &'static str {
        "live"
    }

    fn write(&mut self, output: &Output) -> std::io::Result<()> {
        match output {
            Output::Window(w) => self.batch.push(Seen::Window {
                device: w.device.clone(),
                seq: w.seq,
                t_start: w.t_start,
                t_end: w.t_end,
                score: w.score,
                threshold: w.threshold,
                over_threshold: w.over_threshold,
                alert: w.anomaly,
                model: w.model.clone(),
            }),
            Output::Alert(a) => self.batch.push(Seen::Alert {
                device: a.device.clone(),
                raise: a.event == "raise",
                seq: a.seq,
                t: a.t,
                score: a.score,
                evidence: a.evidence.clone(),
            }),
            Output::Status(_) => {}
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.live.apply(&mut self.batch, crate::clock::unix_ms());
        Ok(())
    }
}
