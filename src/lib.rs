//! accelwatch: accelerometer/IMU streams in; per-window autoencoder latent
//! features, reconstruction-error anomaly scores and alerts out.
//!
//! Data flows one way, and the folders follow it:
//!
//! ```text
//! source -> decode -> window -> model + score -> detect -> record -> sink
//! Frame     Samples   Window    latent, error    alert     Output    jsonl | mqtt | console
//! ```
//!
//! - [`source`]: replay (CSV), MQTT and serial inputs yield
//!   [`source::frame::Frame`]s: raw payloads tagged with a device.
//! - [`decode`]: payloads to samples (pure).
//! - [`window`]: a ring buffer per device, emitting windows (pure).
//! - [`model`]: autoencoders trained with candle, written as ONNX with
//!   their metadata, served with tract or ONNX Runtime; [`model::scorer`]
//!   runs a batch of windows through one.
//! - [`score`]: reconstruction errors and quantiles; [`detect`]:
//!   hysteresis per device (both pure).
//! - [`record`]: what is published (windows, alerts, status).
//! - [`sink`]: JSON lines, the console, MQTT, and the live board the
//!   status page shows.
//! - [`evidence`]: what raised each alert (the window, its reconstruction,
//!   the errors), kept in a bounded directory and served as
//!   `/api/alerts`.
//! - [`pipeline`]: the stages every path shares (frames to windows, windows
//!   to records); [`daemon`] runs them as tasks joined by bounded queues,
//!   with reloads, health and systemd notifications.
//! - [`scope`]: which model (fleet, device, group) serves a device, and
//!   where its versions are stored; [`online`]: calibration, training in
//!   the background, retraining and drift; [`control`]: the commands.
//! - [`telemetry`]: Prometheus metrics and the HTTP endpoints, with the
//!   status page and its `/api/state`; [`mqtt`]:
//!   the client, topics and settings the MQTT input and output share.
//! - [`config`] assembles the sections each component owns and checks what
//!   spans them; [`problem`] collects what is wrong with a config.
//! - [`cmd`]: the commands ([`cli`] parses them); [`eval`]: `evaluate`'s
//!   metrics, feature quality and plots.
//! - [`fuzzing`]: the bodies of the fuzz targets, which the corpus replay
//!   test runs too.
//! - [`recording`] reads CSV recordings; [`sequence`] hands out ids that
//!   never go back; [`clock`], [`backoff`],
//!   [`idle`] and [`logging`] are small shared utilities; `reason` makes the typed
//!   errors that carry a reason in words.

pub mod backoff;
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod control;
pub mod daemon;
pub mod decode;
pub mod detect;
pub mod eval;
pub mod evidence;
pub mod fuzzing;
pub mod idle;
pub mod logging;
pub mod model;
pub mod mqtt;
pub mod online;
pub mod pipeline;
pub mod problem;
mod reason;
pub mod record;
pub mod recording;
pub mod scope;
pub mod score;
pub mod sequence;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod window;

/// Exit code for a bad configuration or model (sysexits' EX_CONFIG).
pub const EX_CONFIG: u8 = 78;
