//! The small typed calls through which every stage reports.

use std::sync::atomic::Ordering;

use prometheus::local::LocalHistogram;
use prometheus::{Encoder, Histogram, TextEncoder};

use super::metrics::Metrics;

/// Where a stage serving one model counts its scored windows.
///
/// Counted on the scorer's thread and added to the shared metrics once a
/// batch ([`flush`](Self::flush), and when dropped): a window's atomic
/// operations on them were 1 % of the daemon's CPU flat out.
#[derive(Clone)]
pub struct ModelWindows {
    windows: prometheus::local::LocalIntCounter,
    anomalous: prometheus::local::LocalIntCounter,
    errors: prometheus::local::LocalHistogram,
}

impl ModelWindows {
    pub fn scored(&self, score: f32, anomalous: bool) {
        self.windows.inc();
        self.errors.observe(score as f64);
        if anomalous {
            self.anomalous.inc();
        }
    }

    /// Adds what was counted since the last flush to the shared metrics.
    pub fn flush(&self) {
        self.windows.flush();
        self.anomalous.flush();
        self.errors.flush();
    }
}

impl Drop for ModelWindows {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Metrics {
    pub fn frame(&self) {
        self.inner.frames.inc();
    }
    pub fn samples(&self, n: usize) {
        self.inner.samples.inc_by(n as u64);
    }
    /// `reason` is a decode error's bounded reason.
    pub fn decode_error(&self, reason: &str) {
        self.inner.decode_errors.with_label_values(&[reason]).inc();
    }
    /// `reason` is why the windower dropped a sample (bounded).
    pub fn sample_dropped(&self, reason: &str) {
        self.inner
            .samples_dropped
            .with_label_values(&[reason])
            .inc();
    }
    pub fn gap_restart(&self) {
        self.inner.gap_restarts.inc();
    }
    pub fn clock_reset(&self) {
        self.inner.clock_resets.inc();
    }
    pub fn device_evicted(&self) {
        self.inner.devices_evicted.inc();
    }
    /// What waits in the scorer's queue of windows, of `capacity`.
    pub fn queue_depth(&self, windows: usize, capacity: usize) {
        self.inner
            .queue_depth
            .with_label_values(&["windows"])
            .set(windows as i64);
        self.inner.queue_capacity.set(capacity as i64);
    }
    pub fn io_threads(&self, n: usize) {
        self.inner.io_threads.set(n as i64);
    }
    pub fn devices(&self, n: usize) {
        self.inner.devices.set(n as i64);
    }
    pub fn inference(&self, windows: usize, seconds: f64) {
        self.inner.inference_seconds.observe(seconds);
        self.inner.inference_batch.observe(windows as f64);
    }
    /// The counters of `model`'s scored windows, its error histogram's
    /// series looked up once rather than at each window.
    pub fn model_windows(&self, model: &str) -> ModelWindows {
        ModelWindows {
            windows: self.inner.windows.local(),
            anomalous: self.inner.anomalous_windows.local(),
            errors: self
                .inner
                .reconstruction_error
                .with_label_values(&[model])
                .local(),
        }
    }
    pub fn alert(&self, event: &str, active: usize) {
        self.inner.alerts.with_label_values(&[event]).inc();
        self.inner.alerts_active.set(active as i64);
    }
    pub fn output_error(&self, sink: &str) {
        self.inner.output_errors.with_label_values(&[sink]).inc();
    }
    /// `scope` now serves the model `id` (see [`crate::scope`]).
    pub fn model_loaded(&self, scope: &str, id: &str, variant: &str, threshold: f64) {
        let mut models = self
            .inner
            .scope_models
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((old_id, old_variant)) = models.remove(scope) {
            let _ = self
                .inner
                .model_info
                .remove_label_values(&[&old_id, scope, &old_variant]);
        }
        self.inner
            .model_info
            .with_label_values(&[id, scope, variant])
            .set(1);
        models.insert(scope.to_string(), (id.to_string(), variant.to_string()));
        self.inner
            .model_threshold
            .with_label_values(&[scope])
            .set(threshold);
        if scope == crate::scope::rules::FLEET {
            *self.inner.model_id.write().expect("model id lock") = id.to_string();
        }
    }
    /// `state` is `calibrating`, `training` or `serving`.
    pub fn model_state(&self, scope: &str, state: &str) {
        let served = self
            .inner
            .scope_models
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(scope);
        let mut waiting = self
            .inner
            .waiting_for_model
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if state == "serving" || served {
            waiting.remove(scope);
        } else {
            waiting.insert(scope.to_string());
        }
        drop(waiting);
        for s in ["calibrating", "training", "serving"] {
            self.inner
                .model_state
                .with_label_values(&[scope, s])
                .set((s == state) as i64);
        }
    }
    pub fn calibration(&self, scope: &str, collected: usize, target: usize) {
        self.inner
            .calibration_windows
            .with_label_values(&[scope])
            .set(collected as i64);
        self.inner.calibration_target.set(target as i64);
    }
    pub fn scope_overflow(&self, windows: usize) {
        self.inner.scope_overflow.inc_by(windows as u64);
    }
    /// `command` is a known command name or `unknown`; `result` is
    /// `accepted`, `refused` or `invalid`.
    pub fn command(&self, command: &str, result: &str) {
        self.inner
            .commands
            .with_label_values(&[command, result])
            .inc();
    }
    pub fn retrain_windows(&self, scope: &str, windows: usize) {
        self.inner
            .retrain_windows
            .with_label_values(&[scope])
            .set(windows as i64);
    }
    pub fn drift(&self, scope: &str, ratio: f64) {
        self.inner.drift.with_label_values(&[scope]).set(ratio);
    }
    /// `result` is `ok`, `rejected` or `failed`.
    pub fn training_run(&self, result: &str, excluded: usize) {
        self.inner.training_runs.with_label_values(&[result]).inc();
        self.inner.training_excluded.inc_by(excluded as u64);
    }
    /// `result` is `ok` or `failed`.
    pub fn reload(&self, result: &str) {
        self.inner.reloads.with_label_values(&[result]).inc();
    }
    pub fn windows_scored(&self) -> u64 {
        self.inner.windows.get()
    }
    pub fn frames_received(&self) -> u64 {
        self.inner.frames.get()
    }
    pub fn is_mqtt_connected(&self, role: &str) -> bool {
        self.inner.mqtt_connected.with_label_values(&[role]).get() != 0
    }
    /// `role` is `input` or `output`.
    pub fn mqtt_connected(&self, role: &str, connected: bool) {
        self.inner
            .mqtt_connected
            .with_label_values(&[role])
            .set(i64::from(connected));
    }
    pub fn mqtt_connection_failure(&self, role: &str, reason: &str) {
        self.inner
            .mqtt_connection_failures
            .with_label_values(&[role, reason])
            .inc();
    }
    pub fn mqtt_unrouted(&self) {
        self.inner.mqtt_unrouted.inc();
    }
    /// `kind` is `features`, `alert` or `status`.
    pub fn mqtt_publish_dropped(&self, kind: &str, messages: usize) {
        self.inner
            .mqtt_publish_dropped
            .with_label_values(&[kind])
            .inc_by(messages as u64);
    }
    /// `event` is `spooled`, `replayed`, `acked` or `dropped`.
    pub fn mqtt_spool(&self, event: &str, alerts: u64) {
        self.inner
            .mqtt_spool
            .with_label_values(&[event])
            .inc_by(alerts);
    }
    pub fn mqtt_spool_synced(&self) {
        self.inner.mqtt_spool_syncs.inc();
    }
    pub fn mqtt_spool_corrupt(&self, bytes: u64) {
        self.inner.mqtt_spool_corrupt.inc_by(bytes);
    }
    pub fn mqtt_spool_bytes(&self, bytes: u64) {
        self.inner
            .mqtt_spool_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
    pub fn alerts_lost(&self, reason: AlertsLost, alerts: u64) {
        self.inner
            .alerts_lost
            .with_label_values(&[reason.as_str()])
            .inc_by(alerts);
    }
    pub fn mqtt_resent(&self, messages: usize) {
        self.inner.mqtt_resent.inc_by(messages as u64);
    }
    pub fn control_unauthorized(&self) {
        self.inner.control_unauthorized.inc();
    }
    /// `area` is one of `guard::Area`, `status` 401, 403 or 429; 0 makes
    /// the series visible.
    pub fn http_refused(&self, area: &str, status: &str, requests: u64) {
        self.inner
            .http_refused
            .with_label_values(&[area, status])
            .inc_by(requests);
    }
    /// Makes a serial port's series visible (at 0) before anything happens.
    pub fn serial_port(&self, port: &str) {
        let inner = &self.inner;
        inner.serial_connected.with_label_values(&[port]).set(0);
        for reason in ["open", "lost"] {
            inner
                .serial_connection_failures
                .with_label_values(&[port, reason]);
        }
        for reason in crate::source::serial::framing::FrameError::ALL_REASONS {
            inner
                .serial_framing_errors
                .with_label_values(&[port, reason]);
        }
        inner.serial_discarded_bytes.with_label_values(&[port]);
        inner
            .serial_observed_rate
            .with_label_values(&[port])
            .set(0.0);
        inner.serial_rate_mismatch.with_label_values(&[port]);
    }
    pub fn serial_connected(&self, port: &str, connected: bool) {
        self.inner
            .serial_connected
            .with_label_values(&[port])
            .set(i64::from(connected));
    }
    /// `reason` is `open` or `lost`.
    pub fn serial_connection_failure(&self, port: &str, reason: &str) {
        self.inner
            .serial_connection_failures
            .with_label_values(&[port, reason])
            .inc();
    }
    pub fn serial_framing_error(
        &self,
        port: &str,
        error: &crate::source::serial::framing::FrameError,
    ) {
        self.inner
            .serial_framing_errors
            .with_label_values(&[port, error.reason()])
            .inc();
        if error.bytes() > 0 {
            self.inner
                .serial_discarded_bytes
                .with_label_values(&[port])
                .inc_by(error.bytes() as u64);
        }
    }
    pub fn serial_observed_rate(&self, port: &str, hz: f64) {
        self.inner
            .serial_observed_rate
            .with_label_values(&[port])
            .set(hz);
    }
    pub fn serial_rate_mismatch(&self, port: &str) {
        self.inner
            .serial_rate_mismatch
            .with_label_values(&[port])
            .inc();
    }
    /// The MQTT input's subscriptions were acknowledged (or the connection
    /// that had them is gone).
    pub fn mqtt_subscribed(&self, subscribed: bool) {
        self.inner
            .input_subscribed
            .store(subscribed, Ordering::SeqCst);
    }
    /// `telemetry.ready_while_calibrating`.
    pub fn set_ready_while_calibrating(&self, ready: bool) {
        self.inner
            .ready_while_calibrating
            .store(ready, Ordering::SeqCst);
    }
    /// What /readyz reports; see [`Readiness`].
    pub fn readiness(&self) -> Readiness {
        let input_kind = *self.inner.input_kind.read().expect("input kind lock");
        let waiting = self
            .inner
            .waiting_for_model
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Readiness {
            pipeline: self.inner.ready.load(Ordering::SeqCst),
            input_kind,
            input_connected: self.input_connected(),
            input_subscribed: input_kind != "mqtt"
                || self.inner.input_subscribed.load(Ordering::SeqCst),
            calibrating: waiting.len(),
            calibrating_first: waiting.iter().take(10).cloned().collect(),
            ready_while_calibrating: self.inner.ready_while_calibrating.load(Ordering::SeqCst),
            model: self.inner.model_id.read().expect("model id lock").clone(),
        }
    }
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::SeqCst);
    }
    /// `replay`, `mqtt` or `serial`.
    pub fn set_input_kind(&self, kind: &'static str) {
        *self.inner.input_kind.write().expect("input kind lock") = kind;
    }
    /// Whether the input is connected: the MQTT input's connection, or
    /// every serial port open; a replay always is.
    pub fn input_connected(&self) -> bool {
        match *self.inner.input_kind.read().expect("input kind lock") {
            "mqtt" => self.is_mqtt_connected("input"),
            "serial" => {
                let families = prometheus::core::Collector::collect(&self.inner.serial_connected);
                let ports: Vec<f64> = families
                    .iter()
                    .flat_map(|f| f.get_metric().iter().map(|m| m.get_gauge().get_value()))
                    .collect();
                !ports.is_empty() && ports.iter().all(|v| *v == 1.0)
            }
            _ => true,
        }
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.inner.registry.gather(), &mut buffer)
            .expect("text encoding");
        String::from_utf8(buffer).expect("prometheus text is UTF-8")
    }
}

