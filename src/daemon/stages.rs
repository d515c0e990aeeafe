//! The ingest and sink loops around the scorer.

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
    pulse: std::sync::Arc<Pulse>,
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
/// stage on the way (`accelwatch_window_stage_seconds`); the sink loop
/// took the batch at `taken_ms`.
fn observe_latency(batch: &[Output], taken_ms: f64, latencies: &mut WindowLatencies) {
    let now_ms = crate::clock::unix_ms();
    for output in batch {
        if let Output::Window(window) = output {
            latencies.observe(&window.timeline, taken_ms, now_ms);
        }
    }
    latencies.flush();
}

/// Writes every batch to every sink. A failing sink is counted and logged
/// once per failure streak; the others go on.
pub(crate) fn sink_loop(
    mut sinks: Vec<Box<dyn Sink>>,
    mut outputs: mpsc::Receiver<Vec<Output>>,
    metrics: &Metrics,
    pulse: &Pulse,
) {
    let mut failing = vec![false; sinks.len()];
    let mut latencies = metrics.window_latencies();
    while let Some(batch) = outputs.blocking_recv() {
        let taken_ms = crate::clock::unix_ms();
        Pulse::beat(&pulse.written);
        let mut published = false;
        for (sink, failing) in sinks.iter_mut().zip(failing.iter_mut()) {
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
                    metrics.output_error(sink.name());
                    if !*failing {
                        tracing::error!(sink = sink.name(), %error, "output failed");
                    }
                    *failing = true;
                }
            }
        }
        if published {
            observe_latency(&batch, taken_ms, &mut latencies);
        }
    }
    for sink in &mut sinks {
        if let Err(error) = sink.flush() {
            tracing::error!(sink = sink.name(), %error, "final flush failed");
        }
    }
}
