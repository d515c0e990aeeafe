//! Every metric accelwatch exports, registered once with its name, help
//! and labels.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use crate::telemetry::register::{counter, counter_vec, gauge, gauge_vec};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::decode::DecodeError;
use crate::window::Dropped;

#[derive(Clone)]
pub struct Metrics {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) registry: Registry,
    pub(crate) frames: IntCounter,
    pub(crate) samples: IntCounter,
    pub(crate) decode_errors: IntCounterVec,
    pub(crate) samples_dropped: IntCounterVec,
    pub(crate) gap_restarts: IntCounter,
    pub(crate) clock_resets: IntCounter,
    pub(crate) devices_evicted: IntCounter,
    pub(crate) devices: IntGauge,
    pub(crate) queue_depth: IntGaugeVec,
    pub(crate) queue_capacity: IntGauge,
    pub(crate) io_threads: IntGauge,
    pub(crate) windows: IntCounter,
    pub(crate) anomalous_windows: IntCounter,
    pub(crate) alerts: IntCounterVec,
    pub(crate) alerts_active: IntGauge,
    pub(crate) inference_seconds: Histogram,
    pub(crate) inference_batch: Histogram,
    pub(crate) reconstruction_error: HistogramVec,
    pub(crate) output_errors: IntCounterVec,
    pub(crate) model_info: IntGaugeVec,
    pub(crate) model_threshold: prometheus::GaugeVec,
    pub(crate) mqtt_connected: IntGaugeVec,
    pub(crate) mqtt_connection_failures: IntCounterVec,
    pub(crate) mqtt_unrouted: IntCounter,
    pub(crate) mqtt_publish_dropped: IntCounterVec,
    pub(crate) mqtt_spool: IntCounterVec,
    pub(crate) mqtt_spool_corrupt: IntCounter,
    pub(crate) mqtt_spool_bytes: IntGauge,
    pub(crate) mqtt_spool_syncs: IntCounter,
    pub(crate) mqtt_resent: IntCounter,
    pub(crate) alerts_lost: IntCounterVec,
    pub(crate) control_unauthorized: IntCounter,
    pub(crate) http_refused: IntCounterVec,
    pub(crate) serial_connected: IntGaugeVec,
    pub(crate) serial_connection_failures: IntCounterVec,
    pub(crate) serial_framing_errors: IntCounterVec,
    pub(crate) serial_discarded_bytes: IntCounterVec,
    pub(crate) serial_observed_rate: prometheus::GaugeVec,
    pub(crate) serial_rate_mismatch: IntCounterVec,
    pub(crate) ready: AtomicBool,
    /// The MQTT input's subscriptions are acknowledged (SUBACK, none
    /// refused) on its current connection.
    pub(crate) input_subscribed: AtomicBool,
    /// Scopes that should score but serve no model yet (calibrating).
    pub(crate) waiting_for_model: std::sync::Mutex<std::collections::BTreeSet<String>>,
    pub(crate) ready_while_calibrating: AtomicBool,
    /// `replay`, `mqtt` or `serial`: which connection gauges /readyz reads.
    pub(crate) input_kind: RwLock<&'static str>,
    pub(crate) model_id: RwLock<String>,
    /// Each scope's served model (id, variant), to retire its info series.
    pub(crate) scope_models: std::sync::Mutex<std::collections::HashMap<String, (String, String)>>,
    pub(crate) reloads: IntCounterVec,
    pub(crate) model_state: IntGaugeVec,
    pub(crate) calibration_windows: IntGaugeVec,
    pub(crate) calibration_target: IntGauge,
    pub(crate) training_runs: IntCounterVec,
    pub(crate) training_excluded: IntCounter,
    pub(crate) commands: IntCounterVec,
    pub(crate) drift: prometheus::GaugeVec,
    pub(crate) retrain_windows: IntGaugeVec,
    pub(crate) scope_overflow: IntCounter,
    pub(crate) window_latency: Histogram,
    /// `accelwatch_window_stage_seconds` of each of [`WINDOW_STAGES`], in order.
    pub(crate) window_stage: Vec<Histogram>,
    pub(crate) evidence_written: IntCounter,
    pub(crate) evidence_dropped: IntCounterVec,
    pub(crate) evidence_removed: IntCounter,
    pub(crate) evidence_skipped: IntCounterVec,
    pub(crate) evidence_files: IntGauge,
    pub(crate) evidence_bytes: IntGauge,
}

