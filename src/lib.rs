//! accelwatch: accelerometer/IMU streams in; per-window autoencoder latent
//! features, reconstruction-error anomaly scores and alerts out.
//!
//! Data flows one way:
//!
//! ```text
//! source (replay, mqtt, serial) -> decode -> window -> score (tract) -> detect -> sinks (jsonl, console)
//!   Frame            Samples   Window    Scored            alert      Output
//! ```
//!
//! - [`source`] yields [`source::Frame`]s: raw payloads tagged with a device.
//! - [`decode`] turns payloads into samples (pure).
//! - [`window`] keeps a ring buffer per device and emits windows (pure).
//! - [`model`] trains autoencoders with candle, writes them as ONNX with
//!   their metadata, and serves them with tract.
//! - [`score`] computes reconstruction errors; [`detect`] applies hysteresis
//!   per device (both pure).
//! - [`pipeline`] holds the stages every path shares; [`daemon`] runs them
//!   as tasks joined by bounded queues.
//! - [`sink`] publishes; [`telemetry`] serves Prometheus metrics.
//! - [`online`] lets the daemon train its own models: calibration, training
//!   in the background, retraining, drift, commands, and one model per
//!   fleet, device or device group.
//! - [`ops`] keeps a service healthy: model reloads, the pipeline's
//!   heartbeat, systemd notifications; [`logging`] sets up the logs.
//! - [`app`] and [`cli`] are the commands on top.

pub mod app;
#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod demo;
pub mod detect;
pub mod evaluate;
pub mod evaluation;
pub mod features;
pub mod logging;
pub mod model;
pub mod mqtt;
pub mod online;
pub mod ops;
pub mod pipeline;
pub mod recording;
pub mod report;
pub mod score;
pub mod serial;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod window;

/// Exit code for a bad configuration or model (sysexits' EX_CONFIG).
pub const EX_CONFIG: u8 = 78;
