//! Typed configuration: one TOML file plus `ACCELWATCH__SECTION__KEY`
//! environment overrides, deserialised strictly (an unknown key is an error
//! naming it) and validated as a whole before anything starts.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{BackendKind, BackendOptions};

/// Where a configuration problem is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `window.hop`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {cause}")]
    Load {
        path: PathBuf,
        cause: config::ConfigError,
    },
    #[error("invalid config {}:\n{}", path.display(), format_problems(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub input: InputConfig,
    #[serde(default)]
    pub window: WindowConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub training: TrainingConfig,
    #[serde(default)]
    pub detector: DetectorConfig,
    #[serde(default)]
    pub output: OutputConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    Replay,
    Mqtt,
    Serial,
}

impl InputKind {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Replay => "replay",
            Self::Mqtt => "mqtt",
            Self::Serial => "serial",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    #[serde(default = "InputConfig::default_kind")]
    pub kind: InputKind,
    /// Channel names in the order the model expects them.
    #[serde(default = "default_channels")]
    pub channels: Vec<String>,
    /// Nominal sample rate; used to stamp samples that carry no timestamp.
    #[serde(default = "InputConfig::default_sample_rate_hz")]
    pub sample_rate_hz: f64,
    #[serde(default = "InputConfig::default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    #[serde(default = "InputConfig::default_max_samples_per_message")]
    pub max_samples_per_message: usize,
    /// Factor applied to int16 values of the binary payload format.
    #[serde(default = "InputConfig::default_binary_i16_scale")]
    pub binary_i16_scale: f64,
    #[serde(default)]
    pub replay: ReplayConfig,
    #[serde(default)]
    pub mqtt: MqttInputConfig,
    #[serde(default)]
    pub serial: SerialInputConfig,
}

impl InputConfig {
    const fn default_binary_i16_scale() -> f64 {
        1.0
    }
    const fn default_kind() -> InputKind {
        InputKind::Replay
    }
    const fn default_sample_rate_hz() -> f64 {
        50.0
    }
    const fn default_max_payload_bytes() -> usize {
        256 * 1024
    }
    const fn default_max_samples_per_message() -> usize {
        4096
    }
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            kind: Self::default_kind(),
            channels: default_channels(),
            sample_rate_hz: Self::default_sample_rate_hz(),
            max_payload_bytes: Self::default_max_payload_bytes(),
            max_samples_per_message: Self::default_max_samples_per_message(),
            binary_i16_scale: Self::default_binary_i16_scale(),
            replay: ReplayConfig::default(),
            mqtt: MqttInputConfig::default(),
            serial: SerialInputConfig::default(),
        }
    }
}

pub fn default_channels() -> Vec<String> {
    ["ax", "ay", "az"].iter().map(|s| s.to_string()).collect()
}

/// How a CSV recording is laid out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvColumns {
    /// Column naming the device; absent from the file means one device.
    #[serde(default = "CsvColumns::default_device_column")]
    pub device_column: String,
    /// Column of timestamps in milliseconds; absent means the sample rate is assumed.
    #[serde(default = "CsvColumns::default_time_column")]
    pub time_column: String,
}

impl CsvColumns {
    fn default_device_column() -> String {
        "device".into()
    }
    fn default_time_column() -> String {
        "t_ms".into()
    }
}