/// The parts of a window's latency, in the order it passes them:
/// `accelwatch_window_stage_seconds`' `stage` label.
pub const WINDOW_STAGES: [&str; 5] = ["ingest", "to_scorer", "scoring", "to_sink", "sink"];

/// `accelwatch_window_latency_seconds`' bucket bounds: 50 µs to 1 s, at
/// 1, 1.5, 2, 3, 5 and 7.5 per decade.
const LATENCY_BUCKETS: [f64; 27] = [
    50e-6, 75e-6, 100e-6, 150e-6, 200e-6, 300e-6, 500e-6, 750e-6, 1e-3, 1.5e-3, 2e-3, 3e-3, 5e-3,
    7.5e-3, 10e-3, 15e-3, 20e-3, 30e-3, 50e-3, 75e-3, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0,
];

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
        let mqtt_spool = counter_vec(
            r,
            "accelwatch_mqtt_spool_alerts_total",
            "Alerts of the MQTT output's spool, by event: spooled (fsynced), replayed \
             (read back at start), acked (the broker has them) and dropped (the spool was full).",
            &["event"],
        );
        for event in ["spooled", "replayed", "acked", "dropped"] {
            mqtt_spool.with_label_values(&[event]);
        }
        let alerts_lost = counter_vec(
            r,
            "accelwatch_alerts_lost_total",
            "Alerts the MQTT output could not deliver, by reason: spool_full (no room in \
             output.mqtt.spool_max_bytes), queue_full (no room in memory, output.mqtt.queue), \
             shutdown (kept in memory only and not acknowledged when the daemon stopped).",
            &["reason"],
        );
        for reason in crate::telemetry::events::AlertsLost::ALL {
            alerts_lost.with_label_values(&[reason.as_str()]);
        }
        let mqtt_spool_bytes = IntGauge::new(
            "accelwatch_mqtt_spool_bytes",
            "Bytes of alerts in the MQTT output's spool, waiting for the broker.",
        )
        .expect("valid metric");
        r.register(Box::new(mqtt_spool_bytes.clone()))
            .expect("unique metric");
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
                mqtt_spool,
                mqtt_spool_corrupt: counter(
                    r,
                    "accelwatch_mqtt_spool_corrupt_bytes_total",
                    "Bytes of torn or corrupt records skipped in the MQTT output's spool at start \
                     (the records around them are kept).",
                ),
                mqtt_spool_bytes,
                mqtt_spool_syncs: counter(
                    r,
                    "accelwatch_mqtt_spool_syncs_total",
                    "fsyncs of the MQTT output's alert spool: the alerts waiting together share \
                     one, at most one every 10 ms.",
                ),
                alerts_lost,
                mqtt_resent: counter(
                    r,
                    "accelwatch_mqtt_resent_total",
                    "Alerts and status records published again after the MQTT output's \
                     connection was lost before the broker acknowledged them.",
                ),
                control_unauthorized: counter(
                    r,
                    "accelwatch_control_unauthorized_total",
                    "HTTP control requests refused for a missing or wrong bearer token, \
                     or because no token is configured.",
                ),
                http_refused: counter_vec(
                    r,
                    "accelwatch_http_refused_requests_total",
                    "HTTP requests refused by area (page: the status page and /api/*, \
                     metrics, control) and status: 403 no token configured, 401 no or a \
                     wrong token, 429 too many wrong tokens from the address.",
                    &["area", "status"],
                ),
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
                clock_resets: counter(
                    r,
                    "accelwatch_clock_resets_total",
                    "Device windows restarted because the device's clock went back by more than \
                     window.max_gap_ms (a reboot).",
                ),
                devices_evicted: counter(
                    r,
                    "accelwatch_devices_evicted_total",
                    "Devices forgotten to stay within window.max_devices.",
                ),
                devices: gauge(r, "accelwatch_devices", "Devices currently tracked."),
                io_threads: gauge(
                    r,
                    "accelwatch_io_threads",
                    "Worker threads of the runtime that runs the inputs, outputs and HTTP \
                     (pipeline.io_threads); the scorer has a thread of its own.",
                ),
                queue_depth: gauge_vec(
                    r,
                    "accelwatch_queue_depth",
                    "Items waiting in the queue between the stages (windows, for the scorer); \
                     at accelwatch_queue_capacity the stage before it waits: back-pressure.",
                    &["queue"],
                ),
                queue_capacity: gauge(
                    r,
                    "accelwatch_queue_capacity",
                    "Capacity of the scorer's queue of windows (pipeline.queue_capacity).",
                ),
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
                input_subscribed: AtomicBool::new(false),
                waiting_for_model: Default::default(),
                ready_while_calibrating: AtomicBool::new(false),
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
                    "Online trainings, by result: ok, rejected (a retrained model not better than the served one) or failed.",
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
                window_latency: {
                    let h = Histogram::with_opts(
                        HistogramOpts::new(
                            "accelwatch_window_latency_seconds",
                            "Time from the arrival of the frame completing a window to its \
                             record being handed to the outputs (wall clock).",
                        )
                        .buckets(LATENCY_BUCKETS.to_vec()),
                    )
                    .expect("valid metric");
                    r.register(Box::new(h.clone())).expect("unique metric");
                    h
                },
                window_stage: {
                    let h = HistogramVec::new(
                        HistogramOpts::new(
                            "accelwatch_window_stage_seconds",
                            "The parts of accelwatch_window_latency_seconds: ingest (the frame \
                             decoded and windowed on the source's task), to_scorer (the window queued for \
                             the scorer), scoring (its batch scored), to_sink (from scored \
                             to the outputs, on the scorer's thread), sink (written to them).",
                        )
                        .buckets(LATENCY_BUCKETS.to_vec()),
                        &["stage"],
                    )
                    .expect("valid metric");
                    r.register(Box::new(h.clone())).expect("unique metric");
                    WINDOW_STAGES
                        .iter()
                        .map(|s| h.with_label_values(&[s]))
                        .collect()
                },
                evidence_written: counter(
                    r,
                    "accelwatch_evidence_written_total",
                    "Raised alerts whose evidence was written to detector.evidence_dir.",
                ),
                evidence_dropped: {
                    let c = counter_vec(
                        r,
                        "accelwatch_evidence_dropped_total",
                        "Raised alerts whose evidence was not kept, by reason: queue_full \
                         (the writer fell behind) or write_failed.",
                        &["reason"],
                    );
                    for reason in ["queue_full", "write_failed"] {
                        c.with_label_values(&[reason]);
                    }
                    c
                },
                evidence_removed: counter(
                    r,
                    "accelwatch_evidence_removed_total",
                    "Evidence files removed, oldest first, to stay within \
                     detector.evidence_max_count and evidence_max_bytes.",
                ),
                evidence_skipped: {
                    let c = counter_vec(
                        r,
                        "accelwatch_evidence_skipped_files_total",
                        "Files in the evidence directory that are not evidence (left in place), \
                         by reason: foreign (another name) or corrupt.",
                        &["reason"],
                    );
                    for reason in ["foreign", "corrupt"] {
                        c.with_label_values(&[reason]);
                    }
                    c
                },
                evidence_files: gauge(r, "accelwatch_evidence_files", "Evidence files kept."),
                evidence_bytes: gauge(r, "accelwatch_evidence_bytes", "Bytes of evidence kept."),
                registry,
            }),
        }
    }
}