/// Why an alert never reached the broker (`accelwatch_alerts_lost_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertsLost {
    /// The spool had no room (`output.mqtt.spool_max_bytes`).
    SpoolFull,
    /// Memory had no room (`output.mqtt.queue`) and there was no spool.
    QueueFull,
    /// Kept in memory only, not acknowledged when the daemon stopped.
    Shutdown,
}

impl AlertsLost {
    pub const ALL: [AlertsLost; 3] = [Self::SpoolFull, Self::QueueFull, Self::Shutdown];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SpoolFull => "spool_full",
            Self::QueueFull => "queue_full",
            Self::Shutdown => "shutdown",
        }
    }

    /// What the operator can change, for the warning.
    pub const fn cause(self) -> &'static str {
        match self {
            Self::SpoolFull => "the spool is full: output.mqtt.spool_max_bytes",
            Self::QueueFull => "no spool and output.mqtt.queue alerts wait already",
            Self::Shutdown => "stopped before the broker acknowledged them",
        }
    }
}

/// Whether the daemon does its job now: the pipeline runs, the input is
/// connected and (MQTT) subscribed, and every scope that should score has
/// a model, unless `telemetry.ready_while_calibrating`.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub pipeline: bool,
    pub input_kind: &'static str,
    pub input_connected: bool,
    pub input_subscribed: bool,
    /// Scopes calibrating without a model, and the first ten of them.
    pub calibrating: usize,
    pub calibrating_first: Vec<String>,
    pub ready_while_calibrating: bool,
    /// The fleet's model id ("" while it has none).
    pub model: String,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.pipeline
            && self.input_connected
            && self.input_subscribed
            && (self.calibrating == 0 || self.ready_while_calibrating)
    }

    /// What keeps the daemon from being ready, first things first.
    pub fn reason(&self) -> Option<String> {
        if !self.pipeline {
            Some("the pipeline is not running".into())
        } else if !self.input_connected {
            Some(format!("the {} input is not connected", self.input_kind))
        } else if !self.input_subscribed {
            Some("the MQTT input's subscriptions are not acknowledged yet".into())
        } else if self.calibrating > 0 && !self.ready_while_calibrating {
            Some(format!(
                "{} model scope(s) calibrating, serving no model yet: {}",
                self.calibrating,
                self.calibrating_first.join(", ")
            ))
        } else {
            None
        }
    }
}

