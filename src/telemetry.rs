//! Prometheus metrics, and the HTTP endpoint that serves them with
//! `/healthz` and `/readyz`. Every stage reports through the small typed
//! methods of [`Metrics`], so names and label sets are defined here once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::online::control::{Command, Control};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::decode::DecodeError;
use crate::window::Dropped;

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    frames: IntCounter,
    samples: IntCounter,
    decode_errors: IntCounterVec,
    samples_dropped: IntCounterVec,
    gap_restarts: IntCounter,
    devices_evicted: IntCounter,
    devices: IntGauge,
    windows: IntCounter,
    anomalous_windows: IntCounter,
    alerts: IntCounterVec,
    alerts_active: IntGauge,
    inference_seconds: Histogram,
    inference_batch: Histogram,
    reconstruction_error: HistogramVec,
    output_errors: IntCounterVec,
    model_info: IntGaugeVec,
    model_threshold: prometheus::GaugeVec,
    mqtt_connected: IntGaugeVec,
    mqtt_connection_failures: IntCounterVec,
    mqtt_unrouted: IntCounter,
    mqtt_publish_dropped: IntCounterVec,
    serial_connected: IntGaugeVec,
    serial_connection_failures: IntCounterVec,
    serial_framing_errors: IntCounterVec,
    serial_discarded_bytes: IntCounterVec,
    serial_observed_rate: prometheus::GaugeVec,
    serial_rate_mismatch: IntCounterVec,
    ready: AtomicBool,
    /// `replay`, `mqtt` or `serial`: which connection gauges /readyz reads.
    input_kind: RwLock<&'static str>,
    model_id: RwLock<String>,
    /// Each scope's served model (id, variant), to retire its info series.
    scope_models: std::sync::Mutex<std::collections::HashMap<String, (String, String)>>,
    reloads: IntCounterVec,
    model_state: IntGaugeVec,
    calibration_windows: IntGaugeVec,
    calibration_target: IntGauge,
    training_runs: IntCounterVec,
    training_excluded: IntCounter,
    commands: IntCounterVec,
    drift: prometheus::GaugeVec,
    retrain_windows: IntGaugeVec,
    scope_overflow: IntCounter,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let decode_errors = counter_vec(
            r,
            "accelwatch_decode_errors_total",
            "Payloads that could not be decoded, by reason.",
            &["reason"],
        );
        for reason in DecodeError::ALL_REASONS {
            decode_errors.with_label_values(&[reason]);
        }
        let samples_dropped = counter_vec(
            r,
            "accelwatch_samples_dropped_total",
            "Decoded samples not windowed, by reason (out_of_order, duplicate).",
            &["reason"],
        );
        for reason in [Dropped::OutOfOrder, Dropped::Duplicate] {
            samples_dropped.with_label_values(&[reason.reason()]);
        }
        let alerts = counter_vec(
            r,
            "accelwatch_alerts_total",
            "Alert transitions, by event.",
            &["event"],
        );
        for event in ["raise", "clear"] {
            alerts.with_label_values(&[event]);
        }
        let inference_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "accelwatch_inference_seconds",
                "Time to score one batch of windows.",
            )
            .buckets(prometheus::exponential_buckets(1e-5, 2.0, 18).expect("buckets")),
        )
        .expect("valid metric");
        r.register(Box::new(inference_seconds.clone()))
            .expect("unique metric");
        let inference_batch = Histogram::with_opts(
            HistogramOpts::new(
                "accelwatch_inference_batch_windows",
                "Windows per inference call.",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )
        .expect("valid metric");
        r.register(Box::new(inference_batch.clone()))
            .expect("unique metric");
        let reconstruction_error = HistogramVec::new(
            HistogramOpts::new(
                "accelwatch_reconstruction_error",
                "Reconstruction error (the anomaly score) per window, by model.",
            )
            .buckets(prometheus::exponential_buckets(0.01, 2.0, 16).expect("buckets")),
            &["model"],
        )
        .expect("valid metric");
        r.register(Box::new(reconstruction_error.clone()))
            .expect("unique metric");
        let output_errors = counter_vec(
            r,
            "accelwatch_output_errors_total",
            "Failed writes to an output, by sink.",
            &["sink"],
        );
        let model_info = IntGaugeVec::new(
            Opts::new(
                "accelwatch_model_info",
                "The model being served (value 1), by model scope.",
            ),
            &["id", "scope", "variant"],
        )
        .expect("valid metric");
        r.register(Box::new(model_info.clone()))
            .expect("unique metric");
        let model_threshold = prometheus::GaugeVec::new(
            Opts::new(
                "accelwatch_model_threshold",
                "Anomaly threshold in use, by model scope.",
            ),
            &["scope"],
        )
        .expect("valid metric");
        r.register(Box::new(model_threshold.clone()))
            .expect("unique metric");
        let build_info = IntGaugeVec::new(
            Opts::new("accelwatch_build_info", "The running build (value 1)."),
            &["version"],
        )
        .expect("valid metric");
        r.register(Box::new(build_info.clone()))
            .expect("unique metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let mqtt_connected = IntGaugeVec::new(
            Opts::new(
                "accelwatch_mqtt_connected",
                "1 while connected to the MQTT broker, by role (input, output).",
            ),
            &["role"],
        )
        .expect("valid metric");
        r.register(Box::new(mqtt_connected.clone()))
            .expect("unique metric");
        let mqtt_connection_failures = counter_vec(
            r,
            "accelwatch_mqtt_connection_failures_total",
            "MQTT connections lost or refused, by role and reason \
             (network, refused, tls, oversize, protocol).",
            &["role", "reason"],
        );
        let mqtt_publish_dropped = counter_vec(
            r,
            "accelwatch_mqtt_publish_dropped_total",
            "MQTT messages not published because the output queue was full, by kind.",
            &["kind"],
        );
        let serial_connected = IntGaugeVec::new(
            Opts::new(
                "accelwatch_serial_connected",
                "1 while the serial port is open, by port (the configured name or index).",
            ),
            &["port"],
        )
        .expect("valid metric");
        r.register(Box::new(serial_connected.clone()))
            .expect("unique metric");
        let serial_connection_failures = counter_vec(
            r,
            "accelwatch_serial_connection_failures_total",
            "Serial ports that could not be opened (open) or went away (lost), by port.",
            &["port", "reason"],
        );
        let serial_framing_errors = counter_vec(
            r,
            "accelwatch_serial_framing_errors_total",
            "Serial bytes that formed no line or frame, by port and reason \
             (line_too_long, bad_length, bad_crc, garbage, truncated).",
            &["port", "reason"],
        );
        let serial_discarded_bytes = counter_vec(
            r,
            "accelwatch_serial_discarded_bytes_total",
            "Serial bytes thrown away by the binary framer (garbage, torn frames), by port.",
            &["port"],
        );
        let serial_observed_rate = prometheus::GaugeVec::new(
            Opts::new(
                "accelwatch_serial_observed_rate_hz",
                "Samples per second received over the last second, by port.",
            ),
            &["port"],
        )
        .expect("valid metric");
        r.register(Box::new(serial_observed_rate.clone()))
            .expect("unique metric");
        let serial_rate_mismatch = counter_vec(
            r,
            "accelwatch_serial_rate_mismatch_total",
            "Episodes of a serial port's sample rate off input.sample_rate_hz by more than \
             input.serial.rate_tolerance for input.serial.rate_window_s, by port.",
            &["port"],
        );
        Self {
            inner: Arc::new(Inner {
                serial_connected,
                serial_connection_failures,
                serial_framing_errors,
                serial_discarded_bytes,
                serial_observed_rate,
                serial_rate_mismatch,
                mqtt_connected,
                mqtt_connection_failures,
                mqtt_unrouted: counter(
                    r,
                    "accelwatch_mqtt_unrouted_total",
                    "MQTT messages whose topic named no device.",
                ),
                mqtt_publish_dropped,
                frames: counter(
                    r,
                    "accelwatch_frames_total",
                    "Messages (frames) received from sources.",
                ),
                samples: counter(
                    r,
                    "accelwatch_samples_total",
                    "Samples decoded from frames.",
                ),
                decode_errors,
                samples_dropped,
                gap_restarts: counter(
                    r,
                    "accelwatch_gap_restarts_total",
                    "Device windows restarted after a timestamp gap over window.max_gap_ms.",
                ),
                devices_evicted: counter(
                    r,
                    "accelwatch_devices_evicted_total",
                    "Devices forgotten to stay within window.max_devices.",
                ),
                devices: gauge(r, "accelwatch_devices", "Devices currently tracked."),
                windows: counter(r, "accelwatch_windows_total", "Windows scored."),
                anomalous_windows: counter(
                    r,
                    "accelwatch_anomalous_windows_total",
                    "Windows whose score was over the threshold.",
                ),
                alerts,
                alerts_active: gauge(r, "accelwatch_alerts_active", "Devices currently in alert."),
                inference_seconds,
                inference_batch,
                reconstruction_error,
                output_errors,
                model_info,
                model_threshold,
                ready: AtomicBool::new(false),
                input_kind: RwLock::new("replay"),
                model_id: RwLock::new(String::new()),
                scope_models: Default::default(),
                reloads: counter_vec(
                    r,
                    "accelwatch_reloads_total",
                    "Model reloads (SIGHUP or a changed model file), by result: ok or failed.",
                    &["result"],
                ),
                model_state: {
                    let g = IntGaugeVec::new(
                        Opts::new(
                            "accelwatch_model_state",
                            "1 for the model state the daemon is in: calibrating (collecting \
                             windows, no model), training, or serving.",
                        ),
                        &["scope", "state"],
                    )
                    .expect("valid metric");
                    r.register(Box::new(g.clone())).expect("unique metric");
                    g
                },
                calibration_windows: gauge_vec(
                    r,
                    "accelwatch_calibration_windows",
                    "Windows collected for the next online training, by model scope.",
                    &["scope"],
                ),
                calibration_target: gauge(
                    r,
                    "accelwatch_calibration_target_windows",
                    "Windows an online training waits for (training.min_windows).",
                ),
                training_runs: counter_vec(
                    r,
                    "accelwatch_training_runs_total",
                    "Online trainings, by result: ok or failed.",
                    &["result"],
                ),
                training_excluded: counter(
                    r,
                    "accelwatch_training_excluded_windows_total",
                    "Calibration windows left out of online training as outliers.",
                ),
                commands: counter_vec(
                    r,
                    "accelwatch_commands_total",
                    "Control commands (HTTP or MQTT), by command and result: accepted, \
                     refused (cannot be done now) or invalid.",
                    &["command", "result"],
                ),
                retrain_windows: gauge_vec(
                    r,
                    "accelwatch_retrain_windows",
                    "Recent windows judged normal, kept for a retraining, by model scope.",
                    &["scope"],
                ),
                drift: {
                    let g = prometheus::GaugeVec::new(
                        Opts::new(
                            "accelwatch_drift_ratio",
                            "Share of the last 1000 windows over the threshold, divided by the \
                             share expected from calibration (1 - quantile); about 1 without \
                             drift. By model scope.",
                        ),
                        &["scope"],
                    )
                    .expect("valid metric");
                    r.register(Box::new(g.clone())).expect("unique metric");
                    g
                },
                scope_overflow: counter(
                    r,
                    "accelwatch_scope_overflow_windows_total",
                    "Windows of devices or groups beyond training.max_scopes, scored by the \
                     fleet model instead of one of their own.",
                ),
                registry,
            }),
        }
    }

    pub fn frame(&self) {
        self.inner.frames.inc();
    }
    pub fn samples(&self, n: usize) {
        self.inner.samples.inc_by(n as u64);
    }
    pub fn decode_error(&self, error: &DecodeError) {
        self.inner
            .decode_errors
            .with_label_values(&[error.reason()])
            .inc();
    }
    pub fn sample_dropped(&self, reason: Dropped) {
        self.inner
            .samples_dropped
            .with_label_values(&[reason.reason()])
            .inc();
    }
    pub fn gap_restart(&self) {
        self.inner.gap_restarts.inc();
    }
    pub fn device_evicted(&self) {
        self.inner.devices_evicted.inc();
    }
    pub fn devices(&self, n: usize) {
        self.inner.devices.set(n as i64);
    }
    pub fn inference(&self, windows: usize, seconds: f64) {
        self.inner.inference_seconds.observe(seconds);
        self.inner.inference_batch.observe(windows as f64);
    }
    pub fn window_scored(&self, model: &str, score: f32, anomalous: bool) {
        self.inner.windows.inc();
        self.inner
            .reconstruction_error
            .with_label_values(&[model])
            .observe(score as f64);
        if anomalous {
            self.inner.anomalous_windows.inc();
        }
    }
    pub fn alert(&self, event: &str, active: usize) {
        self.inner.alerts.with_label_values(&[event]).inc();
        self.inner.alerts_active.set(active as i64);
    }
    pub fn output_error(&self, sink: &str) {
        self.inner.output_errors.with_label_values(&[sink]).inc();
    }
    /// `scope` now serves the model `id` (see [`crate::online::scope`]).
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
        if scope == crate::online::scope::FLEET {
            *self.inner.model_id.write().expect("model id lock") = id.to_string();
        }
    }
    /// `state` is `calibrating`, `training` or `serving`.
    pub fn model_state(&self, scope: &str, state: &str) {
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
    pub fn mqtt_publish_dropped(&self, kind: &str) {
        self.inner
            .mqtt_publish_dropped
            .with_label_values(&[kind])
            .inc();
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
        for reason in crate::serial::framing::FrameError::ALL_REASONS {
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
    pub fn serial_framing_error(&self, port: &str, error: &crate::serial::framing::FrameError) {
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

async fn metrics_handler(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(metrics): State<Metrics>) -> impl IntoResponse {
    let pipeline = metrics.inner.ready.load(Ordering::SeqCst);
    let input_kind = *metrics.inner.input_kind.read().expect("input kind lock");
    let input_connected = metrics.input_connected();
    let ready = pipeline && input_connected;
    let model = metrics
        .inner
        .model_id
        .read()
        .expect("model id lock")
        .clone();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({
            "ready": ready,
            "model": model,
            "pipeline": pipeline,
            "input": { "kind": input_kind, "connected": input_connected },
        })),
    )
}

/// `POST /control/<command>[?arguments]`: queued for the scorer (202),
/// refused when online training is off (409), an unknown command (404) or
/// bad arguments (400).
async fn control_handler(
    State((metrics, control)): State<(Metrics, Option<Control>)>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> impl IntoResponse {
    let command = match Command::parse(&name, query.as_deref()) {
        Ok(command) => command,
        Err(error) => {
            let known = crate::online::control::NAMES.contains(&name.as_str());
            metrics.command(if known { name.as_str() } else { "unknown" }, "invalid");
            let status = if known {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::NOT_FOUND
            };
            return (status, Json(serde_json::json!({ "error": error })));
        }
    };
    let name = command.as_str();
    match &control {
        Some(control) if control.send(command) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "accepted": name })),
        ),
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": "shutting down" })),
        ),
        None => {
            metrics.command(name, "refused");
            (
                StatusCode::CONFLICT,
                Json(serde_json::json!({
                    "error": "control needs training.mode = \"online\" and model.dir"
                })),
            )
        }
    }
}

/// Binds `addr` (port 0 picks a free one) and serves until `shutdown`
/// resolves. Returns the bound address and the server task.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    control: Option<Control>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(metrics.clone())
        .merge(
            Router::new()
                .route("/control/{command}", post(control_handler))
                .with_state((metrics, control)),
        );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "telemetry server failed");
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_named_counters_with_bounded_labels() {
        let m = Metrics::new();
        m.frame();
        m.samples(3);
        m.decode_error(&DecodeError::NotUtf8);
        m.window_scored("basic-x", 0.5, true);
        let text = m.render();
        assert!(text.contains("accelwatch_frames_total 1"), "{text}");
        assert!(text.contains("accelwatch_samples_total 3"));
        assert!(text.contains("accelwatch_decode_errors_total{reason=\"not_utf8\"} 1"));
        assert!(
            text.contains("accelwatch_decode_errors_total{reason=\"syntax\"} 0"),
            "reasons pre-registered"
        );
        assert!(text.contains("accelwatch_anomalous_windows_total 1"));
    }
}
