//! The ingest stage on the source's task, and the sinks the scorer
//! writes to.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::daemon::health::Pulse;
use crate::pipeline::IngestStage;
use crate::record::Output;
use crate::sink::Sink;
use crate::source::frame::{Frame, Intake};
use crate::telemetry::events::WindowLatencies;
use crate::telemetry::Metrics;
use crate::window::Window;

/// The daemon's [`Intake`]: decodes and windows each frame on the
/// source's task, then queues the windows it completed for the scorer.
/// The windows of a frame wait here until the queue takes them all, so a
/// shutdown that cuts a take short loses none: [`finish`](Self::finish)
/// queues them.
pub(crate) struct Ingest {
    stage: IngestStage,
    windows: mpsc::Sender<Window>,
    pulse: Arc<Pulse>,
    completed: Vec<Window>,
}

impl Ingest {
    pub(crate) fn new(
        stage: IngestStage,
        windows: mpsc::Sender<Window>,
        pulse: Arc<Pulse>,
    ) -> Self {
        Self {
            stage,
            windows,
            pulse,
            completed: Vec::new(),
        }
    }

    /// Queues the windows a cut-short take left; dropping `self` then
    /// closes the scorer's queue, and the scorer drains it.
    pub(crate) async fn finish(mut self) {
        self.queue_completed().await;
    }

    /// Queues every completed window, waiting for room; false once the
    /// scorer is gone. One wait for all of a frame's windows, where the
    /// queue's capacity allows.
    async fn queue_completed(&mut self) -> bool {
        while !self.completed.is_empty() {
            let n = self.completed.len().min(self.windows.max_capacity());
            let Ok(permits) = self.windows.reserve_many(n).await else {
                return false;
            };
            for (permit, window) in permits.zip(self.completed.drain(..n)) {
                permit.send(window);
            }
        }
        true
    }
}

impl Intake for Ingest {
    async fn take(&mut self, frame: Frame) -> bool {
        if !self.queue_completed().await {
            return false;
        }
        self.pulse.ingesting.store(true, Ordering::Relaxed);
        self.stage.ingest(&frame, &mut self.completed);
        self.pulse.ingesting.store(false, Ordering::Relaxed);
        Pulse::beat(&self.pulse.frames);
        if !self.completed.is_empty() {
            let now_ms = crate::clock::unix_ms();
            for window in &mut self.completed {
                window.timeline.completed_ms = now_ms;
            }
        }
        self.queue_completed().await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Four windows of size 4 (hop 4) in one CSV frame of 16 samples.
    fn ingest_into(windows: mpsc::Sender<Window>) -> (Ingest, Frame) {
        let mut config = Config::default();
        config.input.channels = vec!["ax".into()];
        config.window.size = 4;
        config.window.hop = 4;
        let stage = IngestStage::new(
            &config.input,
            &config.window,
            &config.training,
            Metrics::new(),
        );
        let lines = (0..16).map(|i| format!("{},{}\n", i * 20, i)).collect();
        let frame = Frame::csv("w1", lines);
        (Ingest::new(stage, windows, Arc::default()), frame)
    }

    /// A shutdown that cuts a take short while the scorer's queue is full
    /// loses none of the frame's windows: `finish` queues them.
    #[tokio::test]
    async fn windows_of_a_take_cut_short_are_queued_by_finish() {
        let (tx, mut rx) = mpsc::channel(1);
        let (mut ingest, frame) = ingest_into(tx);
        let cut_short =
            tokio::time::timeout(std::time::Duration::from_millis(50), ingest.take(frame)).await;
        assert!(cut_short.is_err(), "the take waits for the full queue");
        assert_eq!(ingest.pulse.frames.load(Ordering::Relaxed), 1);
        assert!(!ingest.pulse.ingesting.load(Ordering::Relaxed));
        let finished = tokio::spawn(ingest.finish());
        let mut starts = Vec::new();
        while let Some(window) = rx.recv().await {
            starts.push(window.t_start);
        }
        finished.await.expect("finish");
        assert_eq!(starts, [0.0, 80.0, 160.0, 240.0], "every window, in order");
    }

    /// With the scorer gone, the intake says so and the source stops.
    #[tokio::test]
    async fn a_closed_queue_closes_the_intake() {
        let (tx, rx) = mpsc::channel(8);
        let (mut ingest, frame) = ingest_into(tx);
        drop(rx);
        assert!(!ingest.take(frame).await);
    }
}