impl Default for CsvColumns {
    fn default() -> Self {
        Self {
            device_column: Self::default_device_column(),
            time_column: Self::default_time_column(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    #[serde(default = "ReplayConfig::default_path")]
    pub path: PathBuf,
    /// 1.0 is real time, 10.0 ten times faster, 0 as fast as possible.
    #[serde(default = "ReplayConfig::default_speed")]
    pub speed: f64,
    /// Start again at the end of the file instead of exiting.
    #[serde(default, rename = "loop")]
    pub repeat: bool,
    #[serde(flatten)]
    pub columns: CsvColumns,
}

impl ReplayConfig {
    fn default_path() -> PathBuf {
        PathBuf::from("data/watch/demo.csv")
    }
    const fn default_speed() -> f64 {
        1.0
    }
}

impl Default for ReplayConfig {
    fn default() -> Self {
        Self {
            path: Self::default_path(),
            speed: Self::default_speed(),
            repeat: false,
            columns: CsvColumns::default(),
        }
    }
}

/// How a payload is encoded; see `decode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// A JSON sample, batch or array of samples.
    Json,
    Csv,
    /// The little-endian binary batch (int16 or float32, said by its header).
    Binary,
}

impl PayloadFormat {
    pub const fn decode_format(self) -> crate::decode::Format {
        match self {
            PayloadFormat::Json => crate::decode::Format::Json,
            PayloadFormat::Csv => crate::decode::Format::Csv,
            PayloadFormat::Binary => crate::decode::Format::Binary,
        }
    }
}

/// One subscription: a topic filter with a `{device}` segment, either as a
/// bare string (using `input.mqtt.format`) or with its own format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TopicEntry {
    Filter(String),
    WithFormat(TopicWithFormat),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicWithFormat {
    pub filter: String,
    pub format: PayloadFormat,
}

impl TopicEntry {
    pub fn filter(&self) -> &str {
        match self {
            TopicEntry::Filter(f) => f,
            TopicEntry::WithFormat(t) => &t.filter,
        }
    }
    pub fn format(&self, default: PayloadFormat) -> PayloadFormat {
        match self {
            TopicEntry::Filter(_) => default,
            TopicEntry::WithFormat(t) => t.format,
        }
    }
}

/// How to reach and authenticate to a broker; shared by the MQTT input
/// and output (the output reuses the input's unless it sets `url`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttAuth {
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password (a trailing newline is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The name of an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// PEM CA certificates for `mqtts://`; the system's roots when unset.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key, for mutual TLS.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

impl MqttAuth {
    fn is_empty(&self) -> bool {
        *self == MqttAuth::default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttInputConfig {
    /// `mqtt://host[:1883]` or `mqtts://host[:8883]`.
    #[serde(default = "MqttInputConfig::default_url")]
    pub url: String,
    #[serde(default = "MqttInputConfig::default_client_id")]
    pub client_id: String,
    /// `"3.1.1"` or `"5"`.
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// false keeps the broker-side session (and QoS 1 messages queued for
    /// us) across reconnects.
    #[serde(default = "MqttInputConfig::default_clean_session")]
    pub clean_session: bool,
    #[serde(default = "MqttInputConfig::default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// QoS of the subscriptions (0 or 1).
    #[serde(default)]
    pub qos: u8,
    #[serde(default = "MqttInputConfig::default_topics")]
    pub topics: Vec<TopicEntry>,
    /// A JSON payload field naming the device, for filters without a
    /// `{device}` level (those must carry JSON).
    #[serde(default)]
    pub device_field: Option<String>,
    /// A topic for control commands (`{"command": "retrain"}`), with online
    /// training; restrict who may publish to it with the broker's ACL.
    #[serde(default)]
    pub command_topic: Option<String>,
    /// Subscribe every filter as `$share/<group>/<filter>`, so daemons in
    /// the same group split the messages (README: splitting a fleet).
    #[serde(default)]
    pub share_group: Option<String>,
    #[serde(default = "MqttInputConfig::default_format")]
    pub format: PayloadFormat,
    /// Largest MQTT packet read or written. A larger incoming packet costs
    /// the connection (the client cannot skip it) and is counted.
    #[serde(default = "MqttInputConfig::default_max_packet_bytes")]
    pub max_packet_bytes: usize,
    #[serde(default = "MqttInputConfig::default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    #[serde(default = "MqttInputConfig::default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    #[serde(default)]
    pub auth: MqttAuth,
}

impl MqttInputConfig {
    fn default_url() -> String {
        "mqtt://127.0.0.1:1883".into()
    }
    fn default_client_id() -> String {
        "accelwatch".into()
    }
    const fn default_clean_session() -> bool {
        true
    }
    const fn default_keep_alive_s() -> u64 {
        30
    }
    fn default_topics() -> Vec<TopicEntry> {
        vec![TopicEntry::Filter("sensors/{device}/accel".into())]
    }
    const fn default_format() -> PayloadFormat {
        PayloadFormat::Json
    }
    const fn default_max_packet_bytes() -> usize {
        1024 * 1024
    }
    const fn default_reconnect_min_ms() -> u64 {
        500
    }
    const fn default_reconnect_max_ms() -> u64 {
        30_000
    }

    /// The filter as subscribed: within `share_group` when one is set and
    /// the filter is not a shared subscription already.
    pub fn subscription_filter(&self, entry: &TopicEntry) -> String {
        match &self.share_group {
            Some(group) if !entry.filter().starts_with("$share/") => {
                format!("$share/{group}/{}", entry.filter())
            }
            _ => entry.filter().to_string(),
        }
    }
}

impl Default for MqttInputConfig {
    fn default() -> Self {
        Self {
            url: Self::default_url(),
            client_id: Self::default_client_id(),
            protocol: MqttProtocol::default(),
            clean_session: Self::default_clean_session(),
            keep_alive_s: Self::default_keep_alive_s(),
            qos: 0,
            topics: Self::default_topics(),
            share_group: None,
            command_topic: None,
            device_field: None,
            format: Self::default_format(),
            max_packet_bytes: Self::default_max_packet_bytes(),
            reconnect_min_ms: Self::default_reconnect_min_ms(),
            reconnect_max_ms: Self::default_reconnect_max_ms(),
            auth: MqttAuth::default(),
        }
    }
}

/// The MQTT protocol version a client speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MqttProtocol {
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    #[serde(rename = "5")]
    V5,
}

/// Serial input (`input.kind = "serial"`): one or more ports, each carrying
/// one device's samples (see `serial::framing` for the wire formats).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialInputConfig {
    #[serde(default)]
    pub ports: Vec<SerialPortConfig>,
    /// Longest text line (without its line feed); a longer one is counted
    /// and skipped up to the next line feed.
    #[serde(default = "SerialInputConfig::default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Largest payload of a binary frame; a frame announcing more is
    /// treated as garbage (it would otherwise stall resynchronisation).
    #[serde(default = "SerialInputConfig::default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    #[serde(default = "SerialInputConfig::default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    #[serde(default = "SerialInputConfig::default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Relative deviation of the observed sample rate from
    /// `input.sample_rate_hz` that counts as a mismatch...
    #[serde(default = "SerialInputConfig::default_rate_tolerance")]
    pub rate_tolerance: f64,
    /// ...when it lasts this long.
    #[serde(default = "SerialInputConfig::default_rate_window_s")]
    pub rate_window_s: f64,
}

impl SerialInputConfig {
    const fn default_max_line_bytes() -> usize {
        1024
    }
    const fn default_max_frame_bytes() -> usize {
        1536
    }
    const fn default_reconnect_min_ms() -> u64 {
        500
    }
    const fn default_reconnect_max_ms() -> u64 {
        10_000
    }
    const fn default_rate_tolerance() -> f64 {
        0.2
    }
    const fn default_rate_window_s() -> f64 {
        10.0
    }
}

impl Default for SerialInputConfig {
    fn default() -> Self {
        Self {
            ports: Vec::new(),
            max_line_bytes: Self::default_max_line_bytes(),
            max_frame_bytes: Self::default_max_frame_bytes(),
            reconnect_min_ms: Self::default_reconnect_min_ms(),
            reconnect_max_ms: Self::default_reconnect_max_ms(),
            rate_tolerance: Self::default_rate_tolerance(),
            rate_window_s: Self::default_rate_window_s(),
        }
    }
}

/// How a serial port's bytes are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialFormat {
    /// One `t,ax,ay,az` or `ax,ay,az` line per sample.
    Csv,
    /// One JSON sample (or batch) per line.
    Json,
    /// Sync bytes, length, int16 samples, CRC-16 (see `serial::framing`).
    Binary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialParity {
    None,
    Odd,
    Even,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialFlowControl {
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialPortConfig {
    /// e.g. `/dev/ttyUSB0`, or a stable udev name such as `/dev/accel0`.
    pub path: PathBuf,
    /// The device id its samples are windowed and published under.
    pub device: String,
    /// The `port` label of the serial metrics; the port's index when unset.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "SerialPortConfig::default_baud")]
    pub baud: u32,
    #[serde(default = "SerialPortConfig::default_format")]
    pub format: SerialFormat,
    #[serde(default = "SerialPortConfig::default_data_bits")]
    pub data_bits: u8,
    #[serde(default = "SerialPortConfig::default_parity")]
    pub parity: SerialParity,
    #[serde(default = "SerialPortConfig::default_stop_bits")]
    pub stop_bits: u8,
    #[serde(default = "SerialPortConfig::default_flow_control")]
    pub flow_control: SerialFlowControl,
}

impl SerialPortConfig {
    const fn default_baud() -> u32 {
        115_200
    }
    const fn default_format() -> SerialFormat {
        SerialFormat::Csv
    }
    const fn default_data_bits() -> u8 {
        8
    }
    const fn default_parity() -> SerialParity {
        SerialParity::None
    }
    const fn default_stop_bits() -> u8 {
        1
    }
    const fn default_flow_control() -> SerialFlowControl {
        SerialFlowControl::None
    }

    /// A port with every default but its path and device.
    pub fn new(path: impl Into<PathBuf>, device: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            device: device.into(),
            name: None,
            baud: Self::default_baud(),
            format: Self::default_format(),
            data_bits: Self::default_data_bits(),
            parity: Self::default_parity(),
            stop_bits: Self::default_stop_bits(),
            flow_control: Self::default_flow_control(),
        }
    }

    /// The metric label of the port at `index` in `input.serial.ports`.
    pub fn label(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| index.to_string())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttOutputConfig {
    /// `"3.1.1"` or `"5"`; the input's when unset.
    #[serde(default)]
    pub protocol: Option<MqttProtocol>,
    /// Another broker; unset, the input's broker, credentials and TLS.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default = "MqttOutputConfig::default_client_id")]
    pub client_id: String,
    #[serde(default = "MqttOutputConfig::default_features_topic")]
    pub features_topic: String,
    #[serde(default = "MqttOutputConfig::default_alert_topic")]
    pub alert_topic: String,
    /// Retained `online` / `offline` (the last will) status.
    #[serde(default = "MqttOutputConfig::default_status_topic")]
    pub status_topic: String,
    #[serde(default)]
    pub features_qos: u8,
    #[serde(default)]
    pub features_retain: bool,
    #[serde(default = "MqttOutputConfig::default_alert_qos")]
    pub alert_qos: u8,
    #[serde(default)]
    pub alert_retain: bool,
    /// Messages waiting for the broker; beyond this (a long outage) they
    /// are dropped and counted.
    #[serde(default = "MqttOutputConfig::default_queue")]
    pub queue: usize,
    /// Only with `url`; otherwise the input's.
    #[serde(default)]
    pub auth: MqttAuth,
}

impl MqttOutputConfig {
    fn default_client_id() -> String {
        "accelwatch-out".into()
    }
    fn default_features_topic() -> String {
        "accelwatch/{device}/features".into()
    }
    fn default_alert_topic() -> String {
        "accelwatch/{device}/alert".into()
    }
    fn default_status_topic() -> String {
        "accelwatch/status".into()
    }
    const fn default_alert_qos() -> u8 {
        1
    }
    const fn default_queue() -> usize {
        4096
    }
}

impl Default for MqttOutputConfig {
    fn default() -> Self {
        Self {
            protocol: None,
            url: None,
            client_id: Self::default_client_id(),
            features_topic: Self::default_features_topic(),
            alert_topic: Self::default_alert_topic(),
            status_topic: Self::default_status_topic(),
            features_qos: 0,
            features_retain: false,
            alert_qos: Self::default_alert_qos(),
            alert_retain: false,
            queue: Self::default_queue(),
            auth: MqttAuth::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    #[serde(default = "WindowConfig::default_size")]
    pub size: usize,
    #[serde(default = "WindowConfig::default_hop")]
    pub hop: usize,
    /// A larger jump between two timestamps of a device restarts its window.
    #[serde(default = "WindowConfig::default_max_gap_ms")]
    pub max_gap_ms: f64,
    /// Devices tracked at once; the longest idle is evicted beyond this.
    #[serde(default = "WindowConfig::default_max_devices")]
    pub max_devices: usize,
}

impl WindowConfig {
    const fn default_size() -> usize {
        128
    }
    const fn default_hop() -> usize {
        64
    }
    const fn default_max_gap_ms() -> f64 {
        1000.0
    }
    const fn default_max_devices() -> usize {
        1024
    }
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            size: Self::default_size(),
            hop: Self::default_hop(),
            max_gap_ms: Self::default_max_gap_ms(),
            max_devices: Self::default_max_devices(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// One hidden code layer.
    Basic,
    /// Several encoder and decoder layers, optionally pretrained layer-wise.
    Deep,
    /// The deep network, trained to undo noise added to its input.
    Denoising,
    /// One overcomplete sigmoid code layer with a sparsity penalty.
    Sparse,
    /// Variational: the encoder outputs a Gaussian q(z|x).
    Vae,
    /// 1-D convolutions over time.
    Conv,
}

impl Variant {
    pub const ALL: [Variant; 6] = [
        Variant::Basic,
        Variant::Deep,
        Variant::Denoising,
        Variant::Sparse,
        Variant::Vae,
        Variant::Conv,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Variant::Basic => "basic",
            Variant::Deep => "deep",
            Variant::Denoising => "denoising",
            Variant::Sparse => "sparse",
            Variant::Vae => "vae",
            Variant::Conv => "conv",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    Tanh,
    Sigmoid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Noise {
    /// x̃ = x + N(0, σ²).
    Gaussian,
    /// x̃ = x with a fraction of values set to 0.
    Mask,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenoisingConfig {
    #[serde(default = "DenoisingConfig::default_noise")]
    pub noise: Noise,
    /// Standard deviation of Gaussian noise, in normalised units.
    #[serde(default = "DenoisingConfig::default_sigma")]
    pub sigma: f64,
    /// Fraction of values zeroed by masking noise.
    #[serde(default = "DenoisingConfig::default_mask_fraction")]
    pub mask_fraction: f64,
}

impl DenoisingConfig {
    const fn default_noise() -> Noise {
        Noise::Gaussian
    }
    const fn default_sigma() -> f64 {
        0.3
    }
    const fn default_mask_fraction() -> f64 {
        0.25
    }
}

impl Default for DenoisingConfig {
    fn default() -> Self {
        Self {
            noise: Self::default_noise(),
            sigma: Self::default_sigma(),
            mask_fraction: Self::default_mask_fraction(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SparsityPenalty {
    /// β·Σ KL(ρ ‖ ρ̂ⱼ) on the mean activation ρ̂ⱼ of each code unit.
    Kl,
    /// λ·mean Σ|hⱼ| on the code activations.
    L1,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseConfig {
    /// Code units; must exceed the input size (T·C). Absent: 1.25 times the input size.
    #[serde(default)]
    pub units: Option<usize>,
    #[serde(default = "SparseConfig::default_penalty")]
    pub penalty: SparsityPenalty,
    /// Target mean activation ρ of the KL penalty.
    #[serde(default = "SparseConfig::default_rho")]
    pub rho: f64,
    /// Weight β of the KL penalty.
    #[serde(default = "SparseConfig::default_beta")]
    pub beta: f64,
    /// Weight λ of the L1 penalty.
    #[serde(default = "SparseConfig::default_l1")]
    pub l1: f64,
}

impl SparseConfig {
    const fn default_penalty() -> SparsityPenalty {
        SparsityPenalty::Kl
    }
    const fn default_rho() -> f64 {
        0.05
    }
    const fn default_beta() -> f64 {
        3.0
    }
    const fn default_l1() -> f64 {
        1e-3
    }
}

impl Default for SparseConfig {
    fn default() -> Self {
        Self {
            units: None,
            penalty: Self::default_penalty(),
            rho: Self::default_rho(),
            beta: Self::default_beta(),
            l1: Self::default_l1(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VaeScore {
    /// Mean squared error of the reconstruction of the mean code μ.
    Reconstruction,
    /// Negative ELBO estimate at μ: ½Σ(x − x̂)² + β·KL(q(z|x) ‖ N(0, I)).
    NegElbo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeConfig {
    /// Weight β of the KL term.
    #[serde(default = "VaeConfig::default_beta")]
    pub beta: f64,
    #[serde(default = "VaeConfig::default_score")]
    pub score: VaeScore,
}

impl VaeConfig {
    const fn default_beta() -> f64 {
        1.0
    }
    const fn default_score() -> VaeScore {
        VaeScore::Reconstruction
    }
}

impl Default for VaeConfig {
    fn default() -> Self {
        Self {
            beta: Self::default_beta(),
            score: Self::default_score(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvConfig {
    /// Filters of each stride-2 convolution; the window size must be
    /// divisible by 2 to the number of stages.
    #[serde(default = "ConvConfig::default_filters")]
    pub filters: Vec<usize>,
    /// Kernel size (odd).
    #[serde(default = "ConvConfig::default_kernel")]
    pub kernel: usize,
}

impl ConvConfig {
    fn default_filters() -> Vec<usize> {
        vec![16, 32]
    }
    const fn default_kernel() -> usize {
        5
    }
}

impl Default for ConvConfig {
    fn default() -> Self {
        Self {
            filters: Self::default_filters(),
            kernel: Self::default_kernel(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default = "ModelConfig::default_path")]
    pub path: PathBuf,
    /// A directory of model versions (online training writes here); when
    /// set, its current version is served and `path` is not used.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// The inference engine: tract (built in) or ort (ONNX Runtime).
    #[serde(default)]
    pub backend: BackendKind,
    /// The ONNX Runtime shared library for `backend = "ort"`; when absent,
    /// the `ORT_DYLIB_PATH` environment variable names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ort_library: Option<PathBuf>,
    #[serde(default = "ModelConfig::default_variant")]
    pub variant: Variant,
    /// Size of the latent code published per window.
    #[serde(default = "ModelConfig::default_latent")]
    pub latent: usize,
    /// Windows scored in one inference call, batched across devices.
    #[serde(default = "ModelConfig::default_max_batch")]
    pub max_batch: usize,
    /// How often the daemon polls the model file (mtime, size) and reloads
    /// it when it changed; 0 turns the watch off.
    #[serde(default = "ModelConfig::default_watch_interval_ms")]
    pub watch_interval_ms: u64,
    /// Hidden layer sizes between the input and the code (deep, denoising, vae).
    #[serde(default = "ModelConfig::default_hidden")]
    pub hidden: Vec<usize>,
    /// Activation of hidden layers (deep, denoising, vae).
    #[serde(default = "ModelConfig::default_activation")]
    pub activation: Activation,
    #[serde(default)]
    pub denoising: DenoisingConfig,
    #[serde(default)]
    pub sparse: SparseConfig,
    #[serde(default)]
    pub vae: VaeConfig,
    #[serde(default)]
    pub conv: ConvConfig,
}

impl ModelConfig {
    /// The backend to load `path` with.
    pub fn backend_options(&self) -> BackendOptions {
        BackendOptions {
            kind: self.backend,
            ort_library: self.ort_library.clone(),
        }
    }

    fn default_path() -> PathBuf {
        PathBuf::from("models/demo.onnx")
    }
    /// The best of the family on the measured tasks (README: Measured).
    const fn default_variant() -> Variant {
        Variant::Denoising
    }
    const fn default_latent() -> usize {
        16
    }
    const fn default_max_batch() -> usize {
        32
    }
    const fn default_watch_interval_ms() -> u64 {
        2000
    }
    fn default_hidden() -> Vec<usize> {
        vec![128, 64]
    }
    const fn default_activation() -> Activation {
        Activation::Relu
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            path: Self::default_path(),
            dir: None,
            backend: BackendKind::default(),
            ort_library: None,
            variant: Self::default_variant(),
            latent: Self::default_latent(),
            max_batch: Self::default_max_batch(),
            watch_interval_ms: Self::default_watch_interval_ms(),
            hidden: Self::default_hidden(),
            activation: Self::default_activation(),
            denoising: DenoisingConfig::default(),
            sparse: SparseConfig::default(),
            vae: VaeConfig::default(),
            conv: ConvConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    #[serde(default = "TrainingConfig::default_epochs")]
    pub epochs: usize,
    #[serde(default = "TrainingConfig::default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "TrainingConfig::default_learning_rate")]
    pub learning_rate: f64,
    #[serde(default = "TrainingConfig::default_weight_decay")]
    pub weight_decay: f64,
    /// Fraction of each device's windows (its last ones) held out for
    /// validation, early stopping and threshold calibration.
    #[serde(default = "TrainingConfig::default_validation_fraction")]
    pub validation_fraction: f64,
    /// Epochs without a better validation loss before training stops.
    #[serde(default = "TrainingConfig::default_patience")]
    pub patience: usize,
    #[serde(default = "TrainingConfig::default_seed")]
    pub seed: u64,
    /// Quantile of held-out normal errors used as the anomaly threshold.
    #[serde(default = "TrainingConfig::default_threshold_quantile")]
    pub threshold_quantile: f64,
    /// Epochs of greedy layer-wise pretraining per layer before the whole
    /// stack is fine-tuned (deep only; 0 turns it off).
    #[serde(default)]
    pub pretrain_epochs: usize,
    /// `off`, or `online`: with no model in `model.dir`, the daemon collects
    /// windows and trains one itself.
    #[serde(default)]
    pub mode: TrainingMode,
    /// Windows to collect before the first online training.
    #[serde(default = "TrainingConfig::default_min_windows")]
    pub min_windows: usize,
    /// Most windows kept for an online training (memory: 4 bytes per value).
    #[serde(default = "TrainingConfig::default_max_windows")]
    pub max_windows: usize,
    /// Model versions kept in `model.dir`.
    #[serde(default = "TrainingConfig::default_keep_versions")]
    pub keep_versions: usize,
    /// With online training, retrain this often (hours since the served
    /// model was trained or last retried); 0 retrains on command only.
    #[serde(default)]
    pub retrain_every_h: f64,
    /// Calibration also lasts at least this long (seconds since its first
    /// window, across restarts); 0: min_windows alone decides.
    #[serde(default)]
    pub min_duration_s: f64,
    /// What one model serves: the whole `fleet`, each `device`, or each
    /// `group` of `training.groups` (devices in no group share the fleet
    /// model).
    #[serde(default)]
    pub scope: ScopeKind,
    /// Device groups for `scope = "group"`, first match wins.
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    /// Most scopes with a model of their own; windows of further devices or
    /// groups are scored by the fleet model (and counted).
    #[serde(default = "TrainingConfig::default_max_scopes")]
    pub max_scopes: usize,
    /// Share of one CPU core an online training may use (0 to 1]; the
    /// training thread sleeps between batches to keep to it.
    #[serde(default = "TrainingConfig::default_cpu_share")]
    pub cpu_share: f64,
    /// Bound on the memory online training may hold in windows, over all
    /// scopes (collected and kept for retraining); the config is refused
    /// when max_scopes × max_windows could exceed it.
    #[serde(default = "TrainingConfig::default_max_memory_mb")]
    pub max_memory_mb: usize,
}

/// What one model serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScopeKind {
    #[default]
    Fleet,
    Device,
    Group,
}

/// A device group: the devices heard on topics matching any of `topics`
/// (MQTT filters; `+`, `#` and `{device}` allowed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub name: String,
    pub topics: Vec<String>,
}

/// Whether the daemon trains its own models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainingMode {
    #[default]
    Off,
    Online,
}

impl TrainingConfig {
    const fn default_epochs() -> usize {
        1000
    }
    const fn default_batch_size() -> usize {
        32
    }
    const fn default_learning_rate() -> f64 {
        1e-3
    }
    const fn default_weight_decay() -> f64 {
        1e-4
    }
    const fn default_validation_fraction() -> f64 {
        0.2
    }
    const fn default_patience() -> usize {
        20
    }
    const fn default_seed() -> u64 {
        42
    }
    const fn default_threshold_quantile() -> f64 {
        0.99
    }
    const fn default_min_windows() -> usize {
        2000
    }
    const fn default_max_windows() -> usize {
        20_000
    }
    const fn default_keep_versions() -> usize {
        5
    }
    const fn default_max_scopes() -> usize {
        16
    }
    const fn default_cpu_share() -> f64 {
        0.5
    }
    const fn default_max_memory_mb() -> usize {
        1024
    }

    /// Most bytes online training may hold in windows of `features` values:
    /// per scope, the calibration collection or the retraining buffer, each
    /// up to max_windows.
    pub fn memory_bound_bytes(&self, features: usize) -> u64 {
        let scopes = match self.scope {
            ScopeKind::Fleet => 1,
            // The fleet scope takes the overflow.
            _ => self.max_scopes as u64 + 1,
        };
        scopes * 2 * self.max_windows as u64 * features as u64 * 4
    }
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            epochs: Self::default_epochs(),
            batch_size: Self::default_batch_size(),
            learning_rate: Self::default_learning_rate(),
            weight_decay: Self::default_weight_decay(),
            validation_fraction: Self::default_validation_fraction(),
            patience: Self::default_patience(),
            seed: Self::default_seed(),
            threshold_quantile: Self::default_threshold_quantile(),
            pretrain_epochs: 0,
            mode: TrainingMode::Off,
            min_windows: Self::default_min_windows(),
            max_windows: Self::default_max_windows(),
            keep_versions: Self::default_keep_versions(),
            retrain_every_h: 0.0,
            min_duration_s: 0.0,
            scope: ScopeKind::Fleet,
            groups: Vec::new(),
            max_scopes: Self::default_max_scopes(),
            cpu_share: Self::default_cpu_share(),
            max_memory_mb: Self::default_max_memory_mb(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// Consecutive windows over the threshold that raise an alert.
    #[serde(default = "DetectorConfig::default_raise_after")]
    pub raise_after: u32,
    /// Consecutive windows under the threshold that clear it.
    #[serde(default = "DetectorConfig::default_clear_after")]
    pub clear_after: u32,
    /// Overrides the threshold calibrated into the model.
    #[serde(default)]
    pub threshold: Option<f64>,
}

impl DetectorConfig {
    const fn default_raise_after() -> u32 {
        3
    }
    const fn default_clear_after() -> u32 {
        3
    }
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            raise_after: Self::default_raise_after(),
            clear_after: Self::default_clear_after(),
            threshold: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// `-` for stdout, a file path, or `off`.
    #[serde(default = "OutputConfig::default_jsonl")]
    pub jsonl: String,
    /// Publish windows, alerts and a status to MQTT when present.
    #[serde(default)]
    pub mqtt: Option<MqttOutputConfig>,
}

impl OutputConfig {
    fn default_jsonl() -> String {
        "-".into()
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            jsonl: Self::default_jsonl(),
            mqtt: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    #[serde(default = "TelemetryConfig::default_enabled")]
    pub enabled: bool,
    #[serde(default = "TelemetryConfig::default_listen")]
    pub listen: SocketAddr,
}

impl TelemetryConfig {
    const fn default_enabled() -> bool {
        true
    }
    fn default_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9898))
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            enabled: Self::default_enabled(),
            listen: Self::default_listen(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Capacity of each queue between stages; a full queue blocks the stage
    /// before it, back to the source.
    #[serde(default = "PipelineConfig::default_queue_capacity")]
    pub queue_capacity: usize,
    /// On SIGTERM, how long the stages may take to drain before the daemon
    /// gives up and exits non-zero.
    #[serde(default = "PipelineConfig::default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

impl PipelineConfig {
    const fn default_queue_capacity() -> usize {
        1024
    }
    const fn default_shutdown_grace_ms() -> u64 {
        10_000
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            queue_capacity: Self::default_queue_capacity(),
            shutdown_grace_ms: Self::default_shutdown_grace_ms(),
        }
    }
}

impl Config {
    /// Reads `path` (TOML) with environment overrides and validates the
    /// result; every problem found is reported at once.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config = Self::load_unvalidated(path)?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }

    pub fn load_unvalidated(path: &Path) -> Result<Config, ConfigError> {
        let load_error = |cause| ConfigError::Load {
            path: path.to_path_buf(),
            cause,
        };
        if !path.is_file() {
            return Err(load_error(config::ConfigError::NotFound(
                path.display().to_string(),
            )));
        }
        config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("ACCELWATCH")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("input.channels"),
            )
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(load_error)
    }

    /// Every semantic problem of the configuration, with its key path,
    /// including files it names that do not exist (the model file itself is
    /// checked by loading it, see `daemon::model_problems`).
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = self.validate_settings();
        let mut check = |ok: bool, key: &str, message: String| {
            if !ok {
                problems.push(Problem {
                    key: key.into(),
                    message,
                });
            }
        };
        match self.input.kind {
            InputKind::Replay => check(
                self.input.replay.path.is_file(),
                "input.replay.path",
                format!("no such file: {}", self.input.replay.path.display()),
            ),
            InputKind::Mqtt => auth_files(&self.input.mqtt.auth, "input.mqtt.auth", &mut check),
            // A port that is not there (yet) is waited for, not an error:
            // USB devices come and go.
            InputKind::Serial => {}
        }
        if let Some(output) = &self.output.mqtt {
            auth_files(&output.auth, "output.mqtt.auth", &mut check);
        }
        let jsonl = self.output.jsonl.as_str();
        if jsonl != "-" && jsonl != "off" {
            let parent = Path::new(jsonl)
                .parent()
                .filter(|p| !p.as_os_str().is_empty());
            check(
                parent.is_none_or(Path::is_dir),
                "output.jsonl",
                format!("the directory of {jsonl} does not exist"),
            );
        }
        problems
    }

    /// The problems of the values themselves, without looking at files.
    pub fn validate_settings(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, key: &str, message: String| {
            if !ok {
                problems.push(Problem {
                    key: key.into(),
                    message,
                });
            }
        };
        let input = &self.input;
        check(
            !input.channels.is_empty(),
            "input.channels",
            "must name at least one channel".into(),
        );
        let mut seen = std::collections::HashSet::new();
        for name in &input.channels {
            check(
                seen.insert(name),
                "input.channels",
                format!("channel {name:?} is listed twice"),
            );
            check(
                !name.trim().is_empty(),
                "input.channels",
                "a channel name is empty".into(),
            );
        }
        check(
            input.sample_rate_hz.is_finite() && input.sample_rate_hz > 0.0,
            "input.sample_rate_hz",
            format!(
                "must be a positive number of hertz, got {}",
                input.sample_rate_hz
            ),
        );
        check(
            input.max_payload_bytes > 0,
            "input.max_payload_bytes",
            "must be at least 1".into(),
        );
        check(
            input.max_samples_per_message > 0,
            "input.max_samples_per_message",
            "must be at least 1".into(),
        );
        check(
            input.replay.speed.is_finite() && input.replay.speed >= 0.0,
            "input.replay.speed",
            format!(
                "must be 0 (as fast as possible) or a positive factor, got {}",
                input.replay.speed
            ),
        );
        let window = &self.window;
        check(
            window.size >= 2,
            "window.size",
            format!("must be at least 2 samples, got {}", window.size),
        );
        check(
            window.hop >= 1 && window.hop <= window.size,
            "window.hop",
            format!(
                "must be between 1 and window.size ({}), got {}",
                window.size, window.hop
            ),
        );
        check(
            window.max_gap_ms.is_finite() && window.max_gap_ms > 0.0,
            "window.max_gap_ms",
            format!(
                "must be a positive number of milliseconds, got {}",
                window.max_gap_ms
            ),
        );
        check(
            window.max_devices >= 1,
            "window.max_devices",
            "must be at least 1".into(),
        );
        check(
            self.model.latent >= 1,
            "model.latent",
            "must be at least 1".into(),
        );
        check(
            self.model.max_batch >= 1,
            "model.max_batch",
            "must be at least 1".into(),
        );
        check(
            self.model.backend.available(),
            "model.backend",
            format!(
                "{:?}: this build has no such backend (build with the cargo feature `ort`)",
                self.model.backend.name()
            ),
        );
        check(
            self.model.hidden.iter().all(|h| *h >= 1),
            "model.hidden",
            format!(
                "every layer needs at least one unit, got {:?}",
                self.model.hidden
            ),
        );
        let features = self.window.size * self.input.channels.len();
        let denoising = &self.model.denoising;
        check(
            denoising.sigma.is_finite() && denoising.sigma >= 0.0,
            "model.denoising.sigma",
            format!("must be 0 or positive, got {}", denoising.sigma),
        );
        check(
            (0.0..1.0).contains(&denoising.mask_fraction),
            "model.denoising.mask_fraction",
            format!("must be in [0, 1), got {}", denoising.mask_fraction),
        );
        let sparse = &self.model.sparse;
        if let (Variant::Sparse, Some(units)) = (self.model.variant, sparse.units) {
            check(
                units > features,
                "model.sparse.units",
                format!(
                    "must exceed the input size {features} (window.size x channels) to be overcomplete, got {units}"
                ),
            );
        }
        check(
            sparse.rho > 0.0 && sparse.rho < 1.0,
            "model.sparse.rho",
            format!("must be strictly between 0 and 1, got {}", sparse.rho),
        );
        check(
            sparse.beta.is_finite() && sparse.beta >= 0.0,
            "model.sparse.beta",
            "must be 0 or positive".into(),
        );
        check(
            sparse.l1.is_finite() && sparse.l1 >= 0.0,
            "model.sparse.l1",
            "must be 0 or positive".into(),
        );
        check(
            self.model.vae.beta.is_finite() && self.model.vae.beta >= 0.0,
            "model.vae.beta",
            "must be 0 or positive".into(),
        );
        let conv = &self.model.conv;
        check(
            !conv.filters.is_empty() && conv.filters.iter().all(|f| *f >= 1),
            "model.conv.filters",
            format!(
                "needs at least one stage of at least one filter, got {:?}",
                conv.filters
            ),
        );
        check(
            conv.kernel % 2 == 1,
            "model.conv.kernel",
            format!(
                "must be odd (so that padding keeps lengths), got {}",
                conv.kernel
            ),
        );
        if self.model.variant == Variant::Conv {
            let divisor = 1usize << conv.filters.len().min(16);
            check(
                self.window.size.is_multiple_of(divisor),
                "window.size",
                format!(
                    "a conv model with {} stride-2 stages needs a multiple of {divisor}, got {}",
                    conv.filters.len(),
                    self.window.size
                ),
            );
        }
        let training = &self.training;
        check(
            training.epochs >= 1,
            "training.epochs",
            "must be at least 1".into(),
        );
        check(
            training.batch_size >= 1,
            "training.batch_size",
            "must be at least 1".into(),
        );
        check(
            training.learning_rate.is_finite() && training.learning_rate > 0.0,
            "training.learning_rate",
            format!("must be positive, got {}", training.learning_rate),
        );
        check(
            training.weight_decay.is_finite() && training.weight_decay >= 0.0,
            "training.weight_decay",
            format!("must be 0 or positive, got {}", training.weight_decay),
        );
        check(
            training.validation_fraction > 0.0 && training.validation_fraction < 1.0,
            "training.validation_fraction",
            format!(
                "must be strictly between 0 and 1, got {}",
                training.validation_fraction
            ),
        );
        check(
            training.threshold_quantile > 0.0 && training.threshold_quantile < 1.0,
            "training.threshold_quantile",
            format!(
                "must be strictly between 0 and 1, got {}",
                training.threshold_quantile
            ),
        );
        if training.mode == TrainingMode::Online {
            check(
                self.model.dir.is_some(),
                "model.dir",
                "training.mode = \"online\" needs a model directory to keep its models in".into(),
            );
        }
        check(
            training.min_windows >= 20 && training.min_windows <= training.max_windows,
            "training.min_windows",
            format!(
                "must be at least 20 and at most training.max_windows ({}), got {}",
                training.max_windows, training.min_windows
            ),
        );
        if training.scope != ScopeKind::Fleet {
            let kind = if training.scope == ScopeKind::Device {
                "device"
            } else {
                "group"
            };
            check(
                self.model.dir.is_some(),
                "model.dir",
                format!(
                    "training.scope = \"{kind}\" keeps a model per scope under a model directory"
                ),
            );
            check(
                training.mode == TrainingMode::Online,
                "training.mode",
                format!(
                    "training.scope = \"{kind}\" needs \"online\": a new {kind} calibrates a model of its own"
                ),
            );
        }
        if training.scope == ScopeKind::Group {
            check(
                !training.groups.is_empty(),
                "training.groups",
                "training.scope = \"group\" needs at least one [[training.groups]]".into(),
            );
            check(
                self.input.kind == InputKind::Mqtt,
                "training.groups",
                "groups are topic patterns: they need input.kind = \"mqtt\"".into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, group) in training.groups.iter().enumerate() {
            let key = format!("training.groups[{i}]");
            check(
                !group.name.is_empty()
                    && group.name.len() <= 64
                    && group
                        .name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                &format!("{key}.name"),
                format!(
                    "{:?}: 1 to 64 of A-Z, a-z, 0-9, - and _ (it names a directory)",
                    group.name
                ),
            );
            check(
                names.insert(group.name.as_str()),
                &format!("{key}.name"),
                format!("{:?} is used twice", group.name),
            );
            check(
                !group.topics.is_empty(),
                &format!("{key}.topics"),
                "needs at least one topic filter".into(),
            );
            for topic in &group.topics {
                if let Err(why) = crate::mqtt::topic::DeviceFilter::parse_with(topic, true) {
                    check(false, &format!("{key}.topics"), why);
                }
            }
        }
        check(
            training.min_duration_s.is_finite() && training.min_duration_s >= 0.0,
            "training.min_duration_s",
            format!(
                "must be 0 (off) or positive, got {}",
                training.min_duration_s
            ),
        );
        check(
            training.max_scopes >= 1,
            "training.max_scopes",
            "must be at least 1".into(),
        );
        check(
            training.cpu_share > 0.0 && training.cpu_share <= 1.0,
            "training.cpu_share",
            format!(
                "must be more than 0 and at most 1 (of one core), got {}",
                training.cpu_share
            ),
        );
        if training.mode == TrainingMode::Online {
            let features = self.window.size * self.input.channels.len();
            let bound = training.memory_bound_bytes(features);
            check(
                bound <= training.max_memory_mb as u64 * 1024 * 1024,
                "training.max_memory_mb",
                format!(
                    "{} MiB, but online training may hold up to {} MiB of windows ({} scope(s) × \
                     2 × training.max_windows {} × {features} values × 4 bytes); lower \
                     training.max_windows or training.max_scopes, or raise this bound",
                    training.max_memory_mb,
                    bound.div_ceil(1024 * 1024),
                    bound / (2 * training.max_windows as u64 * features as u64 * 4),
                    training.max_windows
                ),
            );
        }
        check(
            training.keep_versions >= 1,
            "training.keep_versions",
            "must be at least 1".into(),
        );
        check(
            training.retrain_every_h.is_finite() && training.retrain_every_h >= 0.0,
            "training.retrain_every_h",
            format!(
                "must be 0 (off) or positive, got {}",
                training.retrain_every_h
            ),
        );
        check(
            self.detector.raise_after >= 1,
            "detector.raise_after",
            "must be at least 1".into(),
        );
        check(
            self.detector.clear_after >= 1,
            "detector.clear_after",
            "must be at least 1".into(),
        );
        if let Some(threshold) = self.detector.threshold {
            check(
                threshold.is_finite() && threshold > 0.0,
                "detector.threshold",
                format!("must be a positive number, got {threshold}"),
            );
        }
        check(
            self.pipeline.queue_capacity >= 1,
            "pipeline.queue_capacity",
            "must be at least 1".into(),
        );
        check(
            input.binary_i16_scale.is_finite() && input.binary_i16_scale != 0.0,
            "input.binary_i16_scale",
            format!(
                "must be a finite non-zero factor, got {}",
                input.binary_i16_scale
            ),
        );
        if input.kind == InputKind::Mqtt {
            mqtt_input_problems(input, &mut check);
        }
        if input.kind == InputKind::Serial {
            serial_input_problems(input, &mut check);
        }
        if let Some(output) = &self.output.mqtt {
            mqtt_output_problems(output, input.kind == InputKind::Mqtt, &mut check);
        }
        problems
    }
}

fn auth_files(auth: &MqttAuth, prefix: &str, check: &mut impl FnMut(bool, &str, String)) {
    let files = [
        ("password_file", &auth.password_file),
        ("ca_file", &auth.ca_file),
        ("client_cert_file", &auth.client_cert_file),
        ("client_key_file", &auth.client_key_file),
    ];
    for (key, file) in files {
        if let Some(path) = file {
            check(
                path.is_file(),
                &format!("{prefix}.{key}"),
                format!("no such file: {}", path.display()),
            );
        }
    }
    if let Some(name) = &auth.password_env {
        check(
            std::env::var_os(name).is_some(),
            &format!("{prefix}.password_env"),
            format!("the environment variable {name} is not set"),
        );
    }
}

fn broker_problems(
    url: &str,
    auth: &MqttAuth,
    prefix: &str,
    check: &mut impl FnMut(bool, &str, String),
) {
    if let Err(message) = crate::mqtt::BrokerUrl::parse(url) {
        check(false, &format!("{prefix}.url"), message);
    }
    check(
        !(auth.password_file.is_some() && auth.password_env.is_some()),
        &format!("{prefix}.auth.password_env"),
        "set password_file or password_env, not both".into(),
    );
    check(
        auth.username.is_some() || (auth.password_file.is_none() && auth.password_env.is_none()),
        &format!("{prefix}.auth.username"),
        "a password needs a username".into(),
    );
    check(
        auth.client_cert_file.is_some() == auth.client_key_file.is_some(),
        &format!("{prefix}.auth.client_key_file"),
        "client_cert_file and client_key_file go together".into(),
    );
}

fn qos_problem(qos: u8, key: &str, check: &mut impl FnMut(bool, &str, String)) {
    check(qos <= 1, key, format!("must be 0 or 1, got {qos}"));
}

fn mqtt_input_problems(input: &InputConfig, check: &mut impl FnMut(bool, &str, String)) {
    let mqtt = &input.mqtt;
    broker_problems(&mqtt.url, &mqtt.auth, "input.mqtt", check);
    check(
        !mqtt.client_id.is_empty() || mqtt.clean_session,
        "input.mqtt.client_id",
        "a persistent session (clean_session = false) needs a client id".into(),
    );
    check(
        mqtt.keep_alive_s >= 5,
        "input.mqtt.keep_alive_s",
        format!("must be at least 5 seconds, got {}", mqtt.keep_alive_s),
    );
    qos_problem(mqtt.qos, "input.mqtt.qos", check);
    check(
        !mqtt.topics.is_empty(),
        "input.mqtt.topics",
        "must list at least one topic filter".into(),
    );
    if let Some(group) = &mqtt.share_group {
        if let Err(message) = crate::mqtt::topic::check_share_group(group) {
            check(false, "input.mqtt.share_group", message);
        }
    }
    if let Some(topic) = &mqtt.command_topic {
        if let Err(message) = crate::mqtt::topic::check_topic_name(topic) {
            check(false, "input.mqtt.command_topic", message);
        }
    }
    if let Some(field) = &mqtt.device_field {
        check(
            !field.is_empty(),
            "input.mqtt.device_field",
            "must name a JSON field".into(),
        );
    }
    for entry in &mqtt.topics {
        match crate::mqtt::topic::DeviceFilter::parse_with(
            &mqtt.subscription_filter(entry),
            mqtt.device_field.is_some(),
        ) {
            Err(message) => check(false, "input.mqtt.topics", message),
            Ok(filter) => check(
                filter.names_device() || entry.format(mqtt.format) == PayloadFormat::Json,
                "input.mqtt.topics",
                format!(
                    "{:?} takes its device from the payload field input.mqtt.device_field, \
                     which needs format = \"json\"",
                    entry.filter()
                ),
            ),
        }
    }
    check(
        mqtt.max_packet_bytes > input.max_payload_bytes,
        "input.mqtt.max_packet_bytes",
        format!(
            "must exceed input.max_payload_bytes ({}) so that an over-limit payload is counted \
             instead of costing the connection, got {}",
            input.max_payload_bytes, mqtt.max_packet_bytes
        ),
    );
    check(
        mqtt.max_packet_bytes <= 256 * 1024 * 1024,
        "input.mqtt.max_packet_bytes",
        "MQTT packets are at most 256 MiB".into(),
    );
    check(
        mqtt.reconnect_min_ms >= 1 && mqtt.reconnect_min_ms <= mqtt.reconnect_max_ms,
        "input.mqtt.reconnect_min_ms",
        format!(
            "must be between 1 and reconnect_max_ms ({}), got {}",
            mqtt.reconnect_max_ms, mqtt.reconnect_min_ms
        ),
    );
}

fn serial_input_problems(input: &InputConfig, check: &mut impl FnMut(bool, &str, String)) {
    let serial = &input.serial;
    check(
        !serial.ports.is_empty(),
        "input.serial.ports",
        "must list at least one port ([[input.serial.ports]] with path and device)".into(),
    );
    let mut devices = std::collections::HashSet::new();
    let mut labels = std::collections::HashSet::new();
    for (i, port) in serial.ports.iter().enumerate() {
        let key = |field: &str| format!("input.serial.ports[{i}].{field}");
        check(
            !port.path.as_os_str().is_empty(),
            &key("path"),
            "must not be empty".into(),
        );
        check(
            !port.device.trim().is_empty(),
            &key("device"),
            "must not be empty".into(),
        );
        check(
            devices.insert(port.device.as_str()),
            &key("device"),
            format!(
                "{:?} is already read from another port (one device per port)",
                port.device
            ),
        );
        let label = port.label(i);
        check(!label.is_empty(), &key("name"), "must not be empty".into());
        check(
            labels.insert(label.clone()),
            &key("name"),
            format!("{label:?} names two ports"),
        );
        check(port.baud > 0, &key("baud"), "must be positive".into());
        check(
            (5..=8).contains(&port.data_bits),
            &key("data_bits"),
            format!("must be 5, 6, 7 or 8, got {}", port.data_bits),
        );
        check(
            matches!(port.stop_bits, 1 | 2),
            &key("stop_bits"),
            format!("must be 1 or 2, got {}", port.stop_bits),
        );
    }
    check(
        serial.max_line_bytes >= 1 && serial.max_line_bytes <= input.max_payload_bytes,
        "input.serial.max_line_bytes",
        format!(
            "must be between 1 and input.max_payload_bytes ({}), got {}",
            input.max_payload_bytes, serial.max_line_bytes
        ),
    );
    let sample_bytes = 2 * input.channels.len().max(1);
    let max_frame = (u16::MAX as usize)
        .min(
            input
                .max_payload_bytes
                .saturating_sub(crate::decode::BinaryHeader::LEN),
        )
        .min(input.max_samples_per_message.saturating_mul(sample_bytes));
    check(
        serial.max_frame_bytes >= sample_bytes && serial.max_frame_bytes <= max_frame,
        "input.serial.max_frame_bytes",
        format!(
            "must hold at least one sample ({sample_bytes} bytes) and at most {max_frame} \
             (65535, input.max_payload_bytes less a 24-byte batch header, and \
             input.max_samples_per_message samples), got {}",
            serial.max_frame_bytes
        ),
    );
    check(
        serial.reconnect_min_ms >= 1 && serial.reconnect_min_ms <= serial.reconnect_max_ms,
        "input.serial.reconnect_min_ms",
        format!(
            "must be between 1 and reconnect_max_ms ({}), got {}",
            serial.reconnect_max_ms, serial.reconnect_min_ms
        ),
    );
    check(
        serial.rate_tolerance.is_finite() && serial.rate_tolerance > 0.0,
        "input.serial.rate_tolerance",
        format!("must be a positive fraction, got {}", serial.rate_tolerance),
    );
    check(
        serial.rate_window_s.is_finite() && serial.rate_window_s >= 1.0,
        "input.serial.rate_window_s",
        format!("must be at least 1 second, got {}", serial.rate_window_s),
    );
}

fn mqtt_output_problems(
    output: &MqttOutputConfig,
    input_is_mqtt: bool,
    check: &mut impl FnMut(bool, &str, String),
) {
    match &output.url {
        Some(url) => broker_problems(url, &output.auth, "output.mqtt", check),
        None => {
            check(
                input_is_mqtt,
                "output.mqtt.url",
                "required unless input.kind is mqtt (the output then uses the input's broker)"
                    .into(),
            );
            check(
                output.auth.is_empty(),
                "output.mqtt.auth",
                "only with output.mqtt.url; without it the input's connection is used".into(),
            );
        }
    }
    check(
        !output.client_id.is_empty(),
        "output.mqtt.client_id",
        "must not be empty".into(),
    );
    for (key, template) in [
        ("output.mqtt.features_topic", &output.features_topic),
        ("output.mqtt.alert_topic", &output.alert_topic),
    ] {
        if let Err(message) = crate::mqtt::topic::Template::parse(template) {
            check(false, key, message);
        }
    }
    if let Err(message) = crate::mqtt::topic::check_topic_name(&output.status_topic) {
        check(false, "output.mqtt.status_topic", message);
    }
    qos_problem(output.features_qos, "output.mqtt.features_qos", check);
    qos_problem(output.alert_qos, "output.mqtt.alert_qos", check);
    check(
        output.queue >= 1,
        "output.mqtt.queue",
        "must be at least 1".into(),
    );
}

/// What the config tests share.
#[cfg(test)]
mod test_support {
    use super::*;

    /// The keys `validate_settings` names, in order.
    pub fn keys(config: &Config) -> Vec<String> {
        config
            .validate_settings()
            .into_iter()
            .map(|p| p.key)
            .collect()
    }

    /// A config from TOML text, as `Config::load` reads a file.
    pub fn toml_like(text: &str) -> Result<Config, config::ConfigError> {
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()?
            .try_deserialize()
    }
}

#[cfg(test)]
mod mqtt_tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn mqtt_settings_are_checked_with_their_keys() {
        let mut config = Config::default();
        config.input.kind = InputKind::Mqtt;
        assert!(keys(&config).is_empty(), "{:?}", config.validate_settings());
        config.input.mqtt.url = "tcp://broker".into();
        config.input.mqtt.topics = vec![
            TopicEntry::Filter("sensors/accel".into()),
            TopicEntry::WithFormat(TopicWithFormat {
                filter: "a/{device}".into(),
                format: PayloadFormat::Binary,
            }),
        ];
        config.input.mqtt.qos = 2;
        config.input.mqtt.max_packet_bytes = 1024;
        config.input.mqtt.auth.password_env = Some("X".into());
        config.output.mqtt = Some(MqttOutputConfig {
            features_topic: "out/+/{device}".into(),
            ..MqttOutputConfig::default()
        });
        let keys = keys(&config);
        for key in [
            "input.mqtt.url",
            "input.mqtt.topics",
            "input.mqtt.qos",
            "input.mqtt.max_packet_bytes",
            "input.mqtt.auth.username",
            "output.mqtt.features_topic",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
        }
        assert_eq!(keys.iter().filter(|k| *k == "input.mqtt.topics").count(), 1);

        let mut config = Config::default();
        config.output.mqtt = Some(MqttOutputConfig::default());
        assert_eq!(
            self::keys(&config),
            vec!["output.mqtt.url"],
            "replay input, no output url"
        );
    }
}

#[cfg(test)]
mod scope_tests {
    use super::test_support::*;
    use super::*;

    fn online() -> Config {
        let mut config = Config::default();
        config.model.dir = Some("/tmp/models".into());
        config.training.mode = TrainingMode::Online;
        config
    }

    #[test]
    fn model_scopes_are_checked_with_their_keys() {
        let mut config = online();
        config.training.scope = ScopeKind::Device;
        assert!(keys(&config).is_empty(), "{:?}", config.validate_settings());
        // Six channels at 16 device scopes could hold 2 GiB of windows.
        config.input.channels = ["ax", "ay", "az", "wx", "wy", "wz"]
            .map(String::from)
            .into();
        assert_eq!(keys(&config), ["training.max_memory_mb"]);
        config.training.max_windows = 10_000;
        assert!(keys(&config).is_empty());

        let mut config = Config::default();
        config.training.scope = ScopeKind::Device;
        config.training.cpu_share = 0.0;
        config.training.max_scopes = 0;
        assert_eq!(
            keys(&config),
            [
                "model.dir",
                "training.mode",
                "training.max_scopes",
                "training.cpu_share"
            ]
        );

        let mut config = online();
        config.training.scope = ScopeKind::Group;
        assert_eq!(keys(&config), ["training.groups", "training.groups"]);
        config.input.kind = InputKind::Mqtt;
        config.training.groups = vec![
            GroupConfig {
                name: "line 1".into(),
                topics: vec!["plant/line1/#".into()],
            },
            GroupConfig {
                name: "b".into(),
                topics: vec!["a/#/b".into()],
            },
            GroupConfig {
                name: "b".into(),
                topics: Vec::new(),
            },
        ];
        assert_eq!(
            keys(&config),
            [
                "training.groups[0].name",
                "training.groups[1].topics",
                "training.groups[2].name",
                "training.groups[2].topics"
            ]
        );
    }

    #[test]
    fn groups_parse_from_toml_strictly() {
        let text = r#"
            [training]
            scope = "group"
            [[training.groups]]
            name = "line1"
            topics = ["plant/line1/#"]
        "#;
        let config = toml_like(text).expect("parses");
        assert_eq!(config.training.scope, ScopeKind::Group);
        assert_eq!(config.training.groups[0].topics, ["plant/line1/#"]);
        let bad = text.replace("topics =", "topic =");
        assert!(toml_like(&bad).is_err(), "unknown key refused");
        assert!(toml_like("[training]\nscope = \"site\"").is_err());
    }
}

#[cfg(test)]
mod serial_tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn serial_settings_are_checked_with_their_keys() {
        let mut config = Config::default();
        config.input.kind = InputKind::Serial;
        assert_eq!(keys(&config), vec!["input.serial.ports"]);
        config.input.serial.ports = vec![
            SerialPortConfig::new("/dev/ttyUSB0", "a"),
            SerialPortConfig::new("/dev/ttyUSB1", "b"),
        ];
        assert!(keys(&config).is_empty(), "{:?}", config.validate_settings());
        config.input.serial.ports[1].device = "a".into();
        config.input.serial.ports[1].data_bits = 9;
        config.input.serial.ports[1].stop_bits = 3;
        config.input.serial.ports[0].name = Some("1".into());
        config.input.serial.max_frame_bytes = 70_000;
        config.input.serial.rate_tolerance = 0.0;
        let keys = keys(&config);
        for key in [
            "input.serial.ports[1].device",
            "input.serial.ports[1].data_bits",
            "input.serial.ports[1].stop_bits",
            "input.serial.ports[1].name",
            "input.serial.max_frame_bytes",
            "input.serial.rate_tolerance",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
        }
    }

    #[test]
    fn serial_ports_parse_from_toml_strictly() {
        let text = r#"
            [input]
            kind = "serial"
            [[input.serial.ports]]
            path = "/dev/accel0"
            device = "press-1"
            baud = 230400
            format = "binary"
            parity = "even"
            flow_control = "hardware"
        "#;
        let config: Config = toml_like(text).expect("parses");
        let port = &config.input.serial.ports[0];
        assert_eq!(port.baud, 230_400);
        assert_eq!(port.format, SerialFormat::Binary);
        assert_eq!(port.parity, SerialParity::Even);
        assert_eq!(port.flow_control, SerialFlowControl::Hardware);
        assert_eq!((port.data_bits, port.stop_bits), (8, 1));
        assert_eq!(port.label(0), "0");
        let bad = text.replace("baud = 230400", "bauds = 230400");
        assert!(toml_like(&bad).is_err(), "unknown key refused");
    }
}
