//! The ingest and sink loops around the scorer.

use tokio::sync::mpsc;

use crate::daemon::health::Pulse;
use crate::pipeline::IngestStage;
use crate::record::Output;
use crate::sink::Sink;
use crate::source::frame::Frame;
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
        for window in completed.drain(..) {
            if windows.send(window).await.is_err() {
                return;
            }
        }
    }
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
    while let Some(batch) = outputs.blocking_recv() {
        Pulse::beat(&pulse.written);
        for (sink, failing) in sinks.iter_mut().zip(failing.iter_mut()) {
            let result = batch
                .iter()
                .try_for_each(|output| sink.write(output))
                .and_then(|_| sink.flush());
            match result {
                Ok(()) => *failing = false,
                Err(error) => {
                    metrics.output_error(sink.name());
                    if !*failing {
                        tracing::error!(sink = sink.name(), %error, "output failed");
                    }
                    *failing = true;
                }
            }
        }
    }
    for sink in &mut sinks {
        if let Err(error) = sink.flush() {
            tracing::error!(sink = sink.name(), %error, "final flush failed");
        }
    }
}
