//! The ingest loop before the scorer, and the sinks it writes to.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::daemon::health::Pulse;
use crate::pipeline::IngestStage;
use crate::record::Output;
use crate::sink::Sink;
use crate::source::frame::Frame;
use crate::telemetry::events::WindowLatencies;
use crate::telemetry::Metrics;
use crate::window::Window;

/// Decodes and windows frames until the source is done.
pub(crate) async fn ingest(
    mut stage: IngestStage,
    mut frames: mpsc::Receiver<Frame>,
    windows: mpsc::Sender<Window>,
    pulse: Arc<Pulse>,
) {
    let mut completed = Vec::new();
    while let Some(frame) = frames.recv().await {
        stage.ingest(&frame, &mut completed);
        Pulse::beat(&pulse.frames);
        if !completed.is_empty() {
            let now_ms = crate::clock::unix_ms();
            for window in &mut completed {
                window.timeline.completed_ms = now_ms;
            }
        }
        for window in completed.drain(..) {
            if windows.send(window).await.is_err() {
                return;
            }
        }
    }
}

/// Times each window of a batch some sink took, from the arrival of the
/// frame that completed it (`accelwatch_window_latency_seconds`), and each
/// stage on the way (`accelwatch_window_stage_seconds`); the sinks took
/// the batch at `taken_ms`.
fn observe_latency(batch: &[Output], taken_ms: f64, latencies: &mut WindowLatencies) {
    let now_ms = crate::clock::unix_ms();
    for output in batch {
        if let Output::Window(window) = output {
            latencies.observe(&window.timeline, taken_ms, now_ms);
        }
    }
    latencies.flush();
}

/// Every sink, written on the scorer's thread: a scored batch goes to the
/// sinks without a queue and another thread's wake-up between them. A
/// failing sink is counted and logged once per failure streak; the others
/// go on.
pub(crate) struct Sinks {
    sinks: Vec<Box<dyn Sink>>,
    failing: Vec<bool>,
    latencies: WindowLatencies,
    metrics: Metrics,
}

impl Sinks {
    pub(crate) fn new(sinks: Vec<Box<dyn Sink>>, metrics: &Metrics) -> Self {
        Self {
            failing: vec![false; sinks.len()],
            sinks,
            latencies: metrics.window_latencies(),
            metrics: metrics.clone(),
        }
    }

    /// Writes `batch` to every sink and flushes them.
    pub(crate) fn write(&mut self, batch: &[Output]) {
        let taken_ms = crate::clock::unix_ms();
        let mut published = false;
        for (sink, failing) in self.sinks.iter_mut().zip(self.failing.iter_mut()) {
            let result = batch
                .iter()
                .try_for_each(|output| sink.write(output))
                .and_then(|_| sink.flush());
            match result {
                Ok(()) => {
                    *failing = false;
                    published = true;
                }
                Err(error) => {
                    self.metrics.output_error(sink.name());
                    if !*failing {
                        tracing::error!(sink = sink.name(), %error, "output failed");
                    }
                    *failing = true;
                }
            }
        }
        if published {
            observe_latency(batch, taken_ms, &mut self.latencies);
        }
    }

    /// The last flush; the sinks are dropped after it (the MQTT output
    /// then says goodbye).
    pub(crate) fn finish(mut self) {
        for sink in &mut self.sinks {
            if let Err(error) = sink.flush() {
                tracing::error!(sink = sink.name(), %error, "final flush failed");
            }
        }
    }
}