/// End-to-end timing.
impl Metrics {
    /// The latency histograms, to be added up on one thread (the sink
    /// loop's) and flushed once a batch.
    pub fn window_latencies(&self) -> WindowLatencies {
        WindowLatencies {
            total: self.inner.window_latency.local(),
            stages: self
                .inner
                .window_stage
                .iter()
                .map(Histogram::local)
                .collect(),
        }
    }
}

/// `accelwatch_window_latency_seconds` and `accelwatch_window_stage_seconds`
/// of one thread, summed locally until [`Self::flush`]: six atomic
/// observations a window were 2.5 % of the daemon's CPU on binary input
/// (docs/measured.md).
pub struct WindowLatencies {
    total: LocalHistogram,
    stages: Vec<LocalHistogram>,
}

impl WindowLatencies {
    /// A window's record, which passed the stages of `timeline`, was taken
    /// by the sinks at `taken_ms` and handed to the outputs at
    /// `done_ms`: the whole latency from the frame's arrival, and each
    /// stage's part when every stamp is there.
    pub fn observe(&mut self, timeline: &crate::window::Timeline, taken_ms: f64, done_ms: f64) {
        let seconds = |from: f64, to: f64| ((to - from) / 1000.0).max(0.0);
        self.total.observe(seconds(timeline.arrival_ms, done_ms));
        let stamps = [
            timeline.arrival_ms,
            timeline.completed_ms,
            timeline.picked_ms,
            timeline.scored_ms,
            taken_ms,
            done_ms,
        ];
        if stamps.iter().any(|t| *t <= 0.0) {
            return;
        }
        for (stage, pair) in self.stages.iter().zip(stamps.windows(2)) {
            stage.observe(seconds(pair[0], pair[1]));
        }
    }

    /// Adds what was observed since the last flush to the metrics.
    pub fn flush(&mut self) {
        self.total.flush();
        for stage in &self.stages {
            stage.flush();
        }
    }
}

/// Alert evidence ([`crate::evidence`]).
impl Metrics {
    /// An evidence file was written; the store now keeps `files` of
    /// `bytes`, after removing `removed` old ones.
    pub fn evidence_written(&self, removed: usize, files: usize, bytes: u64) {
        let inner = &self.inner;
        inner.evidence_written.inc();
        inner.evidence_removed.inc_by(removed as u64);
        self.evidence_kept(files, bytes);
    }
    pub fn evidence_kept(&self, files: usize, bytes: u64) {
        self.inner.evidence_files.set(files as i64);
        self.inner.evidence_bytes.set(bytes as i64);
    }
    /// `reason`: `queue_full` or `write_failed`.
    pub fn evidence_dropped(&self, reason: &str) {
        self.inner
            .evidence_dropped
            .with_label_values(&[reason])
            .inc();
    }
    /// `reason`: `foreign` or `corrupt`.
    pub fn evidence_skipped(&self, reason: &str) {
        self.inner
            .evidence_skipped
            .with_label_values(&[reason])
            .inc();
    }
}
